"""DART-Math stages: `difficulty_ledger` (the difficulty pass) and `rejection_samples` (DARS).

Both stream samples through the `llm` resource with the event-driven controller
(`dart/controller.py`): the engine's batch stays full, grading runs beside generation, every
result and verdict is committed to the ledger as it arrives, and the kept samples are chosen by
sample index, so the same seed gives the same table however requests interleave.
"""

import dataclasses
import tempfile
import uuid
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Literal

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from mathdata_pipeline.common.metadata import generation_metadata, markdown_table, table_metadata
from mathdata_pipeline.common.names import path_component
from mathdata_pipeline.common.partitions import seed_sources
from mathdata_pipeline.common.plots import bar_chart
from mathdata_pipeline.common.samples import SampleSink
from mathdata_pipeline.common.templates import TemplateName, get_template
from mathdata_pipeline.dart import dars
from mathdata_pipeline.dart.controller import ControllerReport, peak_rss_mb
from mathdata_pipeline.dart.sampling import (
    DART_SAMPLE_SCHEMA,
    Solver,
    difficulty_table,
    problems_from_pool,
    solve,
    with_targets,
)
from mathdata_pipeline.engines.base import SamplingParams
from mathdata_pipeline.engines.resources import LLMResource
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


class ServedStrategy(Enum):
    """A strategy one sampling run can serve beside others (`dars.SERVABLE`; an Enum so the Dagster
    launchpad offers exactly these; names equal values)."""

    uniform = "uniform"
    prop2diff = "prop2diff"


class RejectionConfig(dg.Config):
    """DARS knobs (see `dart/dars.py`); the solver settings come from `difficulty_ledger`."""

    strategy: Literal["uniform", "prop2diff", "vrt", "band"] = Field(
        default="uniform",
        description="DARS strategy; with serve_strategies, the primary one: its selection is the table's `target` "
        "column and what mixture specs take by default (dart_strategy: primary)",
    )
    serve_strategies: list[ServedStrategy] = Field(
        default_factory=list,
        description="strategies this one run serves besides `strategy` (uniform, prop2diff; `strategy` must be one "
        "of them too, and is served whether listed or not): each question is sampled until the largest of their "
        "targets is met (or n_max), and every strategy's target is written as target_<strategy>, so curation keeps "
        "each strategy's own selection from one set of samples; n_max and strict_stop are shared; empty = "
        "`strategy` alone",
    )
    k_u: int = Field(default=40, ge=1, description="uniform/band: correct samples wanted per question")
    k_p: int = Field(default=192, ge=1, description="prop2diff: correct samples wanted for the hardest question")
    n_max: int = Field(default=2048, ge=1, description="cap on samples per question, difficulty pass included")
    vrt_trials: int = Field(default=52, ge=1, description="vrt: fixed samples per question")
    band_low: float = Field(default=0.0, ge=0.0, le=1.0, description="band: lowest pass rate kept")
    band_high: float = Field(default=1.0, ge=0.0, le=1.0, description="band: highest pass rate kept")
    samples_per_round: int = Field(
        default=1, ge=1, description="rounds controller: samples per open question per round"
    )
    strict_stop: bool = Field(default=False, description="stop at n_correct > target (reference code) instead of >=")
    prop2diff_formula: Literal["max_normalized", "linear"] = Field(
        default="max_normalized", description="prop2diff target formula"
    )
    controller: Literal["stream", "rounds"] = Field(
        default="stream",
        description="stream: top up after every graded sample, keeping the engine's batch full; rounds: the "
        "reference implementation's rounds, each waiting for its slowest sample (for comparison)",
    )
    max_in_flight: int = Field(
        default=0, ge=0, description="samples submitted and not yet graded at most; 0 = the engine's capacity + 25%"
    )
    target_size: int = Field(
        default=0,
        ge=0,
        description="rows wanted from this partition: sets k_u (uniform, band) or k_p (prop2diff) to the smallest "
        "k whose targets, from the difficulty ledger's fail rates, sum to at least this; with serve_strategies "
        "each served strategy gets its own k for this same size, so their selections are of equal size up to "
        "rounding (and n_max hits); 0 = k_u / k_p as given; not for vrt",
    )
    prop2diff_scale: Literal["partition", "all_partitions"] = Field(
        default="partition",
        description="prop2diff (max_normalized): the hardest query that gets k_p is the hardest of this partition, "
        "or of all_partitions: every materialized difficulty ledger together (the paper's query set, MATH train + "
        "GSM8K train; materialize every ledger first, as the targets then depend on them all)",
    )

    @model_validator(mode="after")
    def _size_needs_targets(self) -> "RejectionConfig":
        if self.target_size and self.strategy == "vrt":
            raise ValueError("rejection_samples: target_size needs a strategy with targets (uniform, prop2diff, band)")
        if self.serve_strategies and self.strategy not in dars.SERVABLE:
            raise ValueError(
                f"rejection_samples: serve_strategies needs a primary strategy among {dars.SERVABLE}, "
                f"got strategy {self.strategy!r} (vrt and band run alone)"
            )
        return self

    def dars_config(self, fail_rates: np.ndarray | None = None, fail_scale: float | None = None) -> dars.DarsConfig:
        """The plain `dars.DarsConfig` of these settings, serving `strategy` and `serve_strategies`,
        with `fail_scale` (the whole-set scale of prop2diff, None = this partition's); with
        `target_size`, every served strategy's k is solved from `fail_rates` (the difficulty
        ledger's, in question order) by `dars.sized`."""
        config = dars.DarsConfig(
            strategy=self.strategy,
            k_u=self.k_u,
            k_p=self.k_p,
            n_max=self.n_max,
            vrt_trials=self.vrt_trials,
            samples_per_round=self.samples_per_round,
            band=(self.band_low, self.band_high) if self.strategy == "band" else None,
            strict_stop=self.strict_stop,
            prop2diff_formula=self.prop2diff_formula,
            serve=tuple(ServedStrategy(served).value for served in self.serve_strategies),
            fail_scale=fail_scale,
        )
        if not self.target_size:
            return config
        if fail_rates is None:
            raise ValueError("rejection_samples: target_size needs the difficulty ledger's fail rates")
        return dars.sized(config, fail_rates, self.target_size)


