"""`mathdata trace` on stored tables: partition keys quoted as the table store quotes them (so a
mixture with a legacy name such as "my spec" is traced whole), and output into a closed pipe."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest
from upath import UPath

from mathdata_pipeline.mixtures.compose import MIXTURE_SCHEMA
from mathdata_pipeline.mixtures.trace import trace_row
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
