"""`mathdata grade`: JSON lines in, one verdict line per input line out, clear input errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mathdata_pipeline.cli import main

ROWS = [
    {"response": "so \\boxed{\\frac{\\sqrt2}{2}}", "reference": "\\frac{1}{\\sqrt{2}}"},
    {"response": "Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72", "reference": 72},
    {"response": "The answer is 5.", "reference": "6", "finish_reason": "stop"},
    {"response": "\\boxed{5}", "reference": "5", "finish_reason": "length"},
    {"response": "I think it is 42", "reference": "42", "finish_reason": None},
]
EXPECTED = [
    {"correct": True, "extracted": "\\frac{\\sqrt2}{2}", "reason": "symbolic"},
    {"correct": True, "extracted": "72", "reason": "exact"},
    {"correct": False, "extracted": "5", "reason": "mismatch"},
    {"correct": False, "extracted": "5", "reason": "truncated"},
    {"correct": True, "extracted": "42", "reason": "exact"},
]


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_grade_subprocess_to_stdout(tmp_path):
    source = _write(tmp_path / "in.jsonl", [json.dumps(row) for row in ROWS])
    completed = subprocess.run(
        [sys.executable, "-m", "mathdata_pipeline.cli", "grade", str(source), "--timeout", "3", "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert [json.loads(line) for line in completed.stdout.splitlines()] == EXPECTED


def test_grade_to_file_and_no_fallback(tmp_path):
    source = _write(tmp_path / "in.jsonl", [json.dumps(ROWS[4]), "", json.dumps(ROWS[1])])
    out = tmp_path / "out.jsonl"
    assert main(["grade", str(source), "-o", str(out), "--no-fallback"]) == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert lines == [{"correct": False, "extracted": None, "reason": "no_answer"}, EXPECTED[1]]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"response": "x", "reference": ', ":2: invalid JSON"),
        ('["response", "reference"]', ":2: expected a JSON object, got list"),
        ('{"response": "x"}', ":2: missing field 'reference'"),
        ('{"reference": "1"}', ":2: missing field 'response'"),
        ('{"response": 3, "reference": "1"}', ":2: field 'response' must be a string"),
        ('{"response": "x", "reference": ["1"]}', ":2: field 'reference' must be a string or a number"),
        ('{"response": "x", "reference": "1", "finish_reason": 1}', ":2: field 'finish_reason'"),
    ],
)
def test_malformed_line_names_file_line_and_field(tmp_path, capsys, bad_line, message):
    source = _write(tmp_path / "bad.jsonl", [json.dumps(ROWS[1]), bad_line, json.dumps(ROWS[1])])
    assert main(["grade", str(source)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing is graded when the input is invalid
    assert f"{source}{message}" in captured.err


def test_invalid_utf8_names_the_line(tmp_path, capsys):
    source = tmp_path / "latin1.jsonl"
    source.write_bytes(json.dumps(ROWS[1]).encode() + b"\n" + b'{"response": "caf\xe9", "reference": "1"}\n')
    assert main(["grade", str(source)]) == 2
    assert f"{source}:2: not valid UTF-8" in capsys.readouterr().err


def test_malformed_line_exit_code_from_subprocess(tmp_path):
    source = _write(tmp_path / "bad.jsonl", [json.dumps(ROWS[1]), '{"response": "x"}'])
    completed = subprocess.run(
        [sys.executable, "-m", "mathdata_pipeline.cli", "grade", str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert f"{source}:2: missing field 'reference'" in completed.stderr


def test_missing_file_and_bad_options(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "absent.jsonl")]) == 2
    assert "absent.jsonl: cannot open" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["grade", str(tmp_path / "absent.jsonl"), "--timeout", "0"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
