"""Drawing graded samples for DART: the solver, the difficulty pass and DARS through the
event-driven controller, and the curation of the kept samples.

No Dagster here: the asset passes an open request stream (the `llm` resource's `LedgerStream`).
Sample k of problem p always has the same seed (salt, p, k), so the difficulty pass and DARS share
the ledger: the difficulty samples are reused by DARS as training samples, with their verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.common.samples import SAMPLE_SCHEMA, SampleSink, SampleSpec, sample_row, solve_request
from mathdata_pipeline.common.subsets import solver_subset
from mathdata_pipeline.common.templates import SolveTemplate
from mathdata_pipeline.dart import dars
from mathdata_pipeline.dart.controller import (
    ControllerReport,
    DarsPlanner,
    Policy,
    Stream,
    run_controller,
    sample_reason,
)
from mathdata_pipeline.dart.grading import GradingQueue, grader_version
from mathdata_pipeline.engines.base import Request, Result, SamplingParams, derive_seed
from mathdata_pipeline.engines.ledger import Verdict
from mathdata_pipeline.grading import Grader

# A DART sample row: SAMPLE_SCHEMA plus the grader's reason (`controller.sample_reason`), so a
# symbolic timeout, a truncated response or a failed request is never read as a wrong answer.
DART_SAMPLE_SCHEMA = SAMPLE_SCHEMA.append(pa.field("grade_reason", pa.string()))


@dataclass(frozen=True)
class Problem:
    """What the solver needs of a problem row."""

    problem_id: str
    question: str
    reference_answer: str
    level: str = "unknown"


@dataclass(frozen=True)
class Solver:
    """How samples are drawn: template, sampling parameters, seed salt, and the model and grader
    names written into every sample row."""

    template: SolveTemplate
    params: SamplingParams
    seed_salt: str
    model: str
    grader_name: str = "mathdata-grader"

    def request(self, problem: Problem, sample_index: int) -> Request:
        """The request of sample `sample_index` of `problem` (seed from salt, problem and index);
        the same as `common.samples.solve_request`, with the prompt built once per problem."""
        base = _prompt_request(self.template, self.params, problem.question)
        seed = derive_seed(self.seed_salt, problem.problem_id, sample_index)
        p = base.params
        return Request(SamplingParams(p.temperature, p.top_p, p.max_tokens, p.stop, seed), base.prompt, base.messages)


@lru_cache(maxsize=65536)
def _prompt_request(template: SolveTemplate, params: SamplingParams, question: str) -> Request:
    return solve_request(template, SampleSpec("", question, 0, 0), params)


def sample_round(sample_index: int, n_d: int) -> int:
    """The round a sample belongs to, as the round-based DARS numbered them: 0 for the difficulty
    pass, then one round per further sample of a query."""
    return 0 if sample_index < n_d else sample_index - n_d + 1


def default_in_flight(capacity: int) -> int:
    """Samples to keep submitted and not yet graded: the engine's capacity plus a quarter (at
    least 2) waiting behind it, so the engine never idles while results are graded."""
    return capacity + max(2, capacity // 4)


def solve(
    problems: Sequence[Problem],
    n_d: int,
    config: dars.DarsConfig | None,
    solver: Solver,
    stream: Stream,
    *,
    policy: Policy = "stream",
    max_in_flight: int = 0,
    sink: SampleSink | None = None,
    grader: Grader | None = None,
    log: Callable[[str], None] = print,
    log_interval: float = 30.0,
) -> tuple[DarsPlanner, ControllerReport]:
    """The difficulty pass (`n_d` samples per problem) and, with `config`, DARS, through `stream`,
    every sample graded against its problem's reference answer beside generation.

    Inputs: the problems; `n_d`; the DARS settings (None: the difficulty pass only); the solver;
    an open stream (a `LedgerStream`, whose ledger also keeps the verdicts); `policy` ("stream" or
    "rounds"); `max_in_flight` (0 = `default_in_flight(stream.capacity)`); `sink`, where the kept
    sample rows go (DART_SAMPLE_SCHEMA rows; None: count only); `grader` (default a new `Grader`).
    Output: (the planner with the final counters, the controller's report).
    """
    speculate = stream.capacity > 1  # a sequential engine has no idle slots to fill
    planner = DarsPlanner(len(problems), n_d, config, policy=policy, speculate=speculate)
    own_grader = grader is None
    grader = grader or Grader()
    version = grader_version(grader)

    def keep(query: int, index: int, request: Request, result: Result, verdict: Verdict | None) -> None:
        problem = problems[query]
        spec = SampleSpec(problem.problem_id, problem.question, index, sample_round(index, n_d))
        row = sample_row(
            spec,
            request,
            result,
            model=solver.model,
            template=solver.template.name,
            extracted=verdict.extracted if verdict else None,
            correct=verdict.correct if verdict else None,
            grader=solver.grader_name,
        )
        sink.append(query, index, {**row, "grade_reason": sample_reason(verdict)})

    try:
        with GradingQueue(grader) as grading:
            report = run_controller(
                planner,
                stream,
                grading,
                request_for=lambda query, index: solver.request(problems[query], index),
                reference_for=lambda query: problems[query].reference_answer or "",
                question_for=lambda query: problems[query].question,
                keep=keep if sink is not None else None,
                max_in_flight=max_in_flight or default_in_flight(stream.capacity),
                verdicts=getattr(stream, "ledger", None),
                grader_version=version,
                log=log,
                log_interval=log_interval,
            )
    finally:
        if own_grader:
            grader.close()
    report.extra["grader_version"] = version
    return planner, report


def kept_positions(problem_ids, sample_index, correct, target) -> np.ndarray:
    """Row positions of the samples kept as solutions, ascending: per problem the first `target`
    correct samples in sample-index order (every correct one where the target is 0, as in VRT).
    Inputs: equal-length columns (Arrow arrays or sequences); a null `correct` counts as incorrect."""
    codes = np.asarray(_array(problem_ids).dictionary_encode().indices, dtype=np.int64)
    index = np.asarray(_array(sample_index), dtype=np.int64)
    ok = np.asarray(pc.fill_null(_array(correct), False), dtype=np.int64)
    wanted = np.asarray(_array(target), dtype=np.int64)
    if not len(codes):
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((index, codes))
    ok_sorted, codes_sorted, wanted_sorted = ok[order], codes[order], wanted[order]
    running = np.cumsum(ok_sorted)  # correct samples so far, over all problems
    starts = np.r_[True, codes_sorted[1:] != codes_sorted[:-1]]
    before = np.maximum.accumulate(np.where(starts, running - ok_sorted, 0))  # ... before this problem
    rank = running - before
    keep = (ok_sorted == 1) & ((wanted_sorted == 0) | (rank <= wanted_sorted))
    return np.sort(order[keep])


def _array(column) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks()
    return column if isinstance(column, pa.Array) else pa.array(column)


def curate(samples: pa.Table, strategy: str | None = None) -> pa.Table:
    """The correct samples kept as solutions (see `kept_positions`), in table order. `samples`
    needs problem_id, sample_index, correct and target (as `rejection_samples` writes them);
    `strategy` (a served one) curates by its `target_<strategy>` column instead of the primary's."""
    target = "target" if strategy is None else target_column(strategy)
    positions = kept_positions(*(samples.column(name) for name in ("problem_id", "sample_index", "correct", target)))
    return samples.take(pa.array(positions, pa.int64()))


def problems_from_pool(pool: pa.Table, *, max_questions: int, salt: str) -> list[Problem]:
    """The problems DARS samples: pool rows with a reference answer, optionally a salted subset of
    `max_questions` (0 = all); the level label is "Level <n>" or "unknown"."""
    subset = solver_subset(pool, max_questions=max_questions, salt=salt)
    return [
        Problem(
            r["problem_id"], r["question"], r["reference_answer"], f"Level {r['level']}" if r["level"] else "unknown"
        )
        for r in subset.select(["problem_id", "question", "reference_answer", "level"]).to_pylist()
    ]


def difficulty_table(problems: Sequence[Problem], state: dars.DarsState) -> pa.Table:
    """One row per problem: level, trials, correct samples, pass rate and fail rate."""
    trials, correct = state.n_trials, state.n_correct
    return pa.table(
        {
            "problem_id": [p.problem_id for p in problems],
            "level": [p.level for p in problems],
            "n_trials": trials,
            "n_correct": correct,
            "pass_rate": correct / np.maximum(trials, 1),
            "fail_rate": dars.difficulty_from_samples(trials, correct),
        }
    )


def with_targets(state: dars.DarsState) -> Callable[[pa.Table, np.ndarray], pa.Table]:
    """A `SampleSink.write` transform adding, from the final DARS state, the correct samples wanted
    for the sample's problem: `target` (the primary strategy's, what `curate` keeps) and one
    `target_<strategy>` column per served strategy (`dars.strategy_targets`; the primary's equals
    `target`). Sampling itself went on to the largest of them (or n_max)."""
    columns = {"target": np.asarray(dars.targets(state.fail_rate, replace(state.config, serve=())), dtype=np.int32)}
    for name, wanted in dars.strategy_targets(state.fail_rate, state.config).items():
        columns[target_column(name)] = np.asarray(wanted, dtype=np.int32)

    def add(table: pa.Table, queries: np.ndarray) -> pa.Table:
        for name, wanted in columns.items():
            table = table.append_column(name, pa.array(wanted[queries], pa.int32()))
        return table

    return add


def target_column(strategy: str) -> str:
    """The `rejection_samples` column holding `strategy`'s per-problem target: `target_<strategy>`."""
    return f"target_{strategy}"
