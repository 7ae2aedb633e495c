"""Dropped seed files: names that collide, clash with configured sources or are not valid names are
refused with a reason naming the files, never silently dropped or mixed up."""

from __future__ import annotations

import json

import pytest

from mathdata_pipeline.sources import seed_files
from mathdata_pipeline.sources.readers import InputError, ReadLimits
from mathdata_pipeline.sources.seed_files import scan_seed_files, spec_for_seed_file


def _drop(folder, *names: str):
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text(json.dumps({"question": f"from {name}", "answer": "1"}) + "\n", encoding="utf-8")
    return folder


def test_names_that_sanitise_to_one_key_are_all_refused_naming_each_other(tmp_path):
    folder = _drop(tmp_path / "seeds", "My-File.jsonl", "my_file.jsonl", "other.jsonl")
    drop = scan_seed_files(folder)
    assert drop.files == {"other": folder / "other.jsonl"}
    refused = {r.path.name: r for r in drop.refused}
    assert set(refused) == {"My-File.jsonl", "my_file.jsonl"}
    assert all(r.name == "my_file" for r in refused.values())
    assert "My-File.jsonl" in refused["my_file.jsonl"].reason and "my_file.jsonl" in refused["My-File.jsonl"].reason


def test_non_ascii_and_over_long_file_names_are_refused_not_merged(tmp_path):
    folder = _drop(tmp_path / "seeds", "ü.jsonl", "ö.jsonl", "x" * 70 + ".jsonl", "ok.jsonl")
    drop = scan_seed_files(folder)
    assert list(drop.files) == ["ok"]
    reasons = {r.path.name: r.reason for r in drop.refused}
    assert set(reasons) == {"ü.jsonl", "ö.jsonl", "x" * 70 + ".jsonl"}
    assert "may hold only" in reasons["ü.jsonl"] and "70 characters" in reasons["x" * 70 + ".jsonl"]


def test_a_file_named_like_a_configured_source_is_refused(tmp_path):
    folder = _drop(tmp_path / "seeds", "gsm8k.jsonl", "fresh.jsonl")
    drop = scan_seed_files(folder, configured={"gsm8k", "math"})
    assert list(drop.files) == ["fresh"]
    (clash,) = drop.refused
    assert clash.name == "gsm8k" and "configured in sources.yaml" in clash.reason and str(clash.path) in clash.reason


def test_detection_reads_only_the_first_record(tmp_path, monkeypatch):
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"problem": "p", "solution": "\\boxed{2}"}) + "\n" + "{broken\n" * 1000)
    spec = spec_for_seed_file(path, ReadLimits(max_file_bytes=100))
    assert (spec.question, spec.answer.style) == ("problem", "boxed")
    monkeypatch.setattr(seed_files, "first_record", lambda *a, **k: (_ for _ in ()).throw(AssertionError("read")))
    sidecar = tmp_path / "big.jsonl.yaml"
    sidecar.write_text("question: problem\n")
    assert spec_for_seed_file(path).question == "problem"  # a sidecar mapping needs no read at all


def test_detection_failure_names_the_file(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "no question field here"}\n')
    with pytest.raises(InputError, match=r"broken\.jsonl: line 1: no question field"):
        spec_for_seed_file(path)