def _solver(config: SolverConfig, llm: LLMResource) -> Solver:
    params = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens)
    return Solver(get_template(config.template), params, config.seed_salt, llm.model_id())


@contextmanager
def _sample_sink(store: TableStore, partition: str, queries: int):
    """Part files of the kept samples: under the storage root when it is local (same disk as the
    table), else in a temporary folder; removed afterwards."""
    name = f"{path_component(partition)}-{uuid.uuid4().hex[:8]}"
    if store.is_local():
        folder = store.local_dir("_parts", "rejection_samples", name, purpose="rejection sampling")
    else:
        folder = Path(tempfile.mkdtemp(prefix=f"mathdata-{name}-"))
    with SampleSink(folder, DART_SAMPLE_SCHEMA, queries) as sink:
        yield sink


def _head(store: TableStore, partition: str) -> pa.Table:
    """The first row group of the written samples (for the preview and column statistics)."""
    with store.path_for("rejection_samples", partition).open("rb") as fh:
        parquet = pq.ParquetFile(fh)
        return parquet.read_row_group(0) if parquet.num_row_groups else parquet.schema_arrow.empty_table()


def _controller_metadata(report: ControllerReport) -> dict:
    return {
        "overshoot": dg.MetadataValue.int(report.overshoot),
        "samples_submitted": dg.MetadataValue.int(report.submitted),
        "verdicts_reused": dg.MetadataValue.int(report.verdicts_reused),
        "verdicts_graded": dg.MetadataValue.int(report.graded),
        "max_in_flight": dg.MetadataValue.int(report.max_in_flight),
        "grader_version": dg.MetadataValue.text(report.extra["grader_version"]),
        "grade_reasons": dg.MetadataValue.json(dict(sorted(report.grade_reasons.items()))),
        "peak_rss_mb": dg.MetadataValue.float(peak_rss_mb()),
    }


def _dars_metadata(report: dict) -> dict:
    levels = sorted(report.get("by_level", {}))
    chart = bar_chart(
        "correct samples per level",
        levels,
        {
            "raw": [report["by_level"][lv]["raw_samples"] for lv in levels],
            "correct": [report["by_level"][lv]["correct_samples"] for lv in levels],
        },
    )
    return {
        "reach_ratio": (
            dg.MetadataValue.float(round(report["reach_ratio"], 4))
            if report["reach_ratio"] is not None
            else dg.MetadataValue.null()
        ),
        "reach_goal": "at least one correct sample" if report["strategy"] == "vrt" else "the query's target",
        "targets_total": int(report["targets_total"]),
        "raw_samples": int(report["raw_samples"]),
        "correct_samples": int(report["correct_samples"]),
        "by_difficulty": dg.MetadataValue.md(markdown_table(report["by_difficulty"], "fail rate")),
        "by_level": dg.MetadataValue.md(markdown_table(report.get("by_level", {}), "level")),
        "stop_reasons": dg.MetadataValue.json(report["stop_reasons"]),
        "by_strategy": dg.MetadataValue.json(report["by_strategy"]),
        **{f"rows/{name}": int(counts["rows"]) for name, counts in report["by_strategy"].items()},
        "per_level_chart": dg.MetadataValue.md(chart),
    }


