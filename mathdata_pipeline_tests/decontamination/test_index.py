"""Benchmark decontamination: exact and n-gram matching, audit spans, and real-data overlap figures."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pyarrow.parquet as pq

from mathdata_pipeline.decontamination.index import (
    ContaminationIndex,
    build_index,
    exact_hash,
    index_parameters,
)

LONG_QUESTION = (
    "A farmer has a rectangular field that is three times as long as it is wide and the fence "
    "around the whole field is exactly four hundred meters long so what is the area of the field "
    "in square meters"
)  # 40 words: indexed with 13-grams
SHORT_QUESTION = "How many positive divisors does the number six hundred have in total?"  # 12 words
FILLER = "Here is a story about apples oranges and a long walk through the park on a sunny day."


def check(items, rows, **thresholds):
    """Audit rows (list of dicts) of `rows` against an index over `items`."""
    index = ContaminationIndex.from_table(build_index(items), **thresholds)
    return index.find_matches(rows).to_pylist()


def test_exact_match_ignores_whitespace_and_case():
    items = [("bench", "q1", "What is  $2+2$?\n")]
    audit = check(items, [("r1", "  WHAT is $2+2$?"), ("r2", "What is $2+3$?")])
    assert [(a["row_id"], a["match_kind"], a["benchmark_problem_id"]) for a in audit] == [("r1", "exact", "q1")]
    assert exact_hash("a  B") == exact_hash("A b")


def test_planted_ngram_overlap_is_found_with_its_span():
    copied = " ".join(LONG_QUESTION.split()[5:25])  # 20 words copied: 8 of the item's 28 13-grams
    audit = check([("bench", "long", LONG_QUESTION)], [("r1", f"{FILLER} {copied.upper()}. {FILLER}")])
    assert len(audit) == 1
    match = audit[0]
    assert (match["match_kind"], match["n"], match["benchmark_ngrams"]) == ("ngram", 13, 28)
    assert match["matched_ngrams"] == 20 - 13 + 1
    assert match["span"] == copied.lower()


def test_short_questions_use_short_n_and_tiny_ones_only_exact():
    table = build_index(
        [("b", "long", LONG_QUESTION), ("b", "short", SHORT_QUESTION), ("b", "tiny", "Compute 7 times 8.")]
    )
    sizes = {}
    for row in table.to_pylist():
        sizes.setdefault(row["problem_id"], set()).add((row["kind"], row["n"]))
    assert sizes == {
        "long": {("exact", 0), ("ngram", 13)},
        "short": {("exact", 0), ("ngram", 8)},
        "tiny": {("exact", 0)},
    }
    row = "Quick one: how many positive divisors does the number six hundred have? Thanks."
    [match] = check([("b", "short", SHORT_QUESTION)], [("r", row)])
    assert (match["n"], match["matched_ngrams"], match["benchmark_ngrams"]) == (8, 3, 5)
    assert match["span"] == "how many positive divisors does the number six hundred have"


def test_no_match_on_unrelated_text():
    items = [("b", "long", LONG_QUESTION), ("b", "short", SHORT_QUESTION)]
    rows = [("r1", FILLER), ("r2", "Solve for x: 3x + 5 = 20."), ("r3", "")]
    assert check(items, rows, max_item_frequency=None, min_matches=1, min_coverage=0, min_short_coverage=0) == []


def test_generic_phrase_is_filtered_by_thresholds_but_auditable_without():
    items = [("b", "short", "What is the smallest positive integer n such that 3n is a perfect cube?")]
    rows = [("r", "What is the smallest positive integer n such that n squared ends in 44?")]
    assert check(items, rows) == []  # 3 of 8 short 8-grams shared: below min_short_coverage=0.5
    [match] = check(items, rows, min_short_coverage=0)
    assert match["span"] == "what is the smallest positive integer n such that"


def test_boilerplate_ngrams_shared_by_many_items_are_ignored():
    tail = "express your answer as a common fraction in lowest terms please and thank you kindly"
    items = [("b", str(i), f"Problem number {i} asks about the {i}th thing. {tail}") for i in range(5)]
    rows = [("r", f"Something else entirely. {tail}")]
    assert check(items, rows, min_short_coverage=0) == []
    assert len(check(items, rows, max_item_frequency=None, min_short_coverage=0)) == 5


def test_asymptote_code_is_not_ngram_text():
    diagram = '[asy] draw((0,0)--(1,0)--(1,1)--cycle); label("$A$",(0,0),SW); ' * 5 + "[/asy]"
    table = build_index([("b", "d", f"In the triangle shown, find the angle at A. {diagram}")])
    assert set(table.column("n").to_pylist()) == {0, 8}  # 9 words of text, not the diagram's ~100
    assert check([("b", "d", LONG_QUESTION + diagram)], [("r", f"{FILLER} {diagram}")]) == []


def test_hashes_are_deterministic_and_parameters_round_trip(tmp_path: Path):
    items = [("b", "long", LONG_QUESTION), ("b", "short", SHORT_QUESTION)]
    first = build_index(items, n=11, short_n=6, short_threshold=30)
    second = build_index(items, n=11, short_n=6, short_threshold=30)
    assert first.equals(second)
    assert exact_hash("What is 2+2?") == 7762606128244845064  # same value on every machine
    assert index_parameters(build_index(items)) == {"n": 13, "short_n": 8, "short_threshold": 26}

    pq.write_table(first, tmp_path / "index.parquet")
    loaded = pq.read_table(tmp_path / "index.parquet")
    assert index_parameters(loaded) == {"n": 11, "short_n": 6, "short_threshold": 30}
    assert loaded.column("hash").to_pylist() == first.column("hash").to_pylist()
    row = ("r", f"{FILLER} {LONG_QUESTION}")
    [match] = ContaminationIndex.from_table(loaded).find_matches([row]).to_pylist()
    assert (match["n"], match["matched_ngrams"]) == (11, 40 - 11 + 1)


def test_summarize_counts_distinct_rows_per_benchmark():
    items = [("a", "1", LONG_QUESTION), ("b", "1", LONG_QUESTION), ("b", "2", SHORT_QUESTION)]
    index = ContaminationIndex.from_table(build_index(items))
    audit = index.find_matches([("r1", LONG_QUESTION), ("r2", SHORT_QUESTION), ("r3", FILLER)])
    assert ContaminationIndex.summarize(audit, 3) == {
        "total_rows": 3,
        "contaminated_rows": 2,
        "contaminated_share": 2 / 3,
        "exact_rows": 2,
        "by_benchmark": {"a": 1, "b": 2},
    }


def read_questions(path: Path, field: str) -> list[tuple[str, str]]:
    """(id, question) of a JSONL(.gz) file: `unique_id` when present, else the line number."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    return [(r.get("unique_id", str(i)), r[field]) for i, r in enumerate(records)]


