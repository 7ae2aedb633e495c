"""QaDS and OpenMathMix through Dagster on real data: embeddings, quality scores with the
embedded model, selections, the mixture with its blocking checks, its exports, and `mathdata
trace` on a mixture row."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mathdata_pipeline.common.partitions import register_seed_sources
from mathdata_pipeline.definitions import ASSETS
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.mixtures.compose import MIXTURE_SCHEMA
from mathdata_pipeline.qads.resources import KCenterSelector
from mathdata_pipeline.sources.resources import DataSources
from mathdata_pipeline.storage.resources import TableStore
from mathdata_pipeline_tests.conftest import storage_with_benchmarks

pytestmark = pytest.mark.slow

RUN_CONFIG = {
    "ops": {
        "embeddings": {"config": {"max_per_group": 40}},
        "quality_scores": {
            "config": {"anchors": 2, "label_fraction": 0.01, "min_labels": 4, "min_heldout_correlation": None}
        },
    }
}


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_root, benchmark_storage):
    """Seeds → question pool → solutions (seed references) for gsm8k, then the QaDS chain and the
    OpenMathMix mixture, on a copy of the session's benchmark tables."""
    root = storage_with_benchmarks(benchmark_storage, tmp_path_factory.mktemp("storage"))
    store = TableStore(root=str(root))
    resources = {
        "store": store,
        "sources": DataSources(data_dir=str(data_root)),
        "selector": KCenterSelector(),
        "llm": LLMResource(ledger_dir=str(tmp_path_factory.mktemp("ledger")), progress_interval_s=5),
    }
    with dg.instance_for_test() as instance:
        register_seed_sources(instance)

        def run(selection, partition=None, config=RUN_CONFIG):
            ops = {k: v for k, v in config["ops"].items() if k in selection}
            return dg.materialize(
                ASSETS,
                selection=selection,
                partition_key=partition,
                instance=instance,
                resources=resources,
                run_config={"ops": ops},
            )

        run(["general_pool"])  # the benchmarks and their index come with the storage copy
        run(["seed_problems", "question_pool", "solutions"], "gsm8k")
        results = {
            "scores": run(["embeddings", "quality_scores"]),
            "select": run(["selections", "mixture"], "openmathmix"),
        }
        yield SimpleNamespace(store=store, root=root, run=run, results=results, instance=instance, resources=resources)


def _materialization(result, key):
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)]
    return event.materialization.metadata


def test_embeddings_cover_both_kinds_and_are_cached(built):
    table = built.store.read("embeddings")
    assert set(table.column("kind").to_pylist()) == {"reasoning", "general"}
    assert table.schema.field("embedding").type.list_size == 384
    meta = _materialization(built.results["scores"], "embeddings")
    assert meta["embedded"].value == table.num_rows and meta["cache_hits"].value == 0
    again = built.run(["embeddings"])
    meta = _materialization(again, "embeddings")
    assert meta["cache_hits"].value == table.num_rows and meta["embedded"].value == 0


def test_quality_scores_measure_a_subset_and_predict_the_rest(built):
    table = built.store.read("quality_scores")
    labelled = table.filter(pc.is_valid(table.column("q_label")))
    assert labelled.num_rows == 8  # 4 per kind
    measured, predicted = labelled.column("q_label").to_numpy(), table.column("q_pred").to_numpy()
    assert ((measured >= 0) & (measured <= 1)).all() and ((predicted >= 0) & (predicted <= 1)).all()
    meta = _materialization(built.results["scores"], "quality_scores")
    assert meta["requests"].value > 0 and "by_kind" in meta and meta["scorer_gate"].value == "off"


