"""DART-Math stages: `difficulty_ledger` (the difficulty pass) and `rejection_samples` (DARS)."""

from typing import Literal

import dagster as dg
import numpy as np
from pydantic import Field

from mathdata_pipeline.common.metadata import generation_metadata, markdown_table, table_metadata
from mathdata_pipeline.common.partitions import seed_sources
from mathdata_pipeline.common.plots import bar_chart
from mathdata_pipeline.common.templates import TemplateName, get_template
from mathdata_pipeline.dart import dars
from mathdata_pipeline.dart.sampling import (
    Solver,
    difficulty_round,
    difficulty_table,
    problems_from_pool,
    run_dars,
    with_targets,
)
from mathdata_pipeline.engines.base import SamplingParams
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.engines.runner import GenerationStats
from mathdata_pipeline.grading import Grader
from mathdata_pipeline.storage.resources import TableStore

SOLVER_SETTINGS_KEY = b"mathdata.solver"


class SolverConfig(dg.Config):
    """Who solves and how, stated once: `difficulty_ledger` records these settings in its table and
    `rejection_samples` reads them from there, so the two always draw the same samples (the
    difficulty samples are ledger hits for DARS). Defaults are DART-Math's; `configs/demo.yaml`
    shrinks them for the CPU model."""

    template: TemplateName = Field(default="deepseekmath", description="prompt template (DART-Math: deepseekmath)")
    temperature: float = Field(default=1.6, ge=0.0, le=5.0, description="sampling temperature (DART-Math: 1.6)")
    top_p: float = Field(default=0.95, gt=0.0, le=1.0, description="nucleus sampling (DART-Math: 0.95)")
    max_tokens: int = Field(default=2048, ge=1, description="new tokens per sample (DART-Math: 2048)")
    seed_salt: str = Field(default="dars", description="salt of every sample's seed and of the question subset")
    n_d: int = Field(default=8, ge=1, description="difficulty samples per question (reused by DARS)")
    max_questions: int = Field(default=0, ge=0, description="a salted subset of this many questions; 0 = all")


class RejectionConfig(dg.Config):
    """DARS knobs (see `dart/dars.py`); the solver settings come from `difficulty_ledger`."""

    strategy: Literal["uniform", "prop2diff", "vrt", "band"] = Field(default="uniform", description="DARS strategy")
    k_u: int = Field(default=40, ge=1, description="uniform/band: correct samples wanted per question")
    k_p: int = Field(default=192, ge=1, description="prop2diff: correct samples wanted for the hardest question")
    n_max: int = Field(default=2048, ge=1, description="cap on samples per question, difficulty pass included")
    vrt_trials: int = Field(default=52, ge=1, description="vrt: fixed samples per question")
    band_low: float = Field(default=0.0, ge=0.0, le=1.0, description="band: lowest pass rate kept")
    band_high: float = Field(default=1.0, ge=0.0, le=1.0, description="band: highest pass rate kept")
    samples_per_round: int = Field(default=1, ge=1, description="samples per open question per round")
    strict_stop: bool = Field(default=False, description="stop at n_correct > target (reference code) instead of >=")
    prop2diff_formula: Literal["max_normalized", "linear"] = Field(
        default="max_normalized", description="prop2diff target formula"
    )

    def dars_config(self) -> dars.DarsConfig:
        """The plain `dars.DarsConfig` of these settings."""
        return dars.DarsConfig(
            strategy=self.strategy,
            k_u=self.k_u,
            k_p=self.k_p,
            n_max=self.n_max,
            vrt_trials=self.vrt_trials,
            samples_per_round=self.samples_per_round,
            band=(self.band_low, self.band_high) if self.strategy == "band" else None,
            strict_stop=self.strict_stop,
            prop2diff_formula=self.prop2diff_formula,
        )


def _solver(
    config: SolverConfig,
    llm: LLMResource,
    context: dg.AssetExecutionContext,
    grader: Grader,
    stats: list[GenerationStats],
) -> Solver:
    params = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens)
    generate = llm.generate_fn(context, stats, ledger_name=f"solver/{context.partition_key}")
    return Solver(get_template(config.template), params, config.seed_salt, llm.model_id(), generate, grader.grade_many)


