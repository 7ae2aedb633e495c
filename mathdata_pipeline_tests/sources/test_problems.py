"""Seed and benchmark records mapped onto the problem schema, on the real offline data."""

from __future__ import annotations

import json

import pytest

from mathdata_pipeline.sources.config import ProblemSourceSpec, load_sources_config, open_source
from mathdata_pipeline.sources.problems import PROBLEM_SCHEMA, answer_text, build_problems
from mathdata_pipeline.sources.readers import InputError, Record, read_records

CONFIG = load_sources_config()


def _build(kind: str, name: str, data_root, **kwargs):
    spec = getattr(CONFIG, kind)[name]
    label, records = open_source(spec, base=data_root)
    return build_problems(records, spec, source=name, label=label, **kwargs)


def test_gsm8k_train_whole_file(data_root):
    table, stats = _build("seed_sources", "gsm8k", data_root)
    assert table.schema == PROBLEM_SCHEMA
    assert stats.rows_read == table.num_rows == 7473 and stats.missing_answer == 0
    first = table.slice(0, 1).to_pylist()[0]
    assert first["reference_answer"] == "72" and first["origin"] == "seed" and first["split"] == "train"
    assert first["source_record"] == "gsm8k/gsm8k_train.jsonl.gz line 1"
    assert len(set(table.column("problem_id").to_pylist())) == table.num_rows


def test_math_train_levels_subjects_and_boxed_answers(data_root):
    table, stats = _build("seed_sources", "math", data_root)
    assert stats.rows_read == 7500 and stats.dropped_duplicate_question == 1
    assert table.num_rows == 7499 and stats.missing_answer == 2  # two upstream solutions end in an empty \\boxed{}
    levels = table.column("level").to_pylist()
    assert set(levels) == {1, 2, 3, 4, 5, None} and levels.count(None) == 2  # two upstream "Level ?" rows
    row = next(r for r in table.to_pylist() if r["source_id"] == "train/algebra/0.json")
    assert row["reference_answer"] == "0" and row["subject"] == "Algebra"


@pytest.mark.parametrize(
    "name, rows",
    [
        ("gsm8k_test", 1319),
        ("math_test", 5000),
        ("math500", 500),
        ("deepmind_mathematics", 1000),
        ("olympiadbench", 675),
        ("theoremqa", 800),
    ],
)
def test_benchmarks_read_every_row_and_account_for_drops(data_root, name, rows):
    table, stats = _build("benchmarks", name, data_root)
    assert stats.rows_read == rows and stats.missing_answer == 0
    assert table.num_rows + stats.dropped_duplicate_question == rows and stats.dropped_duplicate_question <= 1


def test_collegemath_duplicates_are_counted_not_silent(data_root):
    table, stats = _build("benchmarks", "collegemath", data_root)
    assert stats.rows_read == 2818
    assert table.num_rows + stats.dropped_duplicate_question == 2818 and stats.dropped_duplicate_question > 0
    assert set(table.column("license").to_pylist()) > {"Creative Commons Attribution 3.0 Unported License (CC BY 3.0)"}


def test_answers_of_every_type_become_text(data_root):
    theorem, _ = _build("benchmarks", "theoremqa", data_root)
    answers = theorem.column("reference_answer").to_pylist()
    assert "11760" in answers and "True" in answers and "[0, 5]" not in answers and "0, 5" in answers
    olympiad, _ = _build("benchmarks", "olympiadbench", data_root)
    assert olympiad.column("reference_answer").to_pylist()[0] == "2"
    assert answer_text(1.5) == "1.5" and answer_text([1, "x"]) == "1, x" and answer_text(None) is None


SPEC = ProblemSourceSpec(question="q", answer={"style": "gsm8k", "field": "a"}, id="id", level="level")


def _records(*rows):
    return [Record(f"line {i}", r) for i, r in enumerate(rows, start=1)]


@pytest.mark.parametrize(
    "row, field, message",
    [
        ({"a": "x\n#### 1", "id": 1}, "q", "missing required field"),
        ({"q": 5, "a": "#### 1", "id": 1}, "q", "expected str, got int"),
        ({"q": "?", "a": ["#### 1"], "id": 1}, "a", "expected str, got list"),
        ({"q": "?", "a": "#### 1", "id": 1, "level": 2.5}, "level", "expected str or int, got float"),
        ({"q": "?", "a": "#### 1"}, "id", "missing required field"),
    ],
)
def test_bad_fields_name_line_and_field(row, field, message):
    good = {"q": "fine", "a": "#### 1", "id": 0}
    with pytest.raises(InputError) as err:
        build_problems(_records(good, row), SPEC, source="t", label="t.jsonl")
    text = str(err.value)
    assert text.startswith("t.jsonl: line 2: ") and f"field '{field}'" in text and message in text


def test_duplicate_ids_fail_and_name_both_lines():
    with pytest.raises(InputError, match=r"line 3: field 'id': duplicate id '7' \(first at line 1\)"):
        build_problems(
            _records(
                {"q": "a", "a": "#### 1", "id": 7},
                {"q": "b", "a": "#### 1", "id": 8},
                {"q": "c", "a": "#### 2", "id": 7},
            ),
            SPEC,
            source="t",
            label="t.jsonl",
        )


def test_missing_answers_kept_or_dropped_and_always_counted():
    rows = _records({"q": "a", "a": "no marker", "id": 1}, {"q": "b", "a": "#### 2", "id": 2})
    kept, stats = build_problems(rows, SPEC, source="t", label="t")
    assert kept.num_rows == 2 and stats.missing_answer == 1 and stats.dropped_missing_answer == 0
    dropped, stats = build_problems(rows, SPEC, source="t", label="t", keep_missing_answers=False)
    assert dropped.num_rows == 1 and stats.missing_answer == 1 and stats.dropped_missing_answer == 1


def test_problem_ids_are_stable_across_runs_and_whitespace(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"q": "What is  1+1?", "a": "#### 2", "id": 1}) + "\n")
    first, _ = build_problems(read_records(path), SPEC, source="t", label="s")
    again, _ = build_problems(_records({"q": "what is 1+1?", "a": "#### 2", "id": 1}), SPEC, source="t", label="s")
    assert first.column("problem_id").to_pylist() == again.column("problem_id").to_pylist()
