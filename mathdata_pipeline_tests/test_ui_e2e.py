"""End to end: `dagster dev` on a free loopback port with the shared instance on a real PostgreSQL
server (docker/dagster.yaml), two runs launched at once through GraphQL, the asset graph, the run
list and the materialization read back the way the UI reads them."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mathdata_pipeline_tests.services import dagster_ui_server

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


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
def server(tmp_path_factory, data_root, postgres_server):
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(REPO / "docker" / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        **postgres_server.env,
        "DAGSTER_HOME": str(home),
        "MATHDATA_STORAGE": str(tmp_path_factory.mktemp("storage")),
        "MATHDATA_DATA_DIR": str(data_root),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    command = [str(Path(sys.executable).with_name("dagster")), "dev", "-w", "workspace.yaml"]
    with dagster_ui_server(command, cwd=REPO, env=env, log=home / "dev.log") as base:
        yield base, json.loads(_get(f"{base}/server_info"))


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

RUNS = "{ runsOrError { ... on Runs { results { runId status } } } }"

MATERIALIZATIONS = """
{ assetOrError(assetKey: {path: ["eval_benchmarks"]}) {
    ... on Asset { assetMaterializations(limit: 1) { runId metadataEntries {
        label ... on IntMetadataEntry { intValue } } } } } }"""


def _wait_for(base: str, run_id: str, deadline: float) -> str:
    """The run's final status, polled through GraphQL until `deadline` (time.monotonic)."""
    status = None
    while time.monotonic() < deadline:
        status = _graphql(base, STATUS % run_id)["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    return status


def test_two_runs_launched_at_once_both_finish_and_show(server):
    base, _ = server
    run_ids = []
    for asset in ("eval_benchmarks", "general_pool"):
        launched = _graphql(base, LAUNCH, {"selection": [{"path": [asset]}]})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_ids.append(launched["run"]["runId"])
    deadline = time.monotonic() + 300
    assert [_wait_for(base, run_id, deadline) for run_id in run_ids] == ["SUCCESS", "SUCCESS"]
    listed = {r["runId"]: r["status"] for r in _graphql(base, RUNS)["runsOrError"]["results"]}
    assert {run_id: listed.get(run_id) for run_id in run_ids} == dict.fromkeys(run_ids, "SUCCESS")
    (materialization,) = _graphql(base, MATERIALIZATIONS)["assetOrError"]["assetMaterializations"]
    assert materialization["runId"] == run_ids[0]
    entries = {e["label"]: e.get("intValue") for e in materialization["metadataEntries"]}
    assert entries["dagster/row_count"] > 12000
