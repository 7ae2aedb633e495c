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
        ('{"response": "x", "reference": ', ":2: malformed JSON"),
        ('["response", "reference"]', ":2: expected a JSON object, got list"),
        ('{"response": "x"}', ":2: missing field 'reference'"),
        ('{"reference": "1"}', ":2: missing field 'response'"),
        ('{"response": 3, "reference": "1"}', ":2: field 'response' must be a string"),
        ('{"response": "x", "reference": ["1"]}', ":2: field 'reference' must be a string or a number"),
        ('{"response": "x", "reference": "1", "finish_reason": 1}', ":2: field 'finish_reason'"),
        ('{"response": "x", "reference": ' + "7" * 5000 + "}", ":2: field 'reference': integer of 5000 digits"),
        (
            '{"response": ' + "[" * 50_000 + "]" * 50_000 + ', "reference": "1"}',
            ":2: field 'response': nested too deeply",
        ),
    ],
)
def test_a_bad_line_gets_an_error_line_and_every_good_line_its_verdict(tmp_path, capsys, bad_line, message):
    source = _write(tmp_path / "bad.jsonl", [json.dumps(ROWS[1]), bad_line, json.dumps(ROWS[1])])
    assert main(["grade", str(source)]) == 2
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert lines[0] == lines[2] == EXPECTED[1]
    assert lines[1]["correct"] is False and lines[1]["extracted"] is None and lines[1]["reason"] == "invalid_input"
    assert lines[1]["error"].startswith(f"{source}{message}")
    assert f"{source}{message}" in captured.err


def test_invalid_utf8_names_the_line(tmp_path, capsys):
    source = tmp_path / "latin1.jsonl"
    source.write_bytes(json.dumps(ROWS[1]).encode() + b"\n" + b'{"response": "caf\xe9", "reference": "1"}\n')
    assert main(["grade", str(source)]) == 2
    captured = capsys.readouterr()
    assert f"{source}:2: not valid UTF-8" in captured.err
    assert [json.loads(line)["reason"] for line in captured.out.splitlines()] == ["exact", "invalid_input"]


def test_a_line_past_the_size_limit_is_an_error_line(tmp_path, capsys):
    source = _write(
        tmp_path / "big.jsonl", [json.dumps({"response": "x" * 5000, "reference": "1"}), json.dumps(ROWS[1])]
    )
    assert main(["grade", str(source), "--max-line-bytes", "1024"]) == 2
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out[0]["error"] == f"{source}:1: line is larger than 1024 bytes (--max-line-bytes)" and out[1] == EXPECTED[1]


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
    assert len(completed.stdout.splitlines()) == 2


def test_grade_output_into_a_closed_pipe_ends_quietly(tmp_path):
    source = _write(
        tmp_path / "many.jsonl", [json.dumps(ROWS[1] | {"response": ROWS[1]["response"] + " " * 2000})] * 400
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "mathdata_pipeline.cli", "grade", str(source), "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert json.loads(process.stdout.readline()) == EXPECTED[1]
    process.stdout.close()  # like `| head -1`
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) != 0 and "Traceback" not in stderr and "BrokenPipeError" not in stderr


def test_missing_file_and_bad_options(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "absent.jsonl")]) == 2
    assert "absent.jsonl: cannot open" in capsys.readouterr().err
    assert main(["grade", str(tmp_path)]) == 2
    assert f"{tmp_path}: cannot open: Is a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["grade", str(tmp_path / "absent.jsonl"), "--timeout", "0"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
