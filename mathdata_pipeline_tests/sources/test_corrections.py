"""Reference-answer corrections: the shipped GSM8K file applies to the real train set, and a
correction that no longer fits the data is counted, never applied to another label."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mathdata_pipeline.sources.config import load_sources_config, open_source
from mathdata_pipeline.sources.corrections import Correction, apply_corrections, corrections_path, load_corrections
from mathdata_pipeline.sources.problems import PROBLEM_SCHEMA, build_problems


def test_gsm8k_label_errors_are_corrected_and_counted(data_root):
    spec = load_sources_config().seed_sources["gsm8k"]
    label, records = open_source(spec, base=data_root)
    table, stats = build_problems(records, spec, source="gsm8k", label=label)
    corrections = load_corrections(corrections_path("gsm8k"), "gsm8k")
    assert len(corrections) == 4
    assert (stats.corrections_applied, stats.corrections_stale, stats.corrections_not_found) == (4, 0, 0)
    assert stats.corrections_solution_rewritten == 4
    rows = {r["problem_id"]: r for r in table.to_pylist()}
    for correction in corrections:
        row = rows[correction.problem_id]
        assert row["reference_answer"] == correction.answer != correction.was
        assert row["reference_solution"].endswith(f"#### {correction.answer}")
        assert row["source_record"].endswith(f"reference answer corrected (was {correction.was})")
    tanks = rows["c385dc69f99542aa"]
    assert (
        tanks["question"].startswith("In a yard, the number of tanks")
        and "100+20=120>>120" in tanks["reference_solution"]
    )
    assert table.num_rows == 7473 and rows["cac1f7a19b7edf64"]["reference_solution"].count("7*20=<<7*20=140>>140") == 1


def _rows(*answers: str) -> pa.Table:
    base = dict.fromkeys(PROBLEM_SCHEMA.names)
    rows = [
        {
            **base,
            "problem_id": f"p{i}",
            "source": "s",
            "question": f"q{i}",
            "origin": "seed",
            "reference_answer": a,
            "reference_solution": f"steps\n#### {a}",
            "source_record": f"file line {i}",
        }
        for i, a in enumerate(answers)
    ]
    return pa.Table.from_pylist(rows, schema=PROBLEM_SCHEMA)


def test_stale_and_missing_corrections_are_counted_and_left_alone():
    table = _rows("5", "7")
    corrections = [
        Correction("p0", "5", "6", None, "typo"),
        Correction("p1", "8", "9", None, "the data now says 7, not 8"),
        Correction("gone", "1", "2", None, "row not in this file"),
    ]
    fixed, counts = apply_corrections(table, corrections)
    assert counts == {
        "corrections_applied": 1,
        "corrections_not_found": 1,
        "corrections_stale": 1,
        "corrections_solution_rewritten": 1,
    }
    assert fixed.column("reference_answer").to_pylist() == ["6", "7"]
    assert fixed.column("reference_solution").to_pylist() == ["steps\n#### 6", "steps\n#### 7"]
    assert fixed.column("source_record").to_pylist()[0] == "file line 0; reference answer corrected (was 5)"


def test_a_bad_corrections_file_names_the_entry_and_field(tmp_path):
    path = tmp_path / "gsm8k.yaml"
    assert load_corrections(path, "gsm8k") == []  # no file: no corrections
    path.write_text(
        "source: gsm8k\ncorrections:\n  - {problem_id: a, was: '1', answer: '2', why: x}\n  - {problem_id: b, was: '1', why: x}\n"
    )
    with pytest.raises(ValueError, match=r"gsm8k.yaml: corrections\[1\], field 'answer'"):
        load_corrections(path, "gsm8k")
    path.write_text("source: math\ncorrections: []\n")
    with pytest.raises(ValueError, match="field 'source' is 'math', expected 'gsm8k'"):
        load_corrections(path, "gsm8k")
    path.write_text(
        "source: gsm8k\ncorrections:\n  - {problem_id: a, was: '1', answer: '2', why: x}\n  - {problem_id: a, was: '1', answer: '3', why: y}\n"
    )
    with pytest.raises(ValueError, match="listed twice"):
        load_corrections(path, "gsm8k")
