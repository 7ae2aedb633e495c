"""`mathdata trace` on stored tables: partition keys quoted as the table store quotes them (so a
mixture with a legacy name such as "my spec" is traced whole), output into a closed pipe, and the
generated sample with the Dagster run that wrote it."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pyarrow as pa
import pytest
from upath import UPath

from mathdata_pipeline.common.metadata import materialization_run
from mathdata_pipeline.curation.solutions import SOLUTION_SCHEMA
from mathdata_pipeline.mixtures.compose import MIXTURE_SCHEMA
from mathdata_pipeline.mixtures.trace import format_history, trace_row
from mathdata_pipeline.storage.resources import TableStore

LEGACY = "my spec"  # a spec name from before names were checked: stored as mixture/my%20spec.parquet


@pytest.fixture
def stored(tmp_path):
    store = TableStore(root=str(tmp_path))
    row = {
        "row_id": "mx-legacy",
        "mixture": LEGACY,
        "kind": "reasoning",
        "source": "gsm8k",
        "origin": "seed",
        "messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4 " * 100_000}],
        "sample_id": "s-1",
        "problem_id": "p-1",
        "config_hash": "h",
    }
    store.write(pa.Table.from_pylist([row], schema=MIXTURE_SCHEMA), "mixture", LEGACY)
    decision = {"candidate_id": "s-1", "kind": "reasoning", "selected": True, "decision": "selected: rank 1"}
    store.write(pa.Table.from_pylist([decision]), "selections", LEGACY)
    return tmp_path


def test_trace_finds_the_decision_of_a_mixture_with_a_legacy_name(stored):
    history = trace_row(UPath(stored), "mx-legacy")
    assert history["row"]["mixture"] == LEGACY
    assert history["selection"] is not None and history["selection"]["decision"] == "selected: rank 1"


def test_trace_json_into_a_closed_pipe_ends_quietly(stored):
    process = subprocess.Popen(
        [sys.executable, "-m", "mathdata_pipeline.cli", "trace", "mx-legacy", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "MATHDATA_STORAGE": str(stored)},
    )
    assert process.stdout.readline() == b"{\n"
    process.stdout.close()  # like `| head -1`
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


def _dart_chain(root) -> None:
    """A DART row's tables: the mixture row, its solutions row and its rejection sample."""
    store = TableStore(root=str(root))
    mixture_row = {
        "row_id": "mx-dart",
        "mixture": "openmathmix",
        "kind": "reasoning",
        "source": "gsm8k",
        "origin": "seed",
        "messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "\\boxed{4}"}],
        "sample_id": "s-dart",
        "problem_id": "p-1",
        "config_hash": "h",
    }
    store.write(pa.Table.from_pylist([mixture_row], schema=MIXTURE_SCHEMA), "mixture", "openmathmix")
    solution = {"sample_id": "s-dart", "problem_id": "p-1", "source": "gsm8k", "origin": "seed", "method": "dart"}
    solution |= {"model": "smollm2-135m", "template": "chat", "temperature": 0.7, "top_p": 0.95, "seed": 123}
    store.write(pa.Table.from_pylist([solution], schema=SOLUTION_SCHEMA), "solutions", "gsm8k")


def _write_samples(store: TableStore) -> None:
    sample = {"sample_id": "s-dart", "max_tokens": 320, "finish_reason": "stop", "correct": True, "seed": 123}
    store.write(pa.Table.from_pylist([sample]), "rejection_samples", "gsm8k")


def test_trace_shows_the_generated_sample_and_the_run_that_wrote_it(tmp_path):
    """A real Dagster run writes `rejection_samples[gsm8k]`; the trace of a DART mixture row names
    that run, its job and time, and the sample's own settings, and says which tables the instance
    has no run for."""
    _dart_chain(tmp_path / "storage")

    @dg.asset(name="rejection_samples", partitions_def=dg.StaticPartitionsDefinition(["gsm8k"]))
    def rejection_samples_writer() -> None:
        _write_samples(TableStore(root=str(tmp_path / "storage")))

    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = dg.materialize([rejection_samples_writer], instance=instance, partition_key="gsm8k")
        history = trace_row(
            UPath(tmp_path / "storage"), "mx-dart", runs=lambda a, p: materialization_run(instance, a, p)
        )
    assert history["generation"]["max_tokens"] == 320 and history["generation"]["finish_reason"] == "stop"
    runs = {run["step"]: run for run in history["runs"]}
    assert runs["generation"]["asset"] == "rejection_samples" and runs["generation"]["partition"] == "gsm8k"
    assert runs["generation"]["run_id"] == result.run_id and runs["generation"]["job"] == "__ephemeral_asset_job__"
    assert runs["generation"]["materialized_at"].endswith("+00:00")
    assert runs["mixture"]["partition"] == "openmathmix" and runs["mixture"]["run_id"] is None
    text = format_history(history)
    assert f"rejection_samples[gsm8k]: run {result.run_id}" in text
    assert "mixture[openmathmix]: no materialization" in text and "max_tokens         320" in text


def test_trace_cli_looks_runs_up_in_the_instance_at_dagster_home(tmp_path):
    """`mathdata trace` with DAGSTER_HOME: the runs section comes from that instance (here empty)."""
    _dart_chain(tmp_path / "storage")
    _write_samples(TableStore(root=str(tmp_path / "storage")))
    (tmp_path / "home").mkdir()
    env = {**os.environ, "MATHDATA_STORAGE": str(tmp_path / "storage"), "DAGSTER_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "mathdata_pipeline.cli", "trace", "mx-dart"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "== runs (Dagster)" in done.stdout
    assert "rejection_samples[gsm8k]: no materialization in this Dagster instance" in done.stdout
