"""Drawing graded samples and running DARS rounds, given an LLM call and a grader.

No Dagster here: the asset passes `generate` (the `llm` resource) and `grade` (a `Grader`).
Sample k of problem p always has the same seed (salt, p, k), so the difficulty round and the
rejection rounds share the ledger: difficulty samples are reused as training samples for free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mathdata_pipeline.common.samples import GradeFn, SampleSpec, draw_samples
from mathdata_pipeline.common.subsets import solver_subset
from mathdata_pipeline.common.templates import SolveTemplate
from mathdata_pipeline.dart import dars
from mathdata_pipeline.engines.base import SamplingParams
from mathdata_pipeline.engines.runner import GenerateFn


@dataclass(frozen=True)
class Problem:
    """What the solver needs of a problem row."""

    problem_id: str
    question: str
    reference_answer: str
    level: str = "unknown"


@dataclass(frozen=True)
class Solver:
    """How samples are drawn and graded: template, sampling parameters, seed salt, model name,
    the LLM call and the grader."""

    template: SolveTemplate
    params: SamplingParams
    seed_salt: str
    model: str
    generate: GenerateFn
    grade: GradeFn
    grader_name: str = "mathdata-grader"

    def draw(self, specs: Sequence[SampleSpec], problems: dict[str, Problem]) -> pa.Table:
        """Generate and grade `specs`; returns SAMPLE_SCHEMA rows (failed requests have `error`)."""
        return draw_samples(
            specs,
            template=self.template,
            params=self.params,
            seed_salt=self.seed_salt,
            model=self.model,
            generate=self.generate,
            grade=self.grade,
            grader=self.grader_name,
            references={pid: p.reference_answer for pid, p in problems.items()},
        )


def counts(samples: pa.Table, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Trials and correct samples per id (a failed request counts as a failed trial)."""
    position = {pid: i for i, pid in enumerate(ids)}
    trials, correct = np.zeros(len(ids), np.int64), np.zeros(len(ids), np.int64)
    for pid, ok in zip(samples.column("problem_id").to_pylist(), samples.column("correct").to_pylist()):
        trials[position[pid]] += 1
        correct[position[pid]] += bool(ok)
    return trials, correct


def difficulty_round(problems: Sequence[Problem], n_d: int, solver: Solver) -> pa.Table:
    """Round 0: `n_d` samples of every problem, graded."""
    specs = [SampleSpec(p.problem_id, p.question, k, 0) for p in problems for k in range(n_d)]
    return solver.draw(specs, {p.problem_id: p for p in problems})


def run_dars(
    problems: Sequence[Problem], config: dars.DarsConfig, n_d: int, solver: Solver, log: Callable[[str], None] = print
) -> tuple[pa.Table, dars.DarsState]:
    """Difficulty round, then DARS rounds until every problem has stopped.

    Inputs: problems with reference answers; the DARS config; `n_d`, difficulty samples per problem
    (reused as training samples); the solver; `log` for one line per round.
    Output: (every sample drawn, graded; the final DARS state).
    """
    by_id = {p.problem_id: p for p in problems}
    ids = [p.problem_id for p in problems]
    tables = [difficulty_round(problems, n_d, solver)]
    trials, correct = counts(tables[0], ids)
    state = dars.start(ids, config, n_trials=trials, n_correct=correct)
    round_ = 1
    while plan := dars.plan_round(state):
        specs = [
            SampleSpec(qid, by_id[qid].question, int(state.n_trials[state.index[qid]]) + j, round_)
            for qid, k in plan
            for j in range(k)
        ]
        drawn = solver.draw(specs, by_id)
        tables.append(drawn)
        state = dars.update(
            state, zip(drawn.column("problem_id").to_pylist(), (bool(c) for c in drawn.column("correct").to_pylist()))
        )
        log(f"DARS round {round_}: {len(specs)} samples, {int(state.done.sum())}/{len(ids)} problems done")
        round_ += 1
    return pa.concat_tables(tables), state


def curate(samples: pa.Table) -> pa.Table:
    """The correct samples kept as solutions: per problem the first `target` correct ones in
    sample order (every correct one where the target is 0, as in VRT). `samples` needs the
    `target` column that `rejection_samples` writes."""
    rows = samples.select(["problem_id", "sample_index", "correct", "target"]).to_pylist()
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["problem_id"], rows[i]["sample_index"]))
    keep, taken = [], {}
    for i in order:
        row = rows[i]
        if not row["correct"] or (row["target"] and taken.get(row["problem_id"], 0) >= row["target"]):
            continue
        taken[row["problem_id"]] = taken.get(row["problem_id"], 0) + 1
        keep.append(i)
    return samples.take(pa.array(sorted(keep), pa.int64()))


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


def difficulty_table(problems: Sequence[Problem], samples: pa.Table) -> pa.Table:
    """One row per problem: level, trials, correct samples, pass rate and fail rate."""
    ids = [p.problem_id for p in problems]
    trials, correct = counts(samples, ids)
    return pa.table(
        {
            "problem_id": ids,
            "level": [p.level for p in problems],
            "n_trials": trials,
            "n_correct": correct,
            "pass_rate": correct / np.maximum(trials, 1),
            "fail_rate": dars.difficulty_from_samples(trials, correct),
        }
    )


def with_targets(samples: pa.Table, state: dars.DarsState) -> pa.Table:
    """`samples` plus the `target` column (correct samples wanted for the sample's problem)."""
    target = {qid: int(state.target[i]) for qid, i in state.index.items()}
    return samples.append_column(
        "target", pa.array([target[p] for p in samples.column("problem_id").to_pylist()], pa.int32())
    )
