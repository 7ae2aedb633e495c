"""Evaluation stages: `sft_model[spec]` (fine-tune on a mixture), `benchmark_scores[spec]` (the
fine-tuned model and, once, the base model on the benchmarks), `mixture_comparison` (paired
differences between specs, with intervals and verdicts); and the jobs and sensors that rebuild
them after the weekly mixtures."""

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import dagster as dg
import pyarrow as pa
from pydantic import Field

from mathdata_pipeline.automation import FAMILY_JOBS, mixture_job
from mathdata_pipeline.common.metadata import table_metadata
from mathdata_pipeline.common.partitions import mixture_specs
from mathdata_pipeline.common.paths import config_dir
from mathdata_pipeline.common.resources import ComputeConfig
from mathdata_pipeline.engines.base import Request
from mathdata_pipeline.engines.ledger import RequestLedger
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.engines.runner import GenerateFn, GenerationStats, Result, run_requests
from mathdata_pipeline.evaluation.checks import sft_overlap_check_spec, training_overlap_check
from mathdata_pipeline.evaluation.compare import ITEM_CHANGE_SCHEMA, RESULT_SCHEMA, compare_all
from mathdata_pipeline.evaluation.comparisons import load_comparisons
from mathdata_pipeline.evaluation.conversations import mixture_conversations
from mathdata_pipeline.evaluation.items import check_benchmarks, known_benchmarks, select_items
from mathdata_pipeline.evaluation.metadata import comparison_metadata, scores_metadata, sft_metadata
from mathdata_pipeline.evaluation.scoring import (
    ScoreSettings,
    another_model,
    load_trained,
    models_to_score,
    score_models,
)
from mathdata_pipeline.evaluation.sft import SftSettings, train_sft
from mathdata_pipeline.grading import Grader
from mathdata_pipeline.mixtures.spec import mixture_names
from mathdata_pipeline.storage.resources import TableStore


