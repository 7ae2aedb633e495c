"""The `solutions` table, directly (curation/solutions.py): seed references, curated DARS samples,
kept MuggleMath and ScaleQuest responses, their provenance, and the rows that must not appear."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mathdata_pipeline.common.samples import SAMPLE_SCHEMA
from mathdata_pipeline.curation.solutions import SOLUTION_SCHEMA, kept_dart_samples, solution_rows
from mathdata_pipeline.sources.config import load_sources_config
from mathdata_pipeline.sources.problems import PROBLEM_SCHEMA, build_problems
from mathdata_pipeline.sources.readers import read_records


@pytest.fixture(scope="module")
def pool(data_root) -> pa.Table:
    """Three real GSM8K seeds (the first without its reference solution), an augmented question
    and a synthesized one, as question_pool rows."""
    spec = load_sources_config().seed_sources["gsm8k"]
    records = [r for _, r in zip(range(3), read_records(data_root / "gsm8k" / "gsm8k_train.jsonl.gz"))]
    seeds = build_problems(records, spec, source="gsm8k", label="gsm8k_train.jsonl.gz")[0].to_pylist()
    seeds[0]["reference_solution"] = None
    derived = [
        {**seeds[1], "problem_id": "aug-1", "origin": "augmented", "question": "Rewritten: " + seeds[1]["question"]},
        {**seeds[2], "problem_id": "sq-1", "origin": "synthesized", "reference_solution": None, "question": "New?"},
    ]
    return pa.Table.from_pylist(seeds + derived, schema=PROBLEM_SCHEMA)


def _samples(rows: list[dict], **extra) -> pa.Table:
    """SAMPLE_SCHEMA rows with provenance filled in, plus `extra` columns (target, kept)."""
    base = {"model": "smollm2", "template": "chat", "temperature": 0.7, "top_p": 0.95, "max_tokens": 160, "round": 0}
    full = [
        {
            **base,
            "seed": 100 + i,
            "sample_id": f"s-{r['problem_id']}-{r['sample_index']}",
            "text": f"answer {i}",
            "grader": "math",
            **r,
        }
        for i, r in enumerate(rows)
    ]
    table = pa.Table.from_pylist(full, schema=SAMPLE_SCHEMA)
    for name, values in extra.items():
        table = table.append_column(name, pa.array(values))
    return table


def test_every_kind_of_solution_with_its_provenance(pool, tmp_path):
    seeds = pool.filter(pa.compute.field("origin") == "seed").column("problem_id").to_pylist()
    dart = _samples(
        [
            {"problem_id": seeds[1], "sample_index": 2, "correct": True, "extracted_answer": "72"},
            {"problem_id": seeds[1], "sample_index": 0, "correct": True, "extracted_answer": "72"},
            {"problem_id": seeds[1], "sample_index": 1, "correct": False, "extracted_answer": "71"},
            {"problem_id": seeds[2], "sample_index": 0, "correct": True, "extracted_answer": "5"},
            {"problem_id": seeds[2], "sample_index": 1, "correct": True, "extracted_answer": "5"},
            {"problem_id": "left-the-pool", "sample_index": 0, "correct": True, "extracted_answer": "1"},
        ],
        target=[1, 1, 1, 0, 0, 1],
    )
    augmented = _samples(
        [
            {"problem_id": "aug-1", "sample_index": 0, "correct": True, "extracted_answer": "72"},
            {"problem_id": "aug-1", "sample_index": 1, "correct": True, "extracted_answer": "72"},
        ],
        kept=[False, True],
    )
    synthesized = _samples([{"problem_id": "sq-1", "sample_index": 3, "correct": True}], kept=[True])
    pq.write_table(dart, tmp_path / "rejection_samples.parquet")  # solutions reads the kept rows off the file
    table, counts = solution_rows(
        pool, kept_dart_samples(tmp_path / "rejection_samples.parquet"), augmented, synthesized
    )
    assert table.schema == SOLUTION_SCHEMA
    assert counts == {"seed_solutions": 2, "dart_solutions": 3, "mugglemath_solutions": 1, "scalequest_solutions": 1}
    rows = {r["sample_id"]: r for r in table.to_pylist()}
    # seed references: one per seed with a reference solution, the reference as response and answer
    references = [r for r in rows.values() if r["method"] == "reference"]
    assert sorted(r["problem_id"] for r in references) == sorted(seeds[1:])
    ref = rows[f"ref-{seeds[1]}"]
    seed_row = pool.filter(pa.compute.field("problem_id") == seeds[1]).to_pylist()[0]
    assert ref["response"] == seed_row["reference_solution"] and ref["extracted_answer"] == seed_row["reference_answer"]
    assert (ref["origin"], ref["model"], ref["source"]) == ("seed", "reference", "gsm8k") and ref["seed"] is None
    # DARS: correct only, the first `target` by sample index (0 = every correct one), none whose question left
    dart_ids = sorted(r["sample_id"] for r in rows.values() if r["method"] == "dart")
    assert dart_ids == sorted([f"s-{seeds[1]}-0", f"s-{seeds[2]}-0", f"s-{seeds[2]}-1"])
    sample = rows[f"s-{seeds[1]}-0"]
    assert sample["question"] == seed_row["question"] and sample["reference_answer"] == seed_row["reference_answer"]
    assert (sample["model"], sample["template"], sample["grader"], sample["seed"]) == ("smollm2", "chat", "math", 101)
    assert sample["temperature"] == pytest.approx(0.7) and sample["top_p"] == pytest.approx(0.95)
    # MuggleMath and ScaleQuest: only kept responses, with the origin of their question
    (mugglemath,) = [r for r in rows.values() if r["method"] == "mugglemath"]
    assert (mugglemath["sample_id"], mugglemath["origin"]) == ("s-aug-1-1", "augmented")
    assert mugglemath["question"].startswith("Rewritten: ")
    (scalequest,) = [r for r in rows.values() if r["method"] == "scalequest"]
    assert (scalequest["origin"], scalequest["question"]) == ("synthesized", "New?")


def test_only_seed_references_without_samples(pool):
    table, counts = solution_rows(pool, None, None)
    assert table.num_rows == counts["seed_solutions"] == 2
    assert set(table.column("method").to_pylist()) == {"reference"}


def test_dart_rows_per_served_strategy_one_row_per_sample(pool, tmp_path):
    """A run serving uniform (primary) and prop2diff: each strategy keeps its own first correct
    samples; a sample both keep is one row listing both; the primary's are marked."""
    seeds = pool.filter(pa.compute.field("origin") == "seed").column("problem_id").to_pylist()
    one, two = seeds[1], seeds[2]
    correct = {one: [True, False, True, True, True], two: [True, True]}
    rows = [
        {"problem_id": pid, "sample_index": i, "correct": ok, "extracted_answer": "1"}
        for pid, oks in correct.items()
        for i, ok in enumerate(oks)
    ]
    uniform = [3] * 5 + [1] * 2
    dart = _samples(rows, target=uniform, target_uniform=uniform, target_prop2diff=[1] * 5 + [2] * 2)
    pq.write_table(dart, tmp_path / "rejection_samples.parquet")
    table, counts = solution_rows(pool, kept_dart_samples(tmp_path / "rejection_samples.parquet"), None, None)
    dart_rows = {r["sample_id"]: r for r in table.to_pylist() if r["method"] == "dart"}
    assert {sid: (r["dart_strategies"], r["dart_primary"]) for sid, r in dart_rows.items()} == {
        f"s-{one}-0": (["uniform", "prop2diff"], True),
        f"s-{one}-2": (["uniform"], True),
        f"s-{one}-3": (["uniform"], True),
        f"s-{two}-0": (["uniform", "prop2diff"], True),
        f"s-{two}-1": (["prop2diff"], False),
    }
    assert counts["dart_solutions"] == 5 and counts["dart_solutions/uniform"] == 4
    assert counts["dart_solutions/prop2diff"] == 3
    references = [r for r in table.to_pylist() if r["method"] == "reference"]
    assert references and all(r["dart_strategies"] is None and r["dart_primary"] is None for r in references)


def test_a_samples_file_without_strategy_columns_keeps_the_primary_rows(tmp_path):
    dart = _samples(
        [{"problem_id": "p", "sample_index": i, "correct": True, "extracted_answer": "1"} for i in range(3)],
        target=[2, 2, 2],
    )
    pq.write_table(dart, tmp_path / "old.parquet")
    kept = kept_dart_samples(tmp_path / "old.parquet")
    assert kept.column("sample_id").to_pylist() == ["s-p-0", "s-p-1"]
    assert kept.column("dart_strategies").null_count == 2 and kept.column("dart_primary").to_pylist() == [True, True]