@dg.asset(partitions_def=seed_sources, group_name="solutions", kinds={"parquet"}, deps=["question_pool"], pool="gpu")
def difficulty_ledger(
    context: dg.AssetExecutionContext, config: SolverConfig, llm: LLMResource, store: TableStore
) -> dg.MaterializeResult:
    """Per question: n_d graded samples, trials, correct answers, pass rate and fail rate. The
    solver settings are stored with the table for `rejection_samples`."""
    problems = problems_from_pool(
        store.read("question_pool", context.partition_key), max_questions=config.max_questions, salt=config.seed_salt
    )
    stats: list[GenerationStats] = []
    with Grader() as grader:
        samples = difficulty_round(problems, config.n_d, _solver(config, llm, context, grader, stats))
    table = difficulty_table(problems, samples).replace_schema_metadata({SOLVER_SETTINGS_KEY: config.model_dump_json()})
    path = store.write(table, "difficulty_ledger", context.partition_key)
    bins = np.histogram(table.column("pass_rate").to_numpy(), bins=5, range=(0, 1))[0]
    chart = bar_chart(
        "questions per pass rate", ["0-.2", ".2-.4", ".4-.6", ".6-.8", ".8-1"], {"questions": bins.tolist()}
    )
    return dg.MaterializeResult(
        metadata={
            **table_metadata(table, path),
            **generation_metadata(GenerationStats.combine(stats)),
            "pass_rate_histogram": dg.MetadataValue.md(chart),
            "solver": dg.MetadataValue.json(config.model_dump()),
            "mean_pass_rate": round(float(np.mean(table.column("pass_rate").to_numpy())) if table.num_rows else 0.0, 4),
        }
    )


@dg.asset(
    partitions_def=seed_sources, group_name="solutions", kinds={"parquet"}, deps=["difficulty_ledger"], pool="gpu"
)
def rejection_samples(
    context: dg.AssetExecutionContext, config: RejectionConfig, llm: LLMResource, store: TableStore
) -> dg.MaterializeResult:
    """DARS over the questions of `difficulty_ledger`, with its solver settings: every sample graded
    against the reference answer; the difficulty samples are reused (ledger hits) and counted."""
    ledger = store.read("difficulty_ledger", context.partition_key)
    solver = SolverConfig.model_validate_json(ledger.schema.metadata[SOLVER_SETTINGS_KEY])
    problems = problems_from_pool(
        store.read("question_pool", context.partition_key), max_questions=solver.max_questions, salt=solver.seed_salt
    )
    stats: list[GenerationStats] = []
    with Grader() as grader:
        samples, state = run_dars(
            problems,
            config.dars_config(),
            solver.n_d,
            _solver(solver, llm, context, grader, stats),
            log=context.log.info,
        )
    table = with_targets(samples, state)
    path = store.write(table, "rejection_samples", context.partition_key)
    report = dars.summary(state, levels=[p.level for p in problems])
    levels = sorted(report.get("by_level", {}))
    chart = bar_chart(
        "correct samples per level",
        levels,
        {
            "raw": [report["by_level"][lv]["raw_samples"] for lv in levels],
            "correct": [report["by_level"][lv]["correct_samples"] for lv in levels],
        },
    )
    return dg.MaterializeResult(
        metadata={
            **table_metadata(table, path),
            **generation_metadata(GenerationStats.combine(stats)),
            "reach_ratio": round(float(report["reach_ratio"] or 0.0), 4),
            "raw_samples": int(report["raw_samples"]),
            "correct_samples": int(report["correct_samples"]),
            "solver": dg.MetadataValue.json(solver.model_dump()),
            "by_difficulty": dg.MetadataValue.md(markdown_table(report["by_difficulty"], "fail rate")),
            "by_level": dg.MetadataValue.md(markdown_table(report.get("by_level", {}), "level")),
            "stop_reasons": dg.MetadataValue.json(report["stop_reasons"]),
            "per_level_chart": dg.MetadataValue.md(chart),
        }
    )
