"""Kill -9 in the middle of a generating materialization, then rerun: nothing finished is
generated (or graded) again, and no row is lost or duplicated; for a batch of requests and for
the streaming DARS controller. Both runs go to the shared instance on a real PostgreSQL server
(docker/dagster.yaml), which keeps the killed run beside the one that finished it."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from mathdata_pipeline_tests.engines.crash_job import ASSETS, RESOURCES

REPO = Path(__file__).resolve().parents[2]
REQUESTS = 16
pytestmark = pytest.mark.slow


def _rows(path: Path, table: str = "requests") -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    except sqlite3.OperationalError:  # table not created yet
        return 0


def _kill_midway(asset: str, tmp_path: Path, monkeypatch, rows: int, postgres: dict) -> tuple[Path, Path]:
    """Start a real run of `asset` in a subprocess on the PostgreSQL instance (`postgres`: its
    DAGSTER_PG_* variables), SIGKILL it once its ledger holds `rows` requests, and point this
    process at the same instance and storage; returns (ledger file, storage root)."""
    home, storage, ledgers = tmp_path / "home", tmp_path / "storage", tmp_path / "ledger"
    home.mkdir()
    shutil.copy(REPO / "docker" / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        **postgres,
        "DAGSTER_HOME": str(home),
        "MATHDATA_STORAGE": str(storage),
        "MATHDATA_LEDGER_DIR": str(ledgers),
        "CRASH_TEST_REQUESTS": str(REQUESTS),
        "CRASH_TEST_ASSET": asset,
    }
    ledger = ledgers / f"{asset}.sqlite"
    process = subprocess.Popen(
        [sys.executable, "-m", "mathdata_pipeline_tests.engines.crash_job"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 400  # generous: llama.cpp slows sharply when other jobs share the 2 cores
    while _rows(ledger) < rows:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, f"no {rows} requests finished within 400 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return ledger, storage


def _materialize(asset: str) -> dict:
    """Rerun `asset` on the instance at DAGSTER_HOME; the killed run must be stored there beside it."""
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        (killed,) = instance.get_runs(limit=1)  # the newest run: the one killed midway, never finished
        assert killed.status in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.FAILURE)
        result = dg.materialize([ASSETS[asset]], instance=instance, resources=RESOURCES)
        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
    return result.get_asset_materialization_events()[0].materialization.metadata


def test_killed_run_resumes_from_the_ledger(tmp_path, monkeypatch, postgres_server):
    ledger, storage = _kill_midway("crash_test_completions", tmp_path, monkeypatch, 4, postgres_server.env)
    finished = _rows(ledger)
    assert 4 <= finished < REQUESTS, "kill came too late to test anything"
    assert not (storage / "crash_test_completions").exists()

    metadata = _materialize("crash_test_completions")
    assert metadata["cache_hits"].value == finished
    assert metadata["requests"].value == REQUESTS and metadata["errors"].value == 0
    assert _rows(ledger) == REQUESTS and metadata["ledger_rows"].value == REQUESTS
    table = RESOURCES["store"].read("crash_test_completions")
    assert table.column("row_id").to_pylist() == [f"row-{i}" for i in range(REQUESTS)]
    assert all(table.column("text").to_pylist())


def test_killed_dars_run_regenerates_and_regrades_nothing(tmp_path, monkeypatch, postgres_server):
    ledger, storage = _kill_midway("crash_test_dars", tmp_path, monkeypatch, 5, postgres_server.env)
    requests_before, verdicts_before = _rows(ledger), _rows(ledger, "verdicts")
    assert requests_before >= 5 and not (storage / "crash_test_dars").exists()

    metadata = _materialize("crash_test_dars")
    generated = metadata["requests"].value - metadata["cache_hits"].value
    assert generated == _rows(ledger) - requests_before  # every generation is a new ledger row
    assert metadata["verdicts_graded"].value == _rows(ledger, "verdicts") - verdicts_before  # and every grading
    assert metadata["cache_hits"].value >= 1 and metadata["verdicts_reused"].value >= 1
    table = pq.read_table(storage / "crash_test_dars" / "data.parquet")
    assert (
        table.num_rows == metadata["kept"].value and len(set(table.column("sample_id").to_pylist())) == table.num_rows
    )
    for problem in set(table.column("problem_id").to_pylist()):  # each problem: samples 0..m, no gap, no repeat
        indices = [i for p, i in zip(*table.select(["problem_id", "sample_index"]).columns) if p.as_py() == problem]
        assert [i.as_py() for i in indices] == list(range(len(indices)))
