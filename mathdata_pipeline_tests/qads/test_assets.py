"""OpenMathMix from open data through Dagster, offline: local pool slices written here (a
MetaMathQA-layout reasoning slice and a ShareGPT-layout chat pool marked as an evaluation split)
become candidates beside the gsm8k seed solutions; QaDS selects open rows, never the evaluation
split, and they reach the mixture with their lineage."""

from __future__ import annotations

import json
from types import SimpleNamespace

import dagster as dg
import pyarrow.compute as pc
import pytest

from mathdata_pipeline.common.partitions import register_seed_sources
from mathdata_pipeline.definitions import ASSETS
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.qads.resources import KCenterSelector
from mathdata_pipeline.sources.readers import read_records
from mathdata_pipeline.sources.resources import DataSources
from mathdata_pipeline.storage.resources import TableStore
from mathdata_pipeline_tests.conftest import storage_with_benchmarks

pytestmark = pytest.mark.slow

CHATS = [
    ("How do I boil an egg?", "Put it in boiling water for about nine minutes, then cool it in cold water."),
    ("Name three primary colours.", "Red, yellow and blue."),
    ("What is the capital of Portugal?", "Lisbon."),
    ("Give me a synonym for happy.", "Cheerful."),
    ("Translate 'thank you' into French.", "Merci."),
    ("Suggest a name for a goldfish.", "Bubbles."),
]