class SftConfig(dg.Config):
    """Supervised fine-tuning on a mixture's conversations. Defaults: DART-Math's recipe (full
    fine-tuning, lr 5e-5, batch 4 x 16, cosine, 4096 tokens, one epoch); `configs/demo.yaml` runs
    a few LoRA steps on the CPU."""

    base: str = Field(default="embedded", description="model to fine-tune: embedded, a folder or a hub id")
    template: Literal["chat", "alpaca"] = Field(
        default="chat", description="conversation format: the model's chat template, or DART-Math's Alpaca"
    )
    epochs: float = Field(default=1.0, gt=0, description="passes over the mixture (when max_steps is 0)")
    max_steps: int = Field(default=0, ge=0, description="optimizer steps; 0 = `epochs` passes")
    learning_rate: float = Field(default=5e-5, gt=0, description="peak learning rate (cosine schedule)")
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1, description="share of the steps spent warming up")
    per_device_batch: int = Field(default=4, ge=1, description="conversations per device batch")
    grad_accum: int = Field(default=16, ge=1, description="batches accumulated per optimizer step")
    max_length: int = Field(default=4096, ge=16, description="tokens per conversation (longer ones are cut)")
    use_lora: bool = Field(default=False, description="train LoRA adapters (merged afterwards) instead of all weights")
    lora_r: int = Field(default=16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(default=32, ge=1, description="LoRA scale")
    checkpoint_steps: int = Field(default=50, ge=0, description="steps between checkpoints a killed run resumes from")
    gguf_template: str = Field(
        default="embedded", description="GGUF whose metadata the llama.cpp export copies (embedded, a path, or empty)"
    )
    benchmarks: list[str] = Field(
        default_factory=list, description="benchmarks the model will be scored on (overlap-checked); empty = all"
    )
    seed: int = Field(default=0, description="training seed")

    def settings(self) -> SftSettings:
        """The plain fine-tuning settings."""
        return SftSettings(**self.model_dump(exclude={"benchmarks"}))


class ScoresConfig(dg.Config):
    """Which items and how: every item of the benchmarks sft_model checked by default (METHODS.md
    §6.6: greedy, 0-shot, 2048 new tokens, the DART-style grader); the demo samples a few."""

    benchmarks: list[str] = Field(
        default_factory=list, description="a subset of the benchmarks sft_model checked; empty = all of them"
    )
    items_per_benchmark: int = Field(default=0, ge=0, description="items per benchmark for log-probability; 0 = all")
    accuracy_items_per_benchmark: int = Field(
        default=0, ge=0, description="of those, items per benchmark answered and graded; 0 = all"
    )
    max_new_tokens: int = Field(default=2048, ge=1, description="tokens per greedy answer")
    max_score_tokens: int = Field(default=4096, ge=16, description="longest prompt + solution scored (longer: counted)")
    score_batch_tokens: int = Field(default=8192, ge=16, description="padded tokens per scoring forward pass")
    reference: bool = Field(default=True, description="also score the base model (once) as the reference")
    sample_salt: str = Field(default="benchmark_scores", description="picks the items; the same salt, the same items")
    compute: ComputeConfig = Field(
        default_factory=ComputeConfig, description="log-probabilities: local, or on Ray workers (README Scale out)"
    )

    def settings(self, trained: dict) -> ScoreSettings:
        """The scoring settings for a model trained with `trained` (its training.json config)."""
        names = check_benchmarks(self.benchmarks, trained["benchmarks"], what="benchmark_scores.benchmarks")
        return ScoreSettings(
            template=trained["template"],
            max_new_tokens=self.max_new_tokens,
            max_score_tokens=self.max_score_tokens,
            batch_tokens=self.score_batch_tokens,
            benchmarks=tuple(names),
            per_benchmark=self.items_per_benchmark,
            accuracy_per_benchmark=self.accuracy_items_per_benchmark,
            salt=self.sample_salt,
        )


class ComparisonConfig(dg.Config):
    """Which comparisons (configs/comparisons.yaml) and how the intervals are drawn."""

    comparisons_file: str = Field(default="comparisons.yaml", description="file in the config folder")
    only: list[str] = Field(default_factory=list, description="names of the comparisons to make; empty = all")
    bootstrap_samples: int = Field(default=2000, ge=100, le=100000, description="paired-bootstrap resamples")
    seed: int = Field(default=0, description="seed of the bootstrap")
    primary_measure: Literal["mean_logprob", "accuracy"] = Field(
        default="mean_logprob", description="the measure that leads each verdict line"
    )


@dg.asset(
    partitions_def=mixture_specs,
    group_name="evaluation",
    kinds={"pytorch"},
    deps=["mixture", "eval_benchmarks"],
    check_specs=[sft_overlap_check_spec()],
    pool="gpu",
)
def sft_model(context: dg.AssetExecutionContext, config: SftConfig, store: TableStore) -> dg.MaterializeResult:
    """The base model fine-tuned on this spec's mixture (assistant turns only), under
    `<storage>/sft_model/<spec>/` as `hf/` and `model.gguf`. Not trained, and the previous model
    kept, when a training row overlaps a benchmark it will be scored on (a blocking check)."""
    spec = context.partition_key
    mixture = store.read("mixture", spec)
    known = known_benchmarks(store.read("eval_benchmarks", columns=["benchmark"]))
    benchmarks = check_benchmarks(config.benchmarks, known, what="sft_model.benchmarks")
    check = training_overlap_check(store, mixture, benchmarks, spec)
    if not check.passed:
        context.log.error(f"sft_model[{spec}] not trained: {check.description}; the previous model stays")
        return dg.MaterializeResult(metadata={"trained": False}, check_results=[check])
    with store.folder("sft_model", spec, mode="update") as model_dir:
        run = train_sft(
            mixture_conversations(mixture),
            model_dir,
            config.settings(),
            record={"benchmarks": benchmarks, "mixture": spec},
            log=context.log.info,
        )
    return dg.MaterializeResult(metadata=sft_metadata(run, spec), check_results=[check])


def _generate_for(context: dg.AssetExecutionContext, llm: LLMResource, stats: list[GenerationStats]):
    """`model_dir -> generate`: greedy answers through the engine layer (the llm resource's engine
    serving that model, ledger `benchmark_scores`). A failed request is a row of the table (its
    error counted), never a failed asset: an empty answer is a wrong answer, not a fault."""

    def for_model(model_dir: Path) -> GenerateFn:
        def generate(requests: Sequence[Request], row_ids: Sequence[str] | None = None) -> list[Result]:
            with RequestLedger(llm.ledger_path("benchmark_scores")) as ledger:
                results, run_stats = run_requests(
                    llm.engine(model_dir=model_dir),
                    ledger,
                    requests,
                    row_ids=row_ids,
                    log=context.log.info,
                    progress_interval=llm.progress_interval_s,
                    max_error_share=1.0,
                )
            stats.append(run_stats)
            return results

        return generate

    return for_model


def _keep_previous(store: TableStore, table: pa.Table, spec: str) -> None:
    """Before a new model's scores replace the old ones, keep the old ones as
    `benchmark_scores_previous[spec]` (what `<spec>@previous` compares against)."""
    old = store.read_if_exists("benchmark_scores", spec)
    if old is not None and another_model(old, table):
        store.write(old, "benchmark_scores_previous", spec)


@dg.asset(
    partitions_def=mixture_specs,
    group_name="evaluation",
    kinds={"parquet"},
    deps=["sft_model", "eval_benchmarks"],
    pool="gpu",
)
def benchmark_scores(
    context: dg.AssetExecutionContext, config: ScoresConfig, llm: LLMResource, store: TableStore
) -> dg.MaterializeResult:
    """Per item, for the fine-tuned model and the base model: the mean log-probability per token of
    the reference solution (batched transformers) and, on the accuracy sample, the greedy answer
    generated through the engine layer and graded; summaries with 95% intervals per benchmark,
    MATH level and subject."""
    spec = context.partition_key
    root = store.fetch_folder("sft_model", spec).parent  # `_base/` (the reference export) stays local
    trained = load_trained(root, spec)
    settings = config.settings(trained.config)
    items = select_items(
        store.read("eval_benchmarks"),
        settings.benchmarks,
        settings.per_benchmark,
        settings.accuracy_per_benchmark,
        settings.salt,
    )
    models = models_to_score(root, spec, trained, reference=config.reference)
    stats: list[GenerationStats] = []
    with Grader() as grader, RequestLedger(llm.ledger_path("benchmark_logprob")) as ledger:
        table, logprob_stats = score_models(
            spec,
            items,
            models,
            settings,
            ledger=ledger,
            generate_for=_generate_for(context, llm, stats),
            grade=grader.grade_many,
            release=llm.close_engine,
            log=context.log.info,
            compute=config.compute.ray(),
        )
    llm.close_engine()
    _keep_previous(store, table, spec)
    path = store.write(table, "benchmark_scores", spec)
    metadata = scores_metadata(table, logprob_stats, GenerationStats.combine(stats))
    return dg.MaterializeResult(metadata={**table_metadata(table, path), **metadata})


@dg.asset(
    group_name="evaluation",
    kinds={"parquet"},
    deps=[dg.AssetDep("benchmark_scores", partition_mapping=dg.AllPartitionMapping())],
)
def mixture_comparison(
    context: dg.AssetExecutionContext, config: ComparisonConfig, store: TableStore
) -> dg.MaterializeResult:
    """Every pair of configs/comparisons.yaml scored on the same items: the paired difference of
    each measure with a paired-bootstrap 95% interval, a plot and a one-line verdict per pair;
    per-item changes in `mixture_comparison_items`."""
    comparisons = load_comparisons(config_dir() / config.comparisons_file, config.only)
    results, skipped = compare_all(
        comparisons,
        store.read_if_exists,
        samples=config.bootstrap_samples,
        seed=config.seed,
        primary=config.primary_measure,
    )
    for reason in skipped:
        context.log.warning(f"skipped {reason}")
    if not results:
        raise ValueError("no comparison has scores on both sides: " + "; ".join(skipped))
    for result in results:
        context.log.info(result.verdict)
    table = pa.Table.from_pylist([row for r in results for row in r.rows], schema=RESULT_SCHEMA)
    path = store.write(table, "mixture_comparison")
    store.write(pa.concat_tables([r.items for r in results]).cast(ITEM_CHANGE_SCHEMA), "mixture_comparison_items")
    return dg.MaterializeResult(metadata={**table_metadata(table, path), **comparison_metadata(results, skipped)})


evaluation_job = FAMILY_JOBS["evaluation_job"]
comparison_job = FAMILY_JOBS["comparison_job"]


def compared_specs(path: Path | None = None) -> list[str]:
    """The mixture specs that configs/comparisons.yaml (or `path`) compares and that exist."""
    named = {spec for c in load_comparisons(path or config_dir() / "comparisons.yaml") for spec in c.specs()}
    return sorted(named & set(mixture_names()))


def _weekly(run: dg.DagsterRun) -> bool:
    return run.tags.get("mathdata/trigger") == "weekly"


@dg.run_status_sensor(
    name="evaluate_weekly_mixtures",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[mixture_job],
    request_job=evaluation_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After weekly_mixtures rebuilds a spec that a comparison names: fine-tune and score it.",
)
def evaluate_weekly_mixtures(context: dg.RunStatusSensorContext):
    """One evaluation run per successful weekly mixture run of a compared spec."""
    run = context.dagster_run
    spec = run.tags.get("dagster/partition")
    if not _weekly(run) or spec not in compared_specs():
        return dg.SkipReason(f"run {run.run_id}: not a weekly mixture of a compared spec ({spec})")
    return dg.RunRequest(run_key=f"{spec}:{run.run_id}", partition_key=spec, tags={"mathdata/trigger": "weekly"})


@dg.run_status_sensor(
    name="compare_weekly_evaluations",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[evaluation_job],
    request_job=comparison_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each weekly evaluation run: rebuild mixture_comparison (cheap) with the newest scores.",
)
def compare_weekly_evaluations(context: dg.RunStatusSensorContext):
    """One comparison run per successful weekly evaluation run."""
    run = context.dagster_run
    if not _weekly(run):
        return dg.SkipReason(f"run {run.run_id}: not a weekly evaluation")
    return dg.RunRequest(run_key=f"comparison:{run.run_id}", tags={"mathdata/trigger": "weekly"})


SENSORS = [evaluate_weekly_mixtures, compare_weekly_evaluations]
