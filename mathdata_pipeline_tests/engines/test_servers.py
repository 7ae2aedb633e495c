"""The test servers die with the process that started them, even when it is killed with SIGKILL
(a pytest killed mid-test must not leave a llama.cpp server listening on loopback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

_STARTER = (
    "import time\n"
    "from mathdata_pipeline_tests.engines.servers import llama_cpp_server\n"
    "with llama_cpp_server() as url:\n"
    "    print(url, flush=True)\n"
    "    time.sleep(600)\n"
)


def test_llama_cpp_server_dies_with_the_killed_test_process():
    starter = subprocess.Popen(
        [sys.executable, "-c", _STARTER], cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    servers: list[psutil.Process] = []
    try:
        url = starter.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), "the server did not come up"
        servers = psutil.Process(starter.pid).children()
        assert servers, "no server process found"
        starter.send_signal(signal.SIGKILL)
        starter.wait()
        gone, alive = psutil.wait_procs(servers, timeout=30)
        assert not alive, f"server processes outlived the killed test process: {[p.pid for p in alive]}"
    finally:
        starter.kill()
        for server in servers:  # clean up after a failure
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
