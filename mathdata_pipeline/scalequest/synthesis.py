"""ScaleQuest's filter chain over one shard of generated questions (METHODS.md §3.3 steps 3–5).

`filter_questions` runs the steps in order and returns every step's kept and rejected rows with
reasons; the models it needs come in as functions (a judge, a solver, an embedder, a difficulty
scorer), so this module has no engine or Dagster of its own.

The order is the paper's: every question filter runs on the question alone (language, duplicates
within the shard and against the questions earlier shards kept, benchmark overlap, the solvability
judge, the trained difficulty scorer), and only the questions that pass all of them get responses
(step 5: n samples each). The solver's majority answer becomes the question's reference answer;
dropping questions without one (`majority_gate`) is this project's optional extra, after the
difficulty filter, since the paper keeps a response by reward alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.decontamination.index import ContaminationIndex
from mathdata_pipeline.grading.voting import Vote
from mathdata_pipeline.scalequest import filters as qf

JudgeFn = Callable[[list[str], list[str]], list[str]]  # (questions, row ids) -> judgements
SolveFn = Callable[[pa.Table], tuple[pa.Table, dict[str, Vote]]]  # kept questions -> (voted samples, votes)
EmbedFn = Callable[[list[str]], np.ndarray]
DifficultyFn = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class FilterSettings:
    """What the chain does: allowed characters (`language`), the near-duplicate cosine threshold
    (within the shard and against earlier shards), whether the judge runs and with which verdict
    rule, the difficulty rule (see `filters.difficulty_sampling`) and whether questions without a
    majority answer among their responses are dropped."""

    language: str = "ascii"
    near_duplicate_threshold: float = 0.95
    solvability: bool = True
    reference_verdict: bool = False
    difficulty_rule: Literal["none", "drop_easy_fraction", "min_difficulty"] = "min_difficulty"
    difficulty_fraction: float = 0.2
    difficulty_threshold: float = 0.1
    majority_gate: bool = False


@dataclass(frozen=True)
class EarlierShards:
    """The questions earlier shards kept: ids and their unit-norm embeddings (one row each)."""

    ids: list[str]
    vectors: np.ndarray


@dataclass(frozen=True)
class FilterRun:
    """The result of the chain: `steps` in order (each with kept and rejected rows), the final
    kept questions (with the solver's majority answer as `reference_answer`, null without one),
    the solver's voted samples (drawn only for questions that passed every question filter), and
    the embeddings of the kept questions (rows aligned with `kept`)."""

    steps: list[qf.StepResult]
    kept: pa.Table
    samples: pa.Table
    vectors: np.ndarray

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
    earlier: EarlierShards | None = None,
) -> FilterRun:
    """Run the ScaleQuest filters over one shard.

    Steps: empty (nothing left after cleaning), language, near-duplicates within the shard (cosine
    of `embed` vectors), near-duplicates of `earlier` shards' kept questions, benchmark overlap
    (`index`), solvability (`judge`, when `settings.solvability`), difficulty (`difficulty_model`
    scores, then `settings.difficulty_rule`; without a model the rule must be "none" and the
    difficulty stays null); then `solve` draws the responses of the questions left, whose vote
    winner becomes the reference answer, and with `settings.majority_gate` the step
    "solver_answer" drops the questions without one.
    Output: a FilterRun. Every input row is either in `kept` or rejected by exactly one step.
    Raises ValueError before any model runs when a difficulty rule has no model.
    """
    if difficulty_model is None and settings.difficulty_rule != "none":
        raise ValueError(f"difficulty_rule {settings.difficulty_rule!r} needs a difficulty model")
    texts = questions.column("question").to_pylist()
    steps = [
        qf.apply_mask(
            questions, [bool(q) for q in texts], [None if q else "empty after cleaning" for q in texts], "empty"
        )
    ]
    steps.append(qf.language_filter(steps[-1].kept, allowed=settings.language))
    vectors = embed(steps[-1].kept.column("question").to_pylist())
    vector_of = dict(zip(steps[-1].kept.column("problem_id").to_pylist(), vectors))
    threshold = settings.near_duplicate_threshold
    steps.append(qf.near_duplicate_filter(steps[-1].kept, vectors, threshold=threshold, id_column="problem_id"))
    earlier = earlier or EarlierShards([], np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 0)))
    kept = steps[-1].kept
    steps.append(
        qf.cross_shard_filter(
            kept, _rows(vector_of, kept, vectors), earlier.ids, earlier.vectors, threshold, id_column="problem_id"
        )
    )
    steps.append(qf.contamination_filter(steps[-1].kept, index, id_column="problem_id", text_column="question"))
    if settings.solvability:
        kept = steps[-1].kept
        judgements = judge(kept.column("question").to_pylist(), kept.column("problem_id").to_pylist())
        steps.append(qf.solvability_filter(kept, judgements, reference_behaviour=settings.reference_verdict))
    steps.append(_difficulty_step(steps[-1].kept, settings, difficulty_model))
    samples, votes = solve(steps[-1].kept)
    kept, gate = _with_majority_answers(steps[-1].kept, votes, settings.majority_gate)
    if gate is not None:
        steps.append(gate)
        kept = gate.kept
    return FilterRun(steps=steps, kept=kept, samples=samples, vectors=_rows(vector_of, kept, vectors))


def _rows(vector_of: dict, table: pa.Table, like: np.ndarray) -> np.ndarray:
    """The embeddings of `table`'s rows, in its order (an empty (0, d) array for no rows)."""
    ids = table.column("problem_id").to_pylist()
    width = like.shape[1] if like.ndim == 2 else 0
    return np.stack([vector_of[i] for i in ids]) if ids else np.zeros((0, width), dtype=np.float32)


def _difficulty_step(table: pa.Table, settings: FilterSettings, model: DifficultyFn | None) -> qf.StepResult:
    """Step "difficulty": score with `model` and apply the rule; without a model (rule "none"
    only) every row passes with a null difficulty."""
    if model is None:
        table = table.append_column("difficulty", pa.nulls(table.num_rows, pa.float64()))
        return qf.apply_mask(table, [True] * table.num_rows, [None] * table.num_rows, "difficulty")
    scores = model(table.column("question").to_pylist()) if table.num_rows else np.zeros(0)
    return qf.difficulty_sampling(
        table,
        scores,
        rule=settings.difficulty_rule,
        fraction=settings.difficulty_fraction,
        threshold=settings.difficulty_threshold,
        seed=0,
        id_column="problem_id",
    )


def _with_majority_answers(
    table: pa.Table, votes: dict[str, Vote], gate: bool
) -> tuple[pa.Table, qf.StepResult | None]:
    """The winner of each question's vote becomes its `reference_answer` (null without one) and
    its share `agreement`; with `gate`, step "solver_answer" rejects the questions without a
    winner, giving the vote's reason."""
    ids = table.column("problem_id").to_pylist()
    answers = [votes[i].answer if i in votes else None for i in ids]
    table = table.set_column(
        table.schema.get_field_index("reference_answer"), "reference_answer", pa.array(answers, pa.string())
    )
    table = table.append_column(
        "agreement", pa.array([votes[i].share if i in votes else 0.0 for i in ids], pa.float32())
    )
    if not gate:
        return table, None
    reasons = [
        None
        if a is not None
        else f"no majority answer among the solver's samples ({votes[i].reason if i in votes else 'no samples'})"
        for i, a in zip(ids, answers)
    ]
    return table, qf.apply_mask(table, [a is not None for a in answers], reasons, "solver_answer")


def vectors_table(kept: pa.Table, vectors: np.ndarray, *, shard: str, embedder: str) -> pa.Table:
    """The kept questions' embeddings as rows (problem_id, shard, embedder, vector), what the next
    shards compare against (`earlier_shards`)."""
    width = vectors.shape[1] if vectors.ndim == 2 else 0
    return pa.table(
        {
            "problem_id": kept.column("problem_id").combine_chunks() if kept.num_rows else pa.array([], pa.string()),
            "shard": pa.array([shard] * kept.num_rows, pa.string()),
            "embedder": pa.array([embedder] * kept.num_rows, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(np.asarray(vectors, dtype=np.float32).reshape(-1), pa.float32()), width
            ),
        }
    )


def earlier_shards(table: pa.Table | None, shard: str, embedder: str) -> EarlierShards:
    """The kept questions of the shards before `shard` (partition keys in sort order) from every
    shard's `vectors_table`; None (nothing materialized yet) gives none. Raises ValueError when an
    earlier shard was embedded with another embedder (its vectors would not be comparable)."""
    if table is None:
        return EarlierShards([], np.zeros((0, 0), dtype=np.float32))
    earlier = table.filter(pc.less(table.column("shard"), shard))
    others = set(earlier.column("embedder").to_pylist()) - {embedder}
    if others:
        raise ValueError(
            f"earlier shards were embedded with {sorted(others)}, this one with {embedder!r}: "
            "rematerialize them with the same embedder"
        )
    vectors = earlier.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    width = earlier.schema.field("vector").type.list_size
    return EarlierShards(earlier.column("problem_id").to_pylist(), vectors.reshape(-1, width).astype(np.float32))
