"""Data-parallel generation over two real llama.cpp servers on loopback through one `openai`
profile: requests go to both (least loaded first), and when one server is killed mid-run the
asset finishes on the other and loses nothing."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import threading
import time
from contextlib import ExitStack
from urllib.parse import urlsplit

import dagster as dg
import psutil
import pytest
import yaml

from mathdata_pipeline.common.paths import REPO_ROOT
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.storage.resources import TableStore
from mathdata_pipeline_tests.engines.crash_job import crash_test_completions
from mathdata_pipeline_tests.engines.servers import MODEL_ALIAS, FaultInjectingProxy, llama_cpp_server

pytestmark = pytest.mark.slow
REQUESTS = 16


def _server_process(base_url: str) -> psutil.Process:
    """The llama.cpp server process (a child of this test) listening on `base_url`'s port."""
    port = str(urlsplit(base_url).port)
    for child in psutil.Process().children(recursive=True):
        command = child.cmdline()
        if "llama_cpp.server" in command and port in command:
            return child
    raise LookupError(f"no llama.cpp server on port {port}")


def _ledger_rows(path) -> int:
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_a_server_killed_mid_run_costs_nothing(tmp_path, monkeypatch):
    with ExitStack() as stack:
        doomed = stack.enter_context(llama_cpp_server(n_ctx=512, n_threads=1))
        survivor = stack.enter_context(llama_cpp_server(n_ctx=512, n_threads=1))
        counter = stack.enter_context(FaultInjectingProxy(survivor.removesuffix("/v1")))  # counts, breaks nothing
        configs = tmp_path / "configs"
        shutil.copytree(REPO_ROOT / "configs", configs)
        engines = yaml.safe_load((configs / "engines.yaml").read_text())
        engines["profiles"]["two-servers"] = {
            "backend": "openai",
            "base_url": [doomed, f"{counter.url}/v1"],
            "model": MODEL_ALIAS,
            "api": "chat",
            "max_concurrency": 2,
            "timeout_s": 120,
            "max_retries": 3,
            "backoff_base_s": 0.1,
            "backoff_max_s": 1.0,
        }
        (configs / "engines.yaml").write_text(yaml.safe_dump(engines))
        for key, value in {
            "MATHDATA_CONFIG_DIR": configs,
            "MATHDATA_STORAGE": tmp_path / "storage",
            "MATHDATA_LEDGER_DIR": tmp_path / "ledger",
            "CRASH_TEST_REQUESTS": REQUESTS,
        }.items():
            monkeypatch.setenv(key, str(value))
        ledger, process = tmp_path / "ledger" / "crash_test_completions.sqlite", _server_process(doomed)
        killed_at: list[int] = []

        def kill_when_four_are_done() -> None:
            deadline = time.monotonic() + 300
            while _ledger_rows(ledger) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            killed_at.append(_ledger_rows(ledger))
            process.send_signal(signal.SIGKILL)

        killer = threading.Thread(target=kill_when_four_are_done, daemon=True)
        killer.start()
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                [crash_test_completions],
                instance=instance,
                resources={"llm": LLMResource(profile="two-servers", progress_interval_s=1.0), "store": TableStore()},
            )
        killer.join(10)
        assert killed_at and killed_at[0] < REQUESTS, "the server was killed too late to test anything"
        assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
        metadata = {
            k: v.value for k, v in result.get_asset_materialization_events()[0].materialization.metadata.items()
        }
        assert result.success and metadata["errors"] == 0 and metadata["requests"] == REQUESTS
        assert _ledger_rows(ledger) == REQUESTS
        table = TableStore().read("crash_test_completions")
        assert table.column("row_id").to_pylist() == [f"row-{i}" for i in range(REQUESTS)]
        assert all(table.column("text").to_pylist())
        assert counter.requests >= REQUESTS - killed_at[0]  # the rest ran on the survivor
        assert counter.requests < REQUESTS  # and the killed server had answered some before it died