def test_seed_train_splits_against_test_splits(data_root: Path):
    """Overlap of GSM8K/MATH train with GSM8K test, MATH test and MATH-500 (figures for RESULTS.md)."""
    benchmarks = {
        "gsm8k_test": read_questions(data_root / "gsm8k/gsm8k_test.jsonl", "question"),
        "math_test": read_questions(data_root / "math/math_test.jsonl.gz", "problem"),
        "math500": read_questions(data_root / "math/math500_test.jsonl", "problem"),
    }
    started = time.perf_counter()
    table = build_index((name, pid, text) for name, rows in benchmarks.items() for pid, text in rows)
    index = ContaminationIndex.from_table(table)
    build_s = time.perf_counter() - started
    print(f"\nindex: {table.num_rows} hashes over {sum(map(len, benchmarks.values()))} items in {build_s:.2f}s")

    summaries = {}
    for name, path, field in [
        ("gsm8k_train", data_root / "gsm8k/gsm8k_train.jsonl.gz", "question"),
        ("math_train", data_root / "math/math_train.jsonl.gz", "problem"),
    ]:
        rows = read_questions(path, field)
        started = time.perf_counter()
        audit = index.find_matches(rows)
        check_s = time.perf_counter() - started
        summaries[name] = summary = ContaminationIndex.summarize(audit, len(rows))
        print(f"{name}: checked in {check_s:.2f}s: {summary}")
        for match in audit.slice(0, 5).to_pylist():
            print(
                f"  {match['row_id']} ~ {match['benchmark']}/{match['benchmark_problem_id']} "
                f"{match['match_kind']} n={match['n']} {match['matched_ngrams']}/{match['benchmark_ngrams']}: "
                f"{match['span'][:120]}"
            )
        assert check_s < 10, f"checking {name} took {check_s:.1f}s"

    gsm8k, math = summaries["gsm8k_train"], summaries["math_train"]
    assert gsm8k["total_rows"] == 7473 and math["total_rows"] == 7500
    assert 1 <= gsm8k["contaminated_rows"] <= 20  # a few templated near-duplicates, no copies
    assert set(gsm8k["by_benchmark"]) == {"gsm8k_test"} and gsm8k["exact_rows"] == 0
    assert 0.01 < math["contaminated_share"] < 0.15  # templated MATH problems overlap; few copies
    assert set(math["by_benchmark"]) == {"math_test", "math500"}
    assert math["by_benchmark"]["math500"] < math["by_benchmark"]["math_test"]
    assert math["exact_rows"] >= 1
