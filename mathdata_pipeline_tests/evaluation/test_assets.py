"""End to end through Dagster: two tiny mixtures are fine-tuned (embedded SmolLM2, LoRA, two steps),
scored with the base model as the reference (log-probability batched, accuracy through llama.cpp
and the grader) and compared; the blocking overlap check stops training on a contaminated
mixture; the same config gives the same model and the same scores."""

from __future__ import annotations

from types import SimpleNamespace

import dagster as dg
import pyarrow.compute as pc
import pytest

from mathdata_pipeline.definitions import ASSETS, defs
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.evaluation.assets import compare_weekly_evaluations, compared_specs, evaluate_weekly_mixtures
from mathdata_pipeline.evaluation.compare import RESULT_SCHEMA
from mathdata_pipeline.evaluation.scoring import ITEM_SCHEMA
from mathdata_pipeline.qads.resources import KCenterSelector
from mathdata_pipeline.sources.resources import DataSources
from mathdata_pipeline.storage.resources import TableStore
from mathdata_pipeline_tests.conftest import storage_with_benchmarks
from mathdata_pipeline_tests.evaluation.conftest import tiny_mixture

SPECS = ("openmathmix", "openmathmix-random")
RUN_CONFIG = {
    "sft_model": {
        "config": {
            "use_lora": True,
            "max_steps": 2,
            "per_device_batch": 2,
            "grad_accum": 1,
            "max_length": 160,
            "learning_rate": 0.001,
            "checkpoint_steps": 0,
            "benchmarks": ["gsm8k_test", "math500"],
        }
    },
    "benchmark_scores": {
        "config": {
            "items_per_benchmark": 3,
            "accuracy_items_per_benchmark": 1,
            "max_new_tokens": 32,
            "max_score_tokens": 320,
        }
    },
    "mixture_comparison": {"config": {"only": ["qads-vs-random", "openmathmix-vs-base"], "bootstrap_samples": 500}},
}


@dg.asset
def _finished():
    """A trivial asset whose run provides a real run-success event for the sensor contexts."""


def test_weekly_mixture_runs_of_compared_specs_start_an_evaluation_and_then_a_comparison():
    assert {"evaluation_job", "comparison_job"} <= {job.name for job in defs.resolve_all_job_defs()}
    assert {"openmathmix", "openmathmix-random"} <= set(compared_specs()) and "reasoning-only" not in compared_specs()
    with dg.instance_for_test() as instance:
        finished = dg.materialize([_finished], instance=instance)
        (success,) = instance.all_logs(finished.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)

        def context(job: str, tags: dict, sensor) -> dg.RunStatusSensorContext:
            return dg.build_run_status_sensor_context(
                sensor_name=sensor.name,
                dagster_event=success.dagster_event,
                dagster_instance=instance,
                dagster_run=dg.DagsterRun(job_name=job, run_id="run-1", tags=tags),
            )

        weekly = {"mathdata/trigger": "weekly"}
        request = evaluate_weekly_mixtures(
            context("mixture_job", {**weekly, "dagster/partition": "openmathmix"}, evaluate_weekly_mixtures)
        )
        assert (request.partition_key, request.run_key, request.tags) == ("openmathmix", "openmathmix:run-1", weekly)
        for tags in ({"dagster/partition": "openmathmix"}, {**weekly, "dagster/partition": "reasoning-only"}):
            skipped = evaluate_weekly_mixtures(context("mixture_job", tags, evaluate_weekly_mixtures))
            assert isinstance(skipped, dg.SkipReason)  # a manual run, or a spec no comparison names
        request = compare_weekly_evaluations(context("evaluation_job", weekly, compare_weekly_evaluations))
        assert request.run_key == "comparison:run-1"
        assert isinstance(
            compare_weekly_evaluations(context("evaluation_job", {}, compare_weekly_evaluations)), dg.SkipReason
        )


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, data_root, gsm8k_train, benchmark_storage):
    """Benchmarks and their index, two tiny mixtures, then sft_model, benchmark_scores for both
    specs and mixture_comparison, each a real Dagster run (the benchmarks and their index are the
    session's, copied)."""
    root = storage_with_benchmarks(benchmark_storage, tmp_path_factory.mktemp("storage"))
    store = TableStore(root=str(root))
    resources = {
        "store": store,
        "sources": DataSources(data_dir=str(data_root)),
        "selector": KCenterSelector(),
        "llm": LLMResource(ledger_dir=str(tmp_path_factory.mktemp("ledger")), progress_interval_s=5),
    }
    with dg.instance_for_test() as instance:

        def run(selection, partition=None, raise_on_error=True):
            ops = {k: v for k, v in RUN_CONFIG.items() if k in selection}
            return dg.materialize(
                ASSETS,
                selection=selection,
                partition_key=partition,
                instance=instance,
                resources=resources,
                run_config={"ops": ops},
                raise_on_error=raise_on_error,
            )

        for i, spec in enumerate(SPECS):
            store.write(tiny_mixture(spec, gsm8k_train[6 * i : 6 * i + 6]), "mixture", spec)
        results = {spec: run(["sft_model", "benchmark_scores"], spec) for spec in SPECS}
        results["comparison"] = run(["mixture_comparison"])
        yield SimpleNamespace(store=store, root=root, run=run, results=results)


def _metadata(result, key):
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)]
    return event.materialization.metadata


