"""What the demo says at its end (rows per generating method, rows to trace, rows pruned), how
it records what it relaxes (a run tag and an observation beside the materialization), and that its
runs belong to their job in the code location of `workspace.yaml` (so the UI's Overview timeline
and job histories list them)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from mathdata_pipeline import demo
from mathdata_pipeline.curation.solutions import SOLUTION_SCHEMA
from mathdata_pipeline.mixtures.compose import MIXTURE_SCHEMA
from mathdata_pipeline.storage.resources import TableStore
from mathdata_pipeline_tests.services import dagster_ui_server

REPO = Path(__file__).resolve().parent.parent


def _mixture_row(row_id: str, origin: str, sample_id: str | None) -> dict:
    return {"row_id": row_id, "mixture": "openmathmix-pruned", "kind": "reasoning", "origin": origin} | {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "sample_id": sample_id,
        "config_hash": "h",
    }


def test_the_summary_counts_generated_rows_by_method_and_names_one_of_each_to_trace(tmp_path):
    store = TableStore(root=str(tmp_path))
    methods = {"s-ref": "reference", "s-dart": "dart", "s-mm": "mugglemath", "s-sq": "scalequest"}
    solutions = [{"sample_id": s, "problem_id": "p", "method": m} for s, m in methods.items()]
    store.write(pa.Table.from_pylist(solutions, schema=SOLUTION_SCHEMA), "solutions", "math")
    rows = [
        _mixture_row("mx-1", "seed", "s-ref"),
        _mixture_row("mx-2", "seed", "s-dart"),
        _mixture_row("mx-3", "augmented", "s-mm"),
        _mixture_row("mx-4", "synthesized", "s-sq"),
        _mixture_row("mx-5", "general", None),
    ]
    store.write(pa.Table.from_pylist(rows, schema=MIXTURE_SCHEMA), "mixture", "openmathmix-pruned")
    decisions = ["selected", "pruned by influence (combined, mean, difference)", "not selected"]
    store.write(pa.Table.from_pylist([{"decision": d} for d in decisions]), "selections", "openmathmix-pruned")
    lines = demo.mixture_summary(store, ["openmathmix", "openmathmix-pruned"])  # no openmathmix table: skipped
    assert lines == [
        "mixture openmathmix-pruned: 5 rows, by_origin {'augmented': 1, 'general': 1, 'seed': 2, 'synthesized': 1}",
        "  generated rows by method: {'dart': 1, 'mugglemath': 1, 'scalequest': 1}",
        "  trace a dart row: mathdata trace mx-2",
        "  trace a mugglemath row: mathdata trace mx-3",
        "  trace a scalequest row: mathdata trace mx-4",
        "  pruned by influence: 1 rows",
    ]


def test_a_relaxed_asset_is_tagged_and_observed_with_the_reason(tmp_path, data_root, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MATHDATA_STORAGE", str(tmp_path / "storage"))
    with dg.DagsterInstance.get() as instance:
        result = demo.launch(instance, dg.AssetKey("eval_benchmarks"), None, {}, relaxed="fewer items: a tiny model")
        assert result.success
        assert instance.get_run_by_id(result.run_id).tags[demo.RELAXED_TAG] == "fewer items: a tiny model"
        (record,) = instance.fetch_observations(dg.AssetKey("eval_benchmarks"), limit=1).records
        assert record.asset_observation.metadata["demo_relaxed"].value == "fewer items: a tiny model"
        plain = demo.launch(instance, dg.AssetKey("eval_benchmarks"), None, {})
        assert demo.RELAXED_TAG not in instance.get_run_by_id(plain.run_id).tags
        assert len(instance.fetch_observations(dg.AssetKey("eval_benchmarks"), limit=5).records) == 1
        run = instance.get_run_by_id(plain.run_id)
        assert run.job_name == "sources_job" and run.remote_job_origin.job_name == "sources_job"
        assert run.remote_job_origin.location_name == "mathdata_pipeline"
        in_repository = dg.RunsFilter(
            job_name="sources_job", tags={".dagster/repository": "__repository__@mathdata_pipeline"}
        )
        assert plain.run_id in instance.get_run_ids(in_repository)  # how a job's history finds its runs
        assert run.asset_selection == {dg.AssetKey("eval_benchmarks")} and run.job_code_origin.job_name == "sources_job"


# The query the UI's Overview timeline sends for finished runs (dagster-webserver's
# `CompletedRunTimelineQuery`; the UI drops a run without `repositoryOrigin`), and a job's history.
TIMELINE = """query ($filter: RunsFilter!) {
  runsOrError(filter: $filter, limit: 500) {
    ... on Runs { results { id pipelineName repositoryOrigin { repositoryName repositoryLocationName } } }
  }
  pipelineOrError(params: {pipelineName: "sources_job", repositoryName: "__repository__",
                           repositoryLocationName: "mathdata_pipeline"}) {
    ... on Pipeline { runs { runId } }
  }
}"""


def _graphql(base: str, query: str, variables: dict) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(f"{base}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload
    return payload["data"]


@pytest.fixture
def webserver(tmp_path, data_root):
    """`dagster-webserver` on a free loopback port for `workspace.yaml` and a fresh DAGSTER_HOME
    (the process group is stopped after the test). Yields (base URL, DAGSTER_HOME)."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "MATHDATA_STORAGE": str(tmp_path / "storage")}
    command = [str(Path(sys.executable).with_name("dagster-webserver")), "-w", str(REPO / "workspace.yaml")]
    with dagster_ui_server(command, cwd=home, env=env, log=tmp_path / "webserver.log") as base:
        yield base, home


@pytest.mark.slow
def test_the_timeline_and_the_job_history_list_a_demo_run_under_its_job(webserver, monkeypatch):
    base, home = webserver
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MATHDATA_STORAGE", str(home.parent / "storage"))
    with dg.DagsterInstance.get() as instance:
        result = demo.launch(instance, dg.AssetKey("eval_benchmarks"), None, {})
    assert result.success
    now = time.time()
    data = _graphql(base, TIMELINE, {"filter": {"updatedAfter": now - 3600, "updatedBefore": now + 60}})
    (run,) = data["runsOrError"]["results"]
    assert run == {
        "id": result.run_id,
        "pipelineName": "sources_job",
        "repositoryOrigin": {"repositoryName": "__repository__", "repositoryLocationName": "mathdata_pipeline"},
    }
    assert data["pipelineOrError"]["runs"] == [{"runId": result.run_id}]
