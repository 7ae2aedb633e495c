"""End to end: `dagster dev` on a free loopback port, a run launched through GraphQL, the asset
graph and the materialization read back the way the UI reads them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _graphql(base: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{base}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload
    return payload["data"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_root):
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MATHDATA_STORAGE": str(tmp_path_factory.mktemp("storage")),
        "MATHDATA_DATA_DIR": str(data_root),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    dagster = Path(sys.executable).with_name("dagster")
    log = open(home / "dev.log", "wb")  # noqa: SIM115 - the server writes to it until teardown
    process = subprocess.Popen(
        [str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                info = json.loads(_get(f"{base}/server_info"))
                break
            except OSError:
                assert process.poll() is None, (home / "dev.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "dagster dev did not answer /server_info in 180 s"
                time.sleep(1)
        yield base, info
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def test_server_info_and_asset_graph(server):
    base, info = server
    assert info["dagster_version"]
    data = _graphql(
        base, "{ assetNodes { assetKey { path } dependencyKeys { path } isPartitioned partitionKeys jobNames } }"
    )
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert {"seed_problems", "eval_benchmarks", "general_pool", "contamination_index"} <= set(nodes)
    assert nodes["seed_problems"]["isPartitioned"]
    # a fresh instance: the configured sources are partitions the UI offers, and named jobs run them
    assert {"gsm8k", "math"} <= set(nodes["seed_problems"]["partitionKeys"])
    assert {"sources_job", "seed_source_job"} <= set(nodes["seed_problems"]["jobNames"])
    assert "mixture_job" in nodes["mixture"]["jobNames"]
    assert [d["path"] for d in nodes["contamination_index"]["dependencyKeys"]] == [["eval_benchmarks"]]


LAUNCH = """
mutation($selection: [AssetKeyInput!]) {
  launchRun(executionParams: {
    selector: {repositoryLocationName: "mathdata_pipeline", repositoryName: "__repository__",
               pipelineName: "__ASSET_JOB", assetSelection: $selection},
    runConfigData: {}}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""

STATUS = '{ runOrError(runId: "%s") { ... on Run { status } } }'

MATERIALIZATIONS = """
{ assetOrError(assetKey: {path: ["eval_benchmarks"]}) {
    ... on Asset { assetMaterializations(limit: 1) { runId metadataEntries {
        label ... on IntMetadataEntry { intValue } } } } } }"""


def test_materialize_through_the_server(server):
    base, _ = server
    launched = _graphql(base, LAUNCH, {"selection": [{"path": ["eval_benchmarks"]}]})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + 240
    status = None
    while time.monotonic() < deadline:
        status = _graphql(base, STATUS % run_id)["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    assert status == "SUCCESS"
    (materialization,) = _graphql(base, MATERIALIZATIONS)["assetOrError"]["assetMaterializations"]
    assert materialization["runId"] == run_id
    entries = {e["label"]: e.get("intValue") for e in materialization["metadataEntries"]}
    assert entries["dagster/row_count"] > 12000
