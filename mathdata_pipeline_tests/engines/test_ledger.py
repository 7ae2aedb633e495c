"""The request ledger never fails in silence: a read-only file is refused before anything is
generated, a file deleted, replaced, truncated or made read-only mid-run stops the run, every
error names the file, two processes writing one ledger lose nothing, and no name reaches outside
the ledger folder."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from pathlib import Path

import pytest

from mathdata_pipeline.engines.base import Completion, EngineInfo, SamplingParams
from mathdata_pipeline.engines.ledger import LedgerError, RequestLedger, Verdict, verdict_key
from mathdata_pipeline.engines.resources import LLMResource

INFO = EngineInfo(backend="local", model_id="m")
DONE = Completion("4", "stop", 5, 1)


def _record(ledger: RequestLedger, key: str) -> None:
    ledger.record(key, INFO, SamplingParams(seed=1), DONE)


def test_a_read_only_ledger_is_refused_before_anything_runs(tmp_path):
    path = tmp_path / "solver" / "gsm8k.sqlite"
    with RequestLedger(path) as ledger:
        _record(ledger, "a")
    path.chmod(0o444)
    with pytest.raises(LedgerError, match=rf"{path} is read-only"):
        RequestLedger(path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.unlink(), "was deleted during the run"),
        (lambda p: p.chmod(0o444), "became read-only during the run"),
        (lambda p: os.truncate(p, 0), "was truncated to 0 bytes"),
        (lambda p: (p.unlink(), p.write_bytes(b"")), "was replaced by another file"),
    ],
)
def test_a_ledger_damaged_mid_run_stops_the_next_write(tmp_path, damage, message):
    path = tmp_path / "l.sqlite"
    ledger = RequestLedger(path)
    _record(ledger, "a")
    damage(path)
    with pytest.raises(LedgerError, match=rf"ledger {path} {message}"):
        _record(ledger, "b")
    with pytest.raises(LedgerError, match=str(path)):
        ledger.record_verdict("v", "g", Verdict(True, "4", "exact"))
    ledger.close()


def test_sqlite_errors_name_the_file(tmp_path):
    path = tmp_path / "corrupt.sqlite"
    path.write_bytes(b"this is not a database, " * 200)
    with pytest.raises(LedgerError, match=rf"ledger {path}: cannot open it"):
        RequestLedger(path)


def test_verdicts_are_keyed_by_grader_version(tmp_path):
    with RequestLedger(tmp_path / "l.sqlite") as ledger:
        key = verdict_key("so \\boxed{4}", "4", "stop", "grader/1")
        ledger.record_verdict(key, "grader/1", Verdict(True, "4", "exact"))
        assert ledger.get_verdict(key) == Verdict(True, "4", "exact")
        assert ledger.get_verdict(verdict_key("so \\boxed{4}", "4", "stop", "grader/2")) is None


def _writer(path: str, worker: int, rows: int) -> None:
    with RequestLedger(path) as ledger:
        for i in range(rows):
            _record(ledger, f"w{worker}-{i}")
            _record(ledger, f"shared-{i}")  # both processes write these keys too
            ledger.record_verdict(f"v{worker}-{i}", "g", Verdict(bool(i % 2), str(i), "exact"))


def test_two_processes_writing_one_ledger_neither_corrupt_it_nor_lose_rows(tmp_path):
    path, rows = tmp_path / "shared.sqlite", 400
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(str(path), w, rows)) for w in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 3 * rows
        assert db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] == 2 * rows
    with RequestLedger(path) as ledger:
        assert ledger.get("w1-399") == DONE and ledger.get("shared-0") == DONE


@pytest.mark.parametrize(
    "name",
    ["..", "../../escape", "/etc/passwd", "a/../../b", "nul\0byte", "x" * 300, "ü" * 60, "日本語/..", "", "./."],
)
def test_no_ledger_or_partition_name_leaves_the_ledger_folder(tmp_path, name):
    llm = LLMResource(ledger_dir=str(tmp_path / "ledgers"))
    root = (tmp_path / "ledgers").resolve()
    for path in (llm.ledger_path(name), llm.ledger_path("solver", partition=name), llm.ledger_path(name, name)):
        assert path.resolve().is_relative_to(root) and path.suffix == ".sqlite", path
        assert "\0" not in str(path) and all(len(part.encode()) <= 255 for part in path.parts)
        with RequestLedger(path) as ledger:  # a real file can be made there
            _record(ledger, "k")
    assert not any(p.name.endswith(".sqlite") for p in tmp_path.iterdir())


def test_distinct_long_names_stay_distinct_and_partitions_get_their_own_file(tmp_path):
    llm = LLMResource(ledger_dir=str(tmp_path))
    assert llm.ledger_path("q" * 200 + "a") != llm.ledger_path("q" * 200 + "b")
    assert llm.ledger_path("synthesis", "003") == tmp_path / "synthesis" / "003.sqlite"
    assert llm.ledger_path("solver/gsm8k", "gsm8k") == tmp_path / "solver" / "gsm8k.sqlite"
    assert llm.ledger_path("quality") == tmp_path / "quality.sqlite"
    assert Path(llm.ledger_path("solver/my spec")).name == "my%20spec.sqlite"
