"""DART-Math stages: `question_pool`, `difficulty_ledger`, `rejection_samples`, `solutions`."""

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.assets.contamination import contamination_check, contamination_check_spec
from mathdata_pipeline.assets.metadata import counts_metadata, generation_metadata, table_metadata
from mathdata_pipeline.assets.partitions import seed_sources
from mathdata_pipeline.assets.plots import bar_chart
from mathdata_pipeline.engines.base import SamplingParams
from mathdata_pipeline.engines.runner import GenerationStats
from mathdata_pipeline.methods import dars
from mathdata_pipeline.methods.grading import Grader
from mathdata_pipeline.methods.pool import build_question_pool, solver_subset
from mathdata_pipeline.methods.rejection import Problem, Solver, counts, difficulty_round, run_dars
from mathdata_pipeline.methods.solutions import solution_rows
from mathdata_pipeline.methods.templates import get_template
from mathdata_pipeline.resources.llm import LLMResource
from mathdata_pipeline.resources.table_store import TableStore


class SolverConfig(dg.Config):
    """Who solves and how. Defaults are DART-Math's (temperature 1.6, top_p 0.95, 2048 tokens,
    `deepseekmath` prompt); `configs/demo.yaml` shrinks them for the CPU model. Use the same values
    for `difficulty_ledger` and `rejection_samples`, so difficulty samples are reused."""

    template: str = "deepseekmath"
    temperature: float = 1.6
    top_p: float = 0.95
    max_tokens: int = 2048
    seed_salt: str = "dars"
    n_d: int = 8
    max_questions: int = 0


class RejectionConfig(SolverConfig):
    """DARS knobs (see `methods/dars.py`): strategy uniform | prop2diff | vrt | band."""

    strategy: str = "uniform"
    k_u: int = 40
    k_p: int = 192
    n_max: int = 2048
    vrt_trials: int = 52
    band_low: float = 0.0
    band_high: float = 1.0
    samples_per_round: int = 1
    strict_stop: bool = False
    prop2diff_formula: str = "max_normalized"


def _solver(config: SolverConfig, llm: LLMResource, context: dg.AssetExecutionContext, grader: Grader,
            stats: list[GenerationStats]) -> Solver:
    def generate(requests, row_ids):
        results, run_stats = llm.generate(context, requests, ledger_name=f"solver/{context.partition_key}", row_ids=row_ids)
        stats.append(run_stats)
        return results

    params = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens)
    return Solver(get_template(config.template), params, config.seed_salt, llm.engine().info.model_id,
                  generate, grader.grade_many)


def _problems(store: TableStore, source: str, config: SolverConfig) -> list[Problem]:
    pool = solver_subset(store.read("question_pool", source), max_questions=config.max_questions, salt=config.seed_salt)
    return [Problem(r["problem_id"], r["question"], r["reference_answer"], f"Level {r['level']}" if r["level"] else "unknown")
            for r in pool.to_pylist()]


def _synthesized_for(store: TableStore, asset: str, source: str) -> pa.Table | None:
    """Every shard of a ScaleQuest table, limited to rows of `source` (questions carry their pool
    source; responses are matched to the pool later); None when no shard exists."""
    if not store.root_path().joinpath(asset).exists():
        return None
    table = store.read_all(asset)
    return table.filter(pc.field("source") == source) if "source" in table.column_names else table


@dg.asset(partitions_def=seed_sources, group_name="solutions", kinds={"parquet"},
          deps=["seed_problems", "augmented_questions", "augmented_responses", "contamination_index",
                dg.AssetDep("synthesized_questions", partition_mapping=dg.AllPartitionMapping())],
          check_specs=[contamination_check_spec("question_pool", blocking=True)])
def question_pool(context: dg.AssetExecutionContext, store: TableStore) -> dg.MaterializeResult:
    """Seeds plus augmented and synthesized questions of one source: deduplicated, with
    provenance, and without any question that overlaps a benchmark. What rejection sampling reads."""
    source = context.partition_key
    parts = {name: store.read(name, source) for name in ("seed_problems", "augmented_questions", "augmented_responses")
             if store.exists(name, source)}
    synthesized = _synthesized_for(store, "synthesized_questions", source)
    if synthesized is not None:
        parts["synthesized_questions"] = synthesized
    table, dropped = build_question_pool(parts, store.read("contamination_index"))
    path = store.write(table, "question_pool", source)
    check = contamination_check(store, table, asset_key="question_pool", partition=source,
                                id_column="problem_id", text_column="question")
    origins = dict(zip(*np.unique(table.column("origin").to_numpy(zero_copy_only=False), return_counts=True)))
    return dg.MaterializeResult(metadata={**table_metadata(table, path), **counts_metadata(dropped),
                                          **counts_metadata({f"origin/{k}": v for k, v in origins.items()})},
                                check_results=[check])


