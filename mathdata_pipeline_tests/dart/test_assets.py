"""MuggleMath and DART stages materialized for real on GSM8K seeds with the embedded model,
at tiny sizes; a second run is served entirely from the request ledger."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa
import pytest

from mathdata_pipeline.common.partitions import register_seed_sources
from mathdata_pipeline.definitions import ASSETS
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.qads.resources import KCenterSelector
from mathdata_pipeline.sources.resources import DataSources
from mathdata_pipeline.storage.resources import TableStore
from mathdata_pipeline_tests.conftest import storage_with_benchmarks

pytestmark = pytest.mark.slow
SOLVER = {"template": "chat", "temperature": 0.7, "top_p": 0.95, "max_tokens": 64, "n_d": 2, "max_questions": 3}
RUN_CONFIG = {
    "ops": {
        "augmented_questions": {
            "config": {
                "max_seeds": 1,
                "rewrite_types": ["change_numbers", "add_condition"],
                "questions_per_rewrite": 2,
                "max_tokens": 120,
                "round_profiles": [""],
            }
        },
        "augmented_responses": {"config": {"samples_per_question": 2, "max_tokens": 64}},
        "difficulty_ledger": {"config": SOLVER},
        "rejection_samples": {"config": {"strategy": "prop2diff", "k_p": 1, "n_max": 3}},
    }
}
CHAIN = [
    "augmented_questions",
    "augmented_responses",
    "question_pool",
    "difficulty_ledger",
    "rejection_samples",
    "solutions",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, data_root, benchmark_storage):
    store = TableStore(root=str(storage_with_benchmarks(benchmark_storage, tmp_path_factory.mktemp("storage"))))
    resources = {
        "store": store,
        "sources": DataSources(data_dir=str(data_root)),
        "llm": LLMResource(ledger_dir=str(tmp_path_factory.mktemp("ledger")), progress_interval_s=5),
        "selector": KCenterSelector(),
    }
    with dg.instance_for_test() as instance:
        register_seed_sources(instance)

        def run(selection, source="gsm8k"):
            return dg.materialize(
                ASSETS,
                selection=selection,
                partition_key=source,
                instance=instance,
                resources=resources,
                run_config=RUN_CONFIG,
            )

        yield store, run


@pytest.fixture(scope="module")
def chain(setup):
    store, run = setup
    first = run(["seed_problems", *CHAIN])
    second = run(CHAIN)
    return store, first, second


def _metadata(result, key):
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)]
    return event.materialization.metadata


def test_chain_materializes_with_llm_metadata(chain):
    store, first, _ = chain
    assert first.success
    for key in ("augmented_questions", "augmented_responses", "difficulty_ledger", "rejection_samples"):
        metadata = _metadata(first, key)
        for name in (
            "requests",
            "cache_hits",
            "errors",
            "prompt_tokens",
            "completion_tokens",
            "tokens_per_second",
            "wall_seconds",
        ):
            assert name in metadata, (key, name)
    assert _metadata(first, "augmented_questions")["requests"].value == 2
    checks = {c.asset_key.to_user_string(): c for c in first.get_asset_check_evaluations()}
    assert checks["question_pool"].passed and checks["augmented_questions"].passed


def test_dars_samples_are_graded_and_difficulty_samples_reused(chain):
    store, first, _ = chain
    ledger = store.read("difficulty_ledger", "gsm8k")
    assert ledger.num_rows == 3 and set(ledger.column("n_trials").to_pylist()) == {2}
    samples = store.read("rejection_samples", "gsm8k")
    assert all(
        g == "mathdata-grader"
        for g, e in zip(samples.column("grader").to_pylist(), samples.column("error").to_pylist())
        if e is None
    )
    assert samples.num_rows >= 6 and max(samples.column("sample_index").to_pylist()) <= 2  # n_max = 3 caps trials
    reject = _metadata(first, "rejection_samples")
    assert reject["cache_hits"].value >= 6  # the 3 x 2 difficulty samples came from the ledger
    assert 0.0 <= reject["reach_ratio"].value <= 1.0 and reject["raw_samples"].value == samples.num_rows
    assert sum(reject["grade_reasons"].value.values()) == samples.num_rows
    assert samples.column("grade_reason").null_count == 0


def test_pool_and_solutions_keep_provenance(chain):
    store, _, _ = chain
    pool = store.read("question_pool", "gsm8k")
    origins = set(pool.column("origin").to_pylist())
    assert "seed" in origins
    augmented = pool.filter(pa.array([o == "augmented" for o in pool.column("origin").to_pylist()], pa.bool_()))
    assert all(augmented.column("parent_problem_id").to_pylist())
    solutions = store.read("solutions", "gsm8k")
    assert {"seed"} <= set(solutions.column("origin").to_pylist())
    assert len(set(solutions.column("sample_id").to_pylist())) == solutions.num_rows
    responses = store.read("augmented_responses", "gsm8k")
    assert {"majority_answer", "agreement", "annotation_ok", "kept"} <= set(responses.column_names)


def test_rerun_generates_nothing(chain):
    _, first, second = chain
    assert second.success
    for key in ("augmented_questions", "augmented_responses", "difficulty_ledger", "rejection_samples"):
        metadata = _metadata(second, key)
        assert metadata["cache_hits"].value == metadata["requests"].value, key


def test_math_seeds_run_through_the_same_chain(setup):
    store, run = setup
    result = run(["seed_problems", *CHAIN], source="math")
    assert result.success
    samples = store.read("rejection_samples", "math")
    assert samples.num_rows >= 6 and set(samples.column("template").to_pylist()) == {"chat"}
    levels = _metadata(result, "rejection_samples")["by_level"].value  # a markdown table, one row per level
    rows = [line.split("|")[1].strip() for line in levels.splitlines()[2:]]
    assert rows and all(name.startswith("Level") or name == "unknown" for name in rows)
    seeds = set(store.read("seed_problems", "math").column("problem_id").to_pylist())
    augmented = store.read("augmented_questions", "math")
    assert set(augmented.column("parent_problem_id").to_pylist()) <= seeds
    assert all(m.startswith("mugglemath:") for m in augmented.column("method").to_pylist())