def test_selection_and_mixture_follow_the_spec(built):
    decisions = built.store.read("selections", "openmathmix")
    reasoning = decisions.filter(pc.field("kind") == "reasoning")
    selected = reasoning.filter(pc.field("selected"))
    assert selected.num_rows == round(0.5 * reasoning.num_rows)
    assert all(d.startswith(("selected", "not selected")) for d in decisions.column("decision").to_pylist())
    mixture = built.store.read("mixture", "openmathmix")
    assert mixture.schema.equals(MIXTURE_SCHEMA)
    general = mixture.filter(pc.field("kind") == "general").num_rows
    assert abs(general / mixture.num_rows - 0.25) <= 0.02 + 1 / mixture.num_rows
    checks = {c.check_name: c for c in built.results["select"].get_asset_check_evaluations()}
    assert set(checks) == {
        "no_evaluation_split",
        "no_benchmark_overlap",
        "no_duplicate_rows",
        "ratios_within_tolerance",
        "schema",
        "licenses_allowed",
    }
    assert all(c.passed for c in checks.values())
    assert {c.partition for c in checks.values()} == {"openmathmix"}
    ratios = checks["ratios_within_tolerance"].metadata
    assert ratios["rows_general"].value == general and ratios["rows"].value == mixture.num_rows
    assert ratios["share_general"].value == round(general / mixture.num_rows, 4)
    assert ratios["target_general"].value == 0.25 and ratios["tolerance"].value == 0.02
    assert "| general | " in ratios["shares"].value
    meta = _materialization(built.results["select"], "mixture")
    manifest = meta["manifest"].value
    assert manifest["rows"] == mixture.num_rows and manifest["config_hash"] == meta["config_hash"].value
    solutions = built.store.read_all("solutions", columns=["sample_id", "method"]).to_pylist()
    solution_method = {s["sample_id"]: s["method"] for s in solutions}
    for row in mixture.select(["kind", "sample_id", "method"]).to_pylist():
        expected = solution_method[row["sample_id"]] if row["sample_id"] else None
        assert row["method"] == expected, row
    methods = [m for m in mixture.column("method").to_pylist() if m]
    assert manifest["by_method"] == {m: methods.count(m) for m in sorted(set(methods))} and methods
    assert "coverage_reasoning" in _materialization(built.results["select"], "selections")