def _write_pools(folder, data_root):
    """A MetaMathQA-layout slice of 10 ScaleQuest sample rows (pairs share an original question)
    and an evaluation-split chat pool, plus the pools file that maps them."""
    records = [r.data for r in read_records(data_root / "synth_samples" / "scalequest_samples.jsonl")][:10]
    slice_rows = [
        {"query": r["query"], "response": r["response"], "type": "MATH_AnsAug", "original_question": f"q{i // 2}"}
        for i, r in enumerate(records)
    ]
    (folder / "metamath_slice.json").write_text(json.dumps(slice_rows))
    chats = [{"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]} for q, a in CHATS]
    (folder / "chat_test.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    (folder / "pools.yaml").write_text(
        "candidate_pools:\n"
        "  metamath_slice:\n    kind: reasoning\n    path: metamath_slice.json\n    question: query\n"
        "    response: response\n    problem: original_question\n    subset: type\n    license: MIT\n"
        "  chat_test:\n    kind: general\n    path: chat_test.jsonl\n    messages: conversations\n"
        "    role_key: from\n    content_key: value\n    roles: {human: user, gpt: assistant}\n"
        "    split: test\n    evaluation_split: true\n    license: CC-BY-4.0\n"
    )
    return folder / "pools.yaml"


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_root, benchmark_storage):
    root = storage_with_benchmarks(benchmark_storage, tmp_path_factory.mktemp("storage"))
    pools = _write_pools(tmp_path_factory.mktemp("pools"), data_root)
    store = TableStore(root=str(root))
    resources = {
        "store": store,
        "sources": DataSources(data_dir=str(data_root)),
        "selector": KCenterSelector(),
        "llm": LLMResource(ledger_dir=str(tmp_path_factory.mktemp("ledger")), progress_interval_s=5),
    }
    ops = {
        "candidate_pool": {"config": {"file": str(pools)}},
        "embeddings": {"config": {"max_per_group": 8}},
        "quality_scores": {
            "config": {"anchors": 1, "label_fraction": 0.01, "min_labels": 2, "min_heldout_correlation": None}
        },
    }
    with dg.instance_for_test() as instance:
        register_seed_sources(instance)

        def run(selection, partition=None):
            return dg.materialize(
                ASSETS,
                selection=selection,
                partition_key=partition,
                instance=instance,
                resources=resources,
                run_config={"ops": {k: v for k, v in ops.items() if k in selection}},
            )

        run(["general_pool", "candidate_pool"])  # the benchmarks and their index come with the storage copy
        run(["seed_problems", "question_pool", "solutions"], "gsm8k")
        run(["embeddings", "quality_scores"])
        select = run(["selections", "mixture"], "openmathmix")
        yield SimpleNamespace(store=store, select=select)


def test_pools_load_with_their_flags_and_are_checked_for_overlap(built):
    pool = built.store.read("candidate_pool")
    assert pool.filter(pc.field("source") == "metamath_slice").num_rows == 10
    chats = pool.filter(pc.field("source") == "chat_test")
    assert chats.num_rows == 6 and all(chats.column("evaluation_split").to_pylist())
    problems = pool.filter(pc.field("source") == "metamath_slice").column("problem_id").to_pylist()
    assert len(set(problems)) == 5  # rows sharing an original question are one problem
    embeddings = built.store.read("embeddings", columns=["kind", "origin", "source", "evaluation_split"])
    flagged = embeddings.filter(pc.field("evaluation_split"))
    assert set(flagged.column("source").to_pylist()) == {"chat_test", "hh_rlhf_harmless"}
    assert set(embeddings.filter(pc.field("origin") == "open").column("source").to_pylist()) == {
        "metamath_slice",
        "chat_test",
    }


def test_open_rows_are_selected_and_evaluation_splits_never(built):
    decisions = built.store.read("selections", "openmathmix")
    selected = decisions.filter(pc.field("selected"))
    assert selected.filter(pc.field("origin") == "open").num_rows > 0
    assert selected.filter(pc.field("evaluation_split")).num_rows == 0
    excluded = decisions.filter(pc.field("evaluation_split"))
    assert excluded.num_rows >= 6 and all("evaluation split" in d for d in excluded.column("decision").to_pylist())
    checks = {c.check_name: c for c in built.select.get_asset_check_evaluations()}
    assert checks["no_evaluation_split"].passed and all(c.passed for c in checks.values())


def test_open_rows_reach_the_mixture_with_their_messages(built):
    mixture = built.store.read("mixture", "openmathmix")
    pool = {r["row_id"]: r for r in built.store.read("candidate_pool").to_pylist()}
    open_rows = mixture.filter(pc.field("origin") == "open").to_pylist()
    assert open_rows and all(r["pool_row_id"] in pool and r["sample_id"] is None for r in open_rows)
    assert all(r["messages"] == pool[r["pool_row_id"]]["messages"] for r in open_rows)
    assert not set(mixture.column("source").to_pylist()) & {"chat_test", "hh_rlhf_harmless"}


def test_embeddings_on_two_ray_workers_equal_the_local_ones(built, data_root, tmp_path):
    """The `embeddings` asset with `compute: ray` on a local Ray cluster (a head and two worker
    nodes on 127.0.0.1), from the same tables without the embedding cache: every row is embedded
    on the workers, and the table equals the one the module's local run wrote."""
    import re
    import shutil

    import numpy as np

    from mathdata_pipeline.qads.embeddings import embedding_matrix
    from mathdata_pipeline_tests.services import local_ray_cluster

    root = tmp_path / "storage"
    shutil.copytree(built.store.root_path().path, root, ignore=shutil.ignore_patterns("_cache"))
    store = TableStore(root=str(root))
    resources = {
        "store": store,
        "sources": DataSources(data_dir=str(data_root)),
        "selector": KCenterSelector(),
        "llm": LLMResource(ledger_dir=str(tmp_path / "ledger")),
    }
    with local_ray_cluster(workers=2) as cluster:
        compute = {"backend": "ray", "ray_address": cluster.address, "workers": 2}
        result = dg.materialize(
            ASSETS,
            selection=["embeddings"],
            resources=resources,
            run_config={"ops": {"embeddings": {"config": {"max_per_group": 8, "compute": compute}}}},
        )
    assert result.success
    (materialization,) = result.asset_materializations_for_node("embeddings")
    remote, local = store.read("embeddings"), built.store.read("embeddings")
    assert materialization.metadata["embedded"].value == remote.num_rows > 0
    assert materialization.metadata["cache_hits"].value == 0
    chunks = re.fullmatch(
        r"ray: 2 workers, chunks per worker \[(\d+), (\d+)\]", materialization.metadata["compute"].value
    )
    assert chunks and all(int(n) >= 1 for n in chunks.groups())  # both workers embedded
    assert remote.column("candidate_id").to_pylist() == local.column("candidate_id").to_pylist()
    np.testing.assert_allclose(embedding_matrix(remote), embedding_matrix(local), atol=1e-5)
