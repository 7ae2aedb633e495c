"""ScaleQuest's filter chain over one shard of generated questions (METHODS.md §3.3 steps 3–4).

`filter_questions` runs the steps in order and returns every step's kept and rejected rows with
reasons; the models it needs come in as functions (a judge, a solver, an embedder), so this
module has no engine or Dagster of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from mathdata_pipeline.decontamination.index import ContaminationIndex
from mathdata_pipeline.grading.voting import Vote
from mathdata_pipeline.scalequest import filters as qf

JudgeFn = Callable[[list[str], list[str]], list[str]]  # (questions, row ids) -> judgements
SolveFn = Callable[[pa.Table], tuple[pa.Table, dict[str, Vote]]]  # kept questions -> (voted samples, votes)
EmbedFn = Callable[[list[str]], np.ndarray]
DifficultyFn = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class FilterSettings:
    """What the chain does: allowed characters (`language`), the near-duplicate cosine threshold,
    whether the judge runs and with which verdict rule, and the difficulty rule (see
    `filters.difficulty_sampling`)."""

    language: str = "ascii"
    near_duplicate_threshold: float = 0.95
    solvability: bool = True
    reference_verdict: bool = False
    difficulty_rule: Literal["none", "drop_easy_fraction", "min_difficulty"] = "drop_easy_fraction"
    difficulty_fraction: float = 0.2
    difficulty_threshold: float = 0.0


@dataclass(frozen=True)
class FilterRun:
    """The result of the chain: `steps` in order (each with kept and rejected rows), the final
    kept questions (with the solver's majority answer as `reference_answer`), and the solver's
    voted samples of the questions that reached the solver."""

    steps: list[qf.StepResult]
    kept: pa.Table
    samples: pa.Table

    def audit(self) -> pa.Table:
        """Every rejected row of every step: problem_id, question, filter_step, reason."""
        return pa.concat_tables(
            [s.rejected.select(["problem_id", "question", "filter_step", "reason"]) for s in self.steps]
        )

    def step_counts(self) -> dict[str, str]:
        """{"filter/<step>": "<in> -> <out>"} for metadata."""
        return {f"filter/{s.step}": f"{s.n_in} -> {s.n_out}" for s in self.steps}


def filter_questions(
    questions: pa.Table,
    settings: FilterSettings,
    *,
    index: ContaminationIndex,
    embed: EmbedFn,
    judge: JudgeFn,
    solve: SolveFn,
    difficulty_model: DifficultyFn | None = None,
) -> FilterRun:
    """Run the ScaleQuest filters over one shard.

    Steps: empty (nothing left after cleaning), language, near-duplicates (cosine of `embed`
    vectors), benchmark overlap (`index`), solvability (`judge`, when `settings.solvability`),
    solver answer (`solve` votes; a question without a majority answer is dropped and the winner
    becomes its reference answer), difficulty (1 − the winner's share of the votes, or
    `difficulty_model` scores when given; then `settings.difficulty_rule`).
    Output: a FilterRun. Every input row is either in `kept` or rejected by exactly one step.
    """
    texts = questions.column("question").to_pylist()
    steps = [
        qf.apply_mask(
            questions, [bool(q) for q in texts], [None if q else "empty after cleaning" for q in texts], "empty"
        )
    ]
    steps.append(qf.language_filter(steps[-1].kept, allowed=settings.language))
    vectors = embed(steps[-1].kept.column("question").to_pylist())
    steps.append(
        qf.near_duplicate_filter(
            steps[-1].kept, vectors, threshold=settings.near_duplicate_threshold, id_column="problem_id"
        )
    )
    steps.append(qf.contamination_filter(steps[-1].kept, index, id_column="problem_id", text_column="question"))
    if settings.solvability:
        kept = steps[-1].kept
        judgements = judge(kept.column("question").to_pylist(), kept.column("problem_id").to_pylist())
        steps.append(qf.solvability_filter(kept, judgements, reference_behaviour=settings.reference_verdict))
    samples, votes = solve(steps[-1].kept)
    steps.append(_with_majority_answers(steps[-1].kept, votes))
    kept = steps[-1].kept
    ids = kept.column("problem_id").to_pylist()
    difficulty = (
        difficulty_model(kept.column("question").to_pylist())
        if difficulty_model is not None and ids
        else np.asarray([1.0 - votes[i].share for i in ids], dtype=np.float64)
    )
    steps.append(
        qf.difficulty_sampling(
            kept,
            difficulty,
            rule=settings.difficulty_rule,
            fraction=settings.difficulty_fraction,
            threshold=settings.difficulty_threshold,
            seed=0,
            id_column="problem_id",
        )
    )
    return FilterRun(steps=steps, kept=steps[-1].kept, samples=samples)


def _with_majority_answers(table: pa.Table, votes: dict[str, Vote]) -> qf.StepResult:
    """Step "solver_answer": the winner of each question's vote becomes its `reference_answer`;
    questions without one are rejected with the vote's reason."""
    ids = table.column("problem_id").to_pylist()
    answers = [votes[i].answer if i in votes else None for i in ids]
    table = table.set_column(
        table.schema.get_field_index("reference_answer"), "reference_answer", pa.array(answers, pa.string())
    )
    reasons = [
        None
        if a is not None
        else f"no majority answer among the solver's samples ({votes[i].reason if i in votes else 'no samples'})"
        for i, a in zip(ids, answers)
    ]
    return qf.apply_mask(table, [a is not None for a in answers], reasons, "solver_answer")
