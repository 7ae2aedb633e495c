"""ScaleQuest's filter chain in the paper's order: every question filter first, then responses only
for the questions that passed, an optional majority gate after the difficulty filter, and
near-duplicates dropped against the questions earlier shards kept (real MiniLM + FAISS).

The judge and the solver are scripted functions at `filter_questions`' boundary (no model): they
record which questions reached them, which is what the order is about."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mathdata_pipeline.common.samples import SAMPLE_SCHEMA
from mathdata_pipeline.decontamination.index import ContaminationIndex, build_index
from mathdata_pipeline.grading import Grader
from mathdata_pipeline.grading.voting import vote_on_samples
from mathdata_pipeline.qads.embeddings import SentenceEmbedder
from mathdata_pipeline.scalequest.filters import cross_shard_filter
from mathdata_pipeline.scalequest.rows import question_rows
from mathdata_pipeline.scalequest.synthesis import (
    EarlierShards,
    FilterSettings,
    earlier_shards,
    filter_questions,
    vectors_table,
)

QUESTIONS = [
    "A farmer has 12 cows and buys 5 more. How many cows does he have now?",  # easy, solved: 17
    "Write a poem about autumn leaves.",  # the judge says no
    "Tom has 3 boxes with 8 pens each and gives away 5 pens. How many pens are left?",  # answers disagree
    "Café owners sell 4 cakes. How many cakes?",  # not ASCII
    "Find the number of ordered pairs of integers (a, b) with a^2 + b^2 = 25.",  # hard: 12
    "",
]
ANSWERS = {  # the scripted solver's two responses per question
    0: ["\\boxed{17}", "\\boxed{17}"],
    2: ["\\boxed{19}", "\\boxed{21}"],
    4: ["\\boxed{12}", "\\boxed{12}"],
}


def shard(texts=QUESTIONS, name="000") -> pa.Table:
    return question_rows(
        texts, list(range(len(texts))), [10] * len(texts), generator="g", shard=name, source="math", params_hash="h"
    )


@pytest.fixture(scope="module")
def embedder():
    return SentenceEmbedder("embedded")


@pytest.fixture(scope="module")
def index():
    return ContaminationIndex.from_table(build_index([("gsm8k_test", "0", "What is 1 + 1 if you add them together?")]))


class Scripted:
    """The judge and solver of one run: scripted replies, and the questions each one received."""

    def __init__(self, table: pa.Table):
        self.position = {pid: i for i, pid in enumerate(table.column("problem_id").to_pylist())}
        self.judged: list[str] = []
        self.solved: list[str] = []

    def judge(self, questions, ids):
        self.judged += list(ids)
        return ["Verdict: No" if "poem" in q else "It can be solved.\nVerdict: Yes" for q in questions]

    def solve(self, kept: pa.Table):
        rows = []
        for pid in kept.column("problem_id").to_pylist():
            self.solved.append(pid)
            for k, text in enumerate(ANSWERS[self.position[pid]]):
                rows.append(
                    {
                        **dict.fromkeys(SAMPLE_SCHEMA.names),
                        "sample_id": f"{pid}#{k}",
                        "problem_id": pid,
                        "sample_index": k,
                        "text": text,
                        "finish_reason": "stop",
                    }
                )
        with Grader(workers=1) as grader:
            return vote_on_samples(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), grader, min_share=0.6)


def difficulty(questions):
    return np.array([0.05 if "farmer" in q else 0.9 for q in questions])  # the farmer question is easy


def run(table, embedder, index, script, **settings):
    return filter_questions(
        table,
        FilterSettings(difficulty_rule="min_difficulty", difficulty_threshold=0.1, **settings),
        index=index,
        embed=embedder.embed,
        judge=script.judge,
        solve=script.solve,
        difficulty_model=difficulty,
    )


def test_responses_are_drawn_only_for_questions_that_pass_every_filter(embedder, index):
    table = shard()
    ids = table.column("problem_id").to_pylist()
    script = Scripted(table)
    result = run(table, embedder, index, script)
    steps = [s.step for s in result.steps]
    assert steps == [
        "empty",
        "language",
        "near_duplicate",
        "cross_shard_duplicate",
        "contamination",
        "solvability",
        "difficulty",
    ]
    assert script.judged == [ids[0], ids[1], ids[2], ids[4]]  # after language (3) and empty (5)
    assert script.solved == [ids[2], ids[4]]  # the judge took 1, the difficulty filter the easy 0
    assert result.kept.column("problem_id").to_pylist() == [ids[2], ids[4]]
    assert result.kept.column("reference_answer").to_pylist() == [None, "12"]  # no gate: kept without a majority
    assert set(result.samples.column("problem_id").to_pylist()) == {ids[2], ids[4]}
    assert result.vectors.shape == (2, 384)
    assert result.audit().num_rows + result.kept.num_rows == len(QUESTIONS)


def test_the_majority_gate_runs_after_the_difficulty_filter(embedder, index):
    table = shard()
    ids = table.column("problem_id").to_pylist()
    script = Scripted(table)
    result = run(table, embedder, index, script, majority_gate=True)
    assert [s.step for s in result.steps][-2:] == ["difficulty", "solver_answer"]
    assert script.solved == [ids[2], ids[4]] and result.kept.column("problem_id").to_pylist() == [ids[4]]
    reason = result.steps[-1].rejected.column("reason").to_pylist()[0]
    assert reason.startswith("no majority answer among the solver's samples (below min_share 1/2")


def test_questions_earlier_shards_kept_are_dropped_and_the_rest_compared(embedder, index):
    first = run(shard(), embedder, index, Scripted(shard()))
    stored = vectors_table(first.kept, first.vectors, shard="000", embedder=embedder.model)
    earlier = earlier_shards(stored, "001", embedder.model)
    assert earlier.ids == first.kept.column("problem_id").to_pylist() and earlier.vectors.shape == (2, 384)
    assert earlier_shards(stored, "000", embedder.model).ids == []  # a shard never compares with itself
    with pytest.raises(ValueError, match="another embedder|embedded with"):
        earlier_shards(stored, "001", "other-model")
    reworded = QUESTIONS[4].replace("ordered pairs", "ordered pairs,")
    second_table = shard([reworded, "A shop sells 7 apples a day. How many apples does it sell in 9 days?"], name="001")
    script = Scripted(second_table)
    script.position = {pid: 4 for pid in second_table.column("problem_id").to_pylist()}
    result = filter_questions(
        second_table,
        FilterSettings(difficulty_rule="none"),
        index=index,
        embed=embedder.embed,
        judge=script.judge,
        solve=script.solve,
        earlier=earlier,
    )
    step = next(s for s in result.steps if s.step == "cross_shard_duplicate")
    assert step.n_in == 2 and step.n_out == 1
    assert (
        step.rejected.column("reason")
        .to_pylist()[0]
        .startswith(f"near-duplicate of {earlier.ids[1]} from an earlier shard")
    )
    assert result.kept.column("difficulty").null_count == 1  # no model: no difficulty, nothing dropped for it


def test_cross_shard_filter_without_earlier_questions_keeps_everything():
    table = pa.table({"question_id": ["a", "b"], "question": ["x", "y"]})
    vectors = np.eye(2, dtype=np.float32)
    assert cross_shard_filter(table, vectors, [], np.zeros((0, 0)), 0.9).n_out == 2
    kept = cross_shard_filter(table, vectors, ["old"], np.array([[1.0, 0.0]]), 0.9)
    assert kept.kept.column("question_id").to_pylist() == ["b"]
    assert kept.rejected.column("reason").to_pylist() == ["near-duplicate of old from an earlier shard (cosine 1.00)"]
    with pytest.raises(ValueError, match="dimensions"):
        cross_shard_filter(table, vectors, ["old"], np.ones((1, 3)), 0.9)
    with pytest.raises(ValueError, match="difficulty model"):
        filter_questions(
            table.rename_columns(["problem_id", "question"]),
            FilterSettings(),
            index=None,
            embed=lambda q: np.eye(len(q), 2, dtype=np.float32),
            judge=None,
            solve=None,
            earlier=EarlierShards([], np.zeros((0, 2))),
        )