def test_exports_open_as_jsonl_and_datasets(built):
    import datasets

    folder = built.root / "mixture" / "openmathmix_export"
    lines = (folder / "mixture.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert first["messages"][0]["role"] == "user" and first["messages"][-1]["role"] == "assistant"
    loaded = datasets.load_from_disk(str(folder / "hf_dataset"))
    assert len(loaded) == len(lines) == built.store.read("mixture", "openmathmix").num_rows
    assert json.loads((folder / "manifest.json").read_text())["mixture"] == "openmathmix"


def test_planted_contamination_and_duplicates_fail_the_checks_and_keep_the_good_mixture(built):
    good = built.store.read("mixture", "openmathmix")
    decisions = built.store.read("selections", "openmathmix")
    solutions = built.store.read("solutions", "gsm8k")
    benchmark = (
        built.store.read("eval_benchmarks").filter(pc.field("benchmark") == "gsm8k_test").slice(0, 1).to_pylist()[0]
    )
    target = (
        decisions.filter(pc.field("selected") & (pc.field("kind") == "reasoning")).column("candidate_id")[0].as_py()
    )
    original = solutions.filter(pc.field("sample_id") == target).to_pylist()[0]
    planted = [
        {**original, "sample_id": "planted-contaminated", "question": benchmark["question"]},
        {**original, "sample_id": "planted-duplicate"},
    ]  # same conversation as a selected row
    built.store.write(
        pa.concat_tables([solutions, pa.Table.from_pylist(planted, schema=solutions.schema)]), "solutions", "gsm8k"
    )
    extra = [
        {
            "candidate_id": p["sample_id"],
            "kind": "reasoning",
            "source": "gsm8k",
            "origin": "seed",
            "quality": 1.0,
            "selected": True,
            "selection_rank": 900 + i,
            "min_distance": 0.0,
            "influence_score": None,
            "decision": "planted",
        }
        for i, p in enumerate(planted)
    ]
    rows = decisions.to_pylist()
    built.store.write(pa.Table.from_pylist(rows + extra, schema=decisions.schema), "selections", "openmathmix")
    try:
        result = dg.materialize(
            ASSETS,
            selection=["mixture"],
            partition_key="openmathmix",
            instance=built.instance,
            resources=built.resources,
            raise_on_error=False,
        )
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert not checks["no_benchmark_overlap"].passed and not checks["no_duplicate_rows"].passed
        assert checks["schema"].passed
        assert built.store.read("mixture", "openmathmix").equals(good)  # the good mixture stays
        rejected = built.store.read("mixture_rejected", "openmathmix")
        assert rejected.num_rows == good.num_rows + 2
    finally:
        built.store.write(solutions, "solutions", "gsm8k")
        built.store.write(decisions, "selections", "openmathmix")


def test_trace_prints_the_history_of_a_mixture_row(built):
    mixture = built.store.read("mixture", "openmathmix")
    row = mixture.filter(pc.field("kind") == "reasoning").slice(0, 1).to_pylist()[0]
    env = {**os.environ, "MATHDATA_STORAGE": str(built.root)}
    out = subprocess.run(
        [sys.executable, "-m", "mathdata_pipeline.cli", "trace", row["row_id"], "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    history = json.loads(out)
    assert history["solution"]["sample_id"] == row["sample_id"]
    assert history["seed_problem"]["problem_id"] == row["problem_id"]
    assert history["seed_problem"]["source_record"]
    assert history["selection"]["selected"] is True and history["quality"]["candidate_id"] == row["sample_id"]
    text = subprocess.run(
        [sys.executable, "-m", "mathdata_pipeline.cli", "trace", row["row_id"]],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert "== seed problem" in text and "== QaDS decision" in text
    missing = subprocess.run(
        [sys.executable, "-m", "mathdata_pipeline.cli", "trace", "mx-nope"], capture_output=True, text=True, env=env
    )
    assert missing.returncode == 2 and "no mixture row 'mx-nope'" in missing.stderr


# The references are sampled by the embedded model through llama.cpp; the gradient features, the
# influence scores and the perplexity baseline use `scoring_model`: here the tiny random llama with the
# same SmolLM2 tokenizer (so the same rows fit in 160 tokens), where the 135M weights cost a minute on two
# cores. Deriving the scoring model from the engine profile is tested in influence/test_examples.py.
INFLUENCE_CONFIG = {
    "ops": {
        "reference_responses": {
            "config": {"problems": 2, "samples": 2, "max_tokens": 64, "include_reference_solutions": True}
        },
        "gradient_features": {
            "config": {
                "max_examples": 12,
                "max_length": 160,
                "shard_size": 4,
                "proj_dim": 512,
                "warmup_epochs": 2,
                "warmup_fraction": 0.1,
                "warmup_batch_size": 2,
                "warmup_lr": 1e-3,
            }
        },
        "influence_scores": {"config": {"max_length": 160}},
    }
}
BASELINE_SPECS = ("openmathmix-pruned-perplexity", "openmathmix-pruned-embedding", "openmathmix-pruned-random")


def _selected(store, spec: str) -> set[str]:
    table = store.read("selections", spec).filter(pc.field("kind") == "reasoning").filter(pc.field("selected"))
    return set(table.column("candidate_id").to_pylist())


def test_influence_prunes_the_pruned_spec_and_its_baselines_by_the_same_count(built, tiny_llama):
    config = copy.deepcopy(INFLUENCE_CONFIG)
    config["ops"]["reference_responses"]["config"]["scoring_model"] = str(tiny_llama)
    scores_run = built.run(["reference_responses", "gradient_features", "influence_scores"], config=config)
    assert scores_run.success
    (check,) = scores_run.get_asset_check_evaluations()
    assert check.check_name == "validation_held_out" and check.passed
    features = _materialization(scores_run, "gradient_features")
    assert features["checkpoints"].value == 2 and features["grad_type_train"].value == "adam"
    # 10% of the 40 reasoning candidates warm up; 12 are scored (less any whose prompt fills 160 tokens;
    # the held-out prompts are ~140)
    assert features["warmup_examples"].value == 4 - features["dropped_too_long_warmup"].value > 0
    scores = built.store.read("influence_scores")
    scored = scores.filter(~pc.field("heldout"))
    assert (
        scored.num_rows == 12 - features["dropped_too_long_train"].value > 8
        and pc.min(scored.column("perplexity")).as_py() > 0
    )
    refs = built.store.read("reference_responses")
    assert set(refs.column("template").to_pylist()) == {"chat"}
    assert set(refs.column("scoring_model").to_pylist()) == {str(tiny_llama)}
    assert features["scoring_model"].value == str(tiny_llama)  # the features use the references' model
    solutions = built.store.read_all("solutions", columns=["sample_id", "problem_id"])
    problem = dict(zip(*solutions.to_pydict().values()))
    assert not {problem[i] for i in scored.column("sample_id").to_pylist()} & set(refs.column("problem_id").to_pylist())

    counts = {}
    for spec in ("openmathmix-pruned", *BASELINE_SPECS):
        run = built.run(["selections", "mixture"], spec)
        assert run.success, spec
        counts[spec] = _materialization(run, "selections")
    pruned = counts["openmathmix-pruned"]
    assert pruned["influence_pruned"].value == int(0.25 * pruned["influence_scored"].value) > 0
    base = _selected(built.store, "openmathmix")
    decisions = built.store.read("selections", "openmathmix-pruned")
    gone = [d for d in decisions.column("decision").to_pylist() if d.startswith("pruned by influence (combined")]
    assert len(gone) == pruned["influence_pruned"].value
    assert base - _selected(built.store, "openmathmix-pruned") == {
        r["candidate_id"]
        for r in decisions.to_pylist()
        if r["decision"].startswith(("pruned by influence", "held out"))
    }
    for spec in BASELINE_SPECS:
        assert counts[spec]["influence_pruned"].value == pruned["influence_pruned"].value, spec
        assert len(_selected(built.store, spec)) == len(_selected(built.store, "openmathmix-pruned")), spec
        assert _selected(built.store, spec) < base