@pytest.mark.slow
def test_fine_tuned_models_are_served_by_both_runtimes(evaluated):
    for spec in SPECS:
        folder = evaluated.root / "sft_model" / spec
        assert (folder / "hf" / "config.json").is_file() and (folder / "model.gguf").is_file()
        meta = _metadata(evaluated.results[spec], "sft_model")
        assert meta["steps"].value == 2 and meta["tokens_trained"].value > 0
        assert meta["loss_curve"].value.startswith("![") and "cpu" in meta["device"].value
        (check,) = evaluated.results[spec].get_asset_check_evaluations()
        assert check.passed and check.metadata["benchmarks"].value == ["gsm8k_test", "math500"]
    assert (evaluated.root / "sft_model" / "_base" / "embedded" / "model.gguf").is_file()


@pytest.mark.slow
def test_scores_pair_the_same_items_and_the_base_model_is_scored_once(evaluated):
    tables = {spec: evaluated.store.read("benchmark_scores", spec) for spec in SPECS}
    for table in tables.values():
        assert table.schema.equals(ITEM_SCHEMA)
        assert table.num_rows == 2 * 6  # (fine-tuned, base) x 3 items of 2 benchmarks
        assert pc.sum(table.column("accuracy_sampled")).as_py() == 2 * 2  # 1 item of each benchmark
        assert pc.all(pc.less(table.column("mean_logprob"), 0)).as_py()
        sampled = table.filter(pc.field("accuracy_sampled"))
        assert sampled.column("correct").null_count == 0 and all(sampled.column("response").to_pylist())
    items = [set(t.column("item_id").to_pylist()) for t in tables.values()]
    assert items[0] == items[1]
    base = [t.filter(pc.field("model") == "base").sort_by("item_id") for t in tables.values()]
    assert base[0].column("mean_logprob").equals(base[1].column("mean_logprob"))
    tuned = [t.filter(pc.field("model") == "fine-tuned").sort_by("item_id") for t in tables.values()]
    assert not tuned[0].column("mean_logprob").equals(tuned[1].column("mean_logprob"))  # different mixtures
    second = _metadata(evaluated.results[SPECS[1]], "benchmark_scores")
    scored_base = base[1].column("mean_logprob").length() - base[1].column("mean_logprob").null_count
    assert second["logprob_cache_hits"].value == scored_base > 0  # the base model's scores come from the ledger
    too_long = tables[SPECS[1]].filter(pc.field("logprob_target") == "too_long")
    assert second["logprob_too_long"].value == too_long.num_rows > 0  # longer than max_score_tokens: counted, no score
    assert too_long.column("mean_logprob").null_count == too_long.num_rows
    assert "gsm8k_test" in second["by_benchmark"].value and "level" in second["by_level"].value


@pytest.mark.slow
def test_comparison_reports_intervals_verdicts_and_item_changes(evaluated):
    table = evaluated.store.read("mixture_comparison")
    assert table.schema.equals(RESULT_SCHEMA)
    overall = table.filter(pc.field("scope") == "all").to_pylist()
    assert {(r["comparison"], r["measure"]) for r in overall} == {
        (c, m) for c in ("qads-vs-random", "openmathmix-vs-base") for m in ("mean_logprob", "accuracy")
    }
    for row in overall:
        assert row["ci_low"] <= row["difference"] <= row["ci_high"]
        assert row["verdict"] in ("better", "worse", "no detectable difference")
    meta = _metadata(evaluated.results["comparison"], "mixture_comparison")
    assert meta["compared"].value == 2 and meta["plot"].value.startswith("![")
    assert "qads-vs-random: openmathmix " in meta["verdict"].value and "95% CI" in meta["verdict"].value
    items = evaluated.store.read("mixture_comparison_items")
    assert items.num_rows == 2 * 6 and set(items.column("accuracy_change").drop_null().to_pylist()) <= {
        "gained",
        "lost",
        "same",
    }


@pytest.mark.slow
def test_the_same_config_gives_the_same_model_and_scores(evaluated):
    spec = SPECS[0]
    before = evaluated.store.read("benchmark_scores", spec)
    again = evaluated.run(["sft_model", "benchmark_scores"], spec)
    meta = _metadata(again, "sft_model")
    assert meta["reused"].value is True
    assert meta["fingerprint"].value == _metadata(evaluated.results[spec], "sft_model")["fingerprint"].value
    assert evaluated.store.read("benchmark_scores", spec).equals(before)
    assert not evaluated.store.exists("benchmark_scores_previous", spec)  # the same model: nothing to keep


@pytest.mark.slow
def test_a_training_row_overlapping_a_scored_benchmark_blocks_training(evaluated):
    question = evaluated.store.read("eval_benchmarks").filter(pc.field("benchmark") == "gsm8k_test")
    leaked = {"question": question.column("question")[0].as_py(), "answer": "#### 0"}
    evaluated.store.write(tiny_mixture("reasoning-only", [leaked]), "mixture", "reasoning-only")
    result = evaluated.run(["sft_model"], "reasoning-only", raise_on_error=False)
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.metadata["contaminated_rows"].value == 1
    assert not (evaluated.root / "sft_model" / "reasoning-only").exists()
    audit = evaluated.store.read("contamination_audit/sft_model", "reasoning-only")
    assert audit.column("benchmark").to_pylist() == ["gsm8k_test"]
