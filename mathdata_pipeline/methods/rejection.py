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

from mathdata_pipeline.engines.base import Completion, Request, RequestError, SamplingParams
from mathdata_pipeline.methods import dars
from mathdata_pipeline.methods.samples import SAMPLE_SCHEMA, SampleSpec, sample_rows, solve_request
from mathdata_pipeline.methods.templates import SolveTemplate

GenerateFn = Callable[[list[Request], list[str]], list[Completion | RequestError]]
GradeFn = Callable[[list[tuple[str, str, str | None]]], list]


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
        if not specs:
            return SAMPLE_SCHEMA.empty_table()
        requests = [solve_request(self.template, s, self.params, seed_salt=self.seed_salt) for s in specs]
        results = self.generate(requests, [f"{s.problem_id}#{s.sample_index}" for s in specs])
        done = [i for i, r in enumerate(results) if isinstance(r, Completion)]
        graded = self.grade([(results[i].text, problems[specs[i].problem_id].reference_answer,
                              results[i].finish_reason) for i in done])
        extracted: list[str | None] = [None] * len(specs)
        correct: list[bool | None] = [None] * len(specs)
        for i, g in zip(done, graded):
            extracted[i], correct[i] = g.extracted, g.correct
        return sample_rows(specs, requests, results, model=self.model, template=self.template.name,
                           extracted=extracted, correct=correct, grader=self.grader_name)


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


def run_dars(problems: Sequence[Problem], config: dars.DarsConfig, n_d: int, solver: Solver,
             log: Callable[[str], None] = print) -> tuple[pa.Table, dars.DarsState]:
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
        specs = [SampleSpec(qid, by_id[qid].question, int(state.n_trials[state.index[qid]]) + j, round_)
                 for qid, k in plan for j in range(k)]
        drawn = solver.draw(specs, by_id)
        tables.append(drawn)
        state = dars.update(state, zip(drawn.column("problem_id").to_pylist(),
                                       (bool(c) for c in drawn.column("correct").to_pylist())))
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