@dg.asset(partitions_def=seed_sources, group_name="solutions", kinds={"parquet"}, deps=["question_pool"], pool="gpu")
def difficulty_ledger(context: dg.AssetExecutionContext, config: SolverConfig, llm: LLMResource,
                      store: TableStore) -> dg.MaterializeResult:
    """Per question: n_d graded samples, trials, correct answers, pass rate and fail rate."""
    problems = _problems(store, context.partition_key, config)
    stats: list[GenerationStats] = []
    with Grader() as grader:
        samples = difficulty_round(problems, config.n_d, _solver(config, llm, context, grader, stats))
    ids = [p.problem_id for p in problems]
    trials, correct = counts(samples, ids)
    table = pa.table({"problem_id": ids, "level": [p.level for p in problems], "n_trials": trials, "n_correct": correct,
                      "pass_rate": correct / np.maximum(trials, 1), "fail_rate": dars.difficulty_from_samples(trials, correct)})
    path = store.write(table, "difficulty_ledger", context.partition_key)
    bins = np.histogram(table.column("pass_rate").to_numpy(), bins=5, range=(0, 1))[0]
    chart = bar_chart("questions per pass rate", ["0-.2", ".2-.4", ".4-.6", ".6-.8", ".8-1"], {"questions": bins.tolist()})
    return dg.MaterializeResult(metadata={**table_metadata(table, path), **generation_metadata(GenerationStats.combine(stats)),
                                          "pass_rate_histogram": chart,
                                          "mean_pass_rate": float(np.mean(correct / np.maximum(trials, 1)) if ids else 0.0)})


@dg.asset(partitions_def=seed_sources, group_name="solutions", kinds={"parquet"}, deps=["difficulty_ledger"], pool="gpu")
def rejection_samples(context: dg.AssetExecutionContext, config: RejectionConfig, llm: LLMResource,
                      store: TableStore) -> dg.MaterializeResult:
    """DARS rounds over the question pool: every sample graded against the reference answer.
    The difficulty round's samples are reused (ledger hits) and counted toward targets."""
    problems = _problems(store, context.partition_key, config)
    dars_config = dars.DarsConfig(strategy=config.strategy, k_u=config.k_u, k_p=config.k_p, n_max=config.n_max,
                                  vrt_trials=config.vrt_trials, samples_per_round=config.samples_per_round,
                                  band=(config.band_low, config.band_high) if config.strategy == "band" else None,
                                  strict_stop=config.strict_stop, prop2diff_formula=config.prop2diff_formula)
    stats: list[GenerationStats] = []
    with Grader() as grader:
        samples, state = run_dars(problems, dars_config, config.n_d, _solver(config, llm, context, grader, stats),
                                  log=context.log.info)
    target = {qid: int(state.target[i]) for qid, i in state.index.items()}
    samples = samples.append_column("target", pa.array([target[p] for p in samples.column("problem_id").to_pylist()], pa.int32()))
    path = store.write(samples, "rejection_samples", context.partition_key)
    report = dars.summary(state, levels=[p.level for p in problems])
    levels = sorted(report.get("by_level", {}))
    chart = bar_chart("correct samples per level", levels,
                      {"raw": [report["by_level"][lv]["raw_samples"] for lv in levels],
                       "correct": [report["by_level"][lv]["correct_samples"] for lv in levels]})
    return dg.MaterializeResult(metadata={
        **table_metadata(samples, path), **generation_metadata(GenerationStats.combine(stats)),
        "reach_ratio": float(report["reach_ratio"] or 0.0), "raw_samples": int(report["raw_samples"]),
        "correct_samples": int(report["correct_samples"]), "by_difficulty": dg.MetadataValue.json(report["by_difficulty"]),
        "by_level": dg.MetadataValue.json(report.get("by_level", {})), "stop_reasons": dg.MetadataValue.json(report["stop_reasons"]),
        "per_level_chart": chart})


@dg.asset(partitions_def=seed_sources, group_name="solutions", kinds={"parquet"},
          deps=["rejection_samples", "augmented_responses", "question_pool",
                dg.AssetDep("synthesized_responses", partition_mapping=dg.AllPartitionMapping())])
def solutions(context: dg.AssetExecutionContext, store: TableStore) -> dg.MaterializeResult:
    """Curated question–solution pairs of one source: the first `target` correct DARS samples per
    question, the kept MuggleMath responses, and the seed reference solutions, each with its origin."""
    source = context.partition_key
    pool = store.read("question_pool", source)
    samples = store.read("rejection_samples", source) if store.exists("rejection_samples", source) else None
    augmented = store.read("augmented_responses", source) if store.exists("augmented_responses", source) else None
    table, counts_ = solution_rows(pool, samples, augmented, _synthesized_for(store, "synthesized_responses", source))
    path = store.write(table, "solutions", source)
    origins = pc.value_counts(table.column("origin")).to_pylist() if table.num_rows else []
    return dg.MaterializeResult(metadata={**table_metadata(table, path), **counts_metadata(counts_),
                                          **counts_metadata({f"origin/{o['values']}": o['counts'] for o in origins})})
