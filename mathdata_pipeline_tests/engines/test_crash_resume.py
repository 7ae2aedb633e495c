"""Kill -9 in the middle of a generating materialization, then rerun: nothing finished is
generated again, and no row is lost or duplicated."""

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
import pytest

from mathdata_pipeline_tests.engines.crash_job import RESOURCES, crash_test_completions

REPO = Path(__file__).resolve().parents[2]
REQUESTS = 16
pytestmark = pytest.mark.slow


def _ledger_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    except sqlite3.OperationalError:  # table not created yet
        return 0


def test_killed_run_resumes_from_the_ledger(tmp_path, monkeypatch):
    home, storage, ledgers = tmp_path / "home", tmp_path / "storage", tmp_path / "ledger"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MATHDATA_STORAGE": str(storage),
        "MATHDATA_LEDGER_DIR": str(ledgers),
        "CRASH_TEST_REQUESTS": str(REQUESTS),
    }
    ledger = ledgers / "crash_test_completions.sqlite"
    process = subprocess.Popen(
        [sys.executable, "-m", "mathdata_pipeline_tests.engines.crash_job"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 400  # generous: llama.cpp slows sharply when other jobs share the 2 cores
    while _ledger_rows(ledger) < 4:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no requests finished within 400 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = _ledger_rows(ledger)
    assert 4 <= finished < REQUESTS, "kill came too late to test anything"
    assert not (storage / "crash_test_completions").exists()

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with dg.instance_for_test() as instance:
        result = dg.materialize([crash_test_completions], instance=instance, resources=RESOURCES)
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["cache_hits"].value == finished
    assert metadata["requests"].value == REQUESTS and metadata["errors"].value == 0
    assert _ledger_rows(ledger) == REQUESTS
    table = RESOURCES["store"].read("crash_test_completions")
    assert table.column("row_id").to_pylist() == [f"row-{i}" for i in range(REQUESTS)]
    assert all(table.column("text").to_pylist())