def _fail_scale(config: RejectionConfig, store: TableStore) -> float | None:
    """Prop2Diff's whole-set scale (the largest fail rate of every difficulty ledger) when the config
    asks for it; None for this partition's own."""
    if config.prop2diff_scale == "partition":
        return None
    return dars.whole_set_scale(
        store.read_all("difficulty_ledger", columns=["fail_rate"]).column("fail_rate").to_numpy(zero_copy_only=False)
    )


@dg.asset(partitions_def=seed_sources, group_name="solutions", kinds={"parquet"}, deps=["question_pool"], pool="gpu")
def difficulty_ledger(
    context: dg.AssetExecutionContext, config: SolverConfig, llm: LLMResource, store: TableStore
) -> dg.MaterializeResult:
    """Per question: n_d graded samples, trials, correct answers, pass rate and fail rate. The
    solver settings are stored with the table for `rejection_samples`."""
    problems = problems_from_pool(
        store.read("question_pool", context.partition_key), max_questions=config.max_questions, salt=config.seed_salt
    )
    with llm.stream(context, ledger_name=f"solver/{context.partition_key}") as stream:
        planner, report = solve(problems, config.n_d, None, _solver(config, llm), stream, log=context.log.info)
    stream.check_error_budget(llm.max_error_share)
    state = planner.state([p.problem_id for p in problems])
    table = difficulty_table(problems, state).replace_schema_metadata({SOLVER_SETTINGS_KEY: config.model_dump_json()})
    path = store.write(table, "difficulty_ledger", context.partition_key)
    bins = np.histogram(table.column("pass_rate").to_numpy(), bins=5, range=(0, 1))[0]
    chart = bar_chart(
        "questions per pass rate", ["0-.2", ".2-.4", ".4-.6", ".6-.8", ".8-1"], {"questions": bins.tolist()}
    )
    return dg.MaterializeResult(
        metadata={
            **table_metadata(table, path),
            **generation_metadata(stream.stats),
            **_controller_metadata(report),
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
    against the reference answer; the difficulty samples are reused (ledger hits, verdicts
    included) and counted. One run can serve several strategies (`serve_strategies`): each
    question is sampled to the largest of their targets and every target is a column. Samples
    stream to part files, so memory stays bounded."""
    partition = context.partition_key
    ledger = store.read("difficulty_ledger", partition)
    solver = SolverConfig.model_validate_json(ledger.schema.metadata[SOLVER_SETTINGS_KEY])
    problems = problems_from_pool(
        store.read("question_pool", partition), max_questions=solver.max_questions, salt=solver.seed_salt
    )
    fail_rates = ledger.column("fail_rate").to_numpy(zero_copy_only=False)
    dars_config = config.dars_config(fail_rates, _fail_scale(config, store))
    with _sample_sink(store, partition, len(problems)) as sink:
        with llm.stream(context, ledger_name=f"solver/{partition}") as stream:
            planner, report = solve(
                problems,
                solver.n_d,
                dars_config,
                _solver(solver, llm),
                stream,
                policy=config.controller,
                max_in_flight=config.max_in_flight,
                sink=sink,
                log=context.log.info,
            )
        stream.check_error_budget(llm.max_error_share)
        state = planner.state([p.problem_id for p in problems])
        sink.write(store.path_for("rejection_samples", partition), transform=with_targets(state))
        rows = sink.rows
    path, head = store.path_for("rejection_samples", partition), _head(store, partition)
    return dg.MaterializeResult(
        metadata={
            **table_metadata(head, path),
            "dagster/row_count": dg.MetadataValue.int(rows),
            "preview_rows": dg.MetadataValue.int(head.num_rows),
            **generation_metadata(stream.stats),
            **_controller_metadata(report),
            **_dars_metadata(dars.summary(state, levels=[p.level for p in problems])),
            "controller": config.controller,
            "dars": dg.MetadataValue.json(
                {**dataclasses.asdict(dars_config), "target_size": config.target_size, "scale": config.prop2diff_scale}
            ),
            "solver": dg.MetadataValue.json(solver.model_dump()),
        }
    )
