"""The synthesized-questions rows and the kept-response marking of `synthesized_responses`,
directly (scalequest/rows.py)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from mathdata_pipeline.scalequest.best_of_n import RewardScorer
from mathdata_pipeline.scalequest.rows import SYNTHESIZED_SCHEMA, kept_responses, question_id, question_rows


def test_question_rows_carry_their_generation_record():
    table = question_rows(
        ["What is 3 + 4?", "A train travels 60 km in 1.5 hours. What is its speed?"],
        [11, 12],
        [9, 17],
        generator="qgen-qpo@abc",
        shard="007",
        source="math",
        params_hash="h1",
    )
    assert table.schema == SYNTHESIZED_SCHEMA
    rows = table.to_pylist()
    assert [r["problem_id"] for r in rows] == [question_id("qgen-qpo@abc", "007", i) for i in range(2)]
    assert len({r["problem_id"] for r in rows}) == 2 and rows[0]["problem_id"].startswith("sq-")
    assert question_id("qgen-qpo@abc", "007", 0) != question_id("qgen-qpo@abc", "008", 0)  # shards never collide
    first = rows[0]
    assert (first["origin"], first["method"], first["source"], first["split"]) == (
        "synthesized",
        "scalequest",
        "math",
        "synthesized",
    )
    assert first["reference_answer"] is None and first["method_params_hash"] == "h1" and first["source_id"] == "007/0"
    assert json.loads(first["source_record"]) == {"shard": "007", "index": 0, "seed": 11, "generator": "qgen-qpo@abc"}
    assert (rows[1]["seed"], rows[1]["completion_tokens"], rows[1]["generator"]) == (12, 17, "qgen-qpo@abc")
    with pytest.raises(ValueError):
        question_rows(["q"], [1, 2], [3], generator="g", shard="000", source="math", params_hash="h")


def _samples(rows: list[tuple[str, int, str, bool]]) -> pa.Table:
    return pa.table(
        {
            "sample_id": [f"{p}-{i}" for p, i, _, _ in rows],
            "problem_id": [p for p, _, _, _ in rows],
            "sample_index": pa.array([i for _, i, _, _ in rows], pa.int32()),
            "text": [t for _, _, t, _ in rows],
            "correct": [c for _, _, _, c in rows],
        }
    )


SAMPLES = [
    # a: listed out of order; index 0 agrees but has no final-answer marker, so index 1 is the first eligible
    ("a", 2, "So the answer is \\boxed{7}.", True),
    ("a", 0, "3 + 4 = 7", True),
    ("a", 1, "Adding, we get \\boxed{7}.", True),
    ("a", 3, "The answer is \\boxed{8}.", False),
    # b: no sample in the winning group
    ("b", 0, "The answer is 5.", False),
    ("b", 1, "The answer is 6.", False),
    # c: agreeing samples, none with a marker
    ("c", 0, "40 km/h", True),
    ("c", 1, "it is 40 km/h", True),
]
QUESTIONS = {"a": "What is 3 + 4?", "b": "Pick a number.", "c": "A train travels 60 km in 1.5 hours. Speed?"}


def test_majority_rule_keeps_the_first_eligible_response_and_says_why():
    table, counts = kept_responses(_samples(SAMPLES), QUESTIONS)
    assert table.schema.names[-3:] == ["kept", "reward", "choice"]
    kept = {r["sample_id"]: r for r in table.to_pylist() if r["kept"]}
    assert list(kept) == ["a-1"] and kept["a-1"]["choice"] == "majority 3/4 (first eligible)"
    assert kept["a-1"]["reward"] is None
    assert counts == {
        "questions": 3,
        "kept": 1,
        "not_kept/no majority answer": 1,
        "not_kept/no response of the majority answer has a final-answer marker": 1,
    }
    not_kept = [r for r in table.to_pylist() if not r["kept"]]
    assert all(r["choice"] is None for r in not_kept) and len(not_kept) == len(SAMPLES) - 1
    again, _ = kept_responses(table, QUESTIONS)  # a rerun replaces the marking instead of adding columns
    assert again.equals(table)


def test_reward_rule_keeps_the_best_rewarded_eligible_response(sequence_classifier_dir):
    scorer = RewardScorer(sequence_classifier_dir)
    table, counts = kept_responses(_samples(SAMPLES), QUESTIONS, scorer=scorer)
    assert counts["kept"] == 1
    eligible = ["a-2", "a-1"]  # agreeing and with a marker
    texts = {r["sample_id"]: r["text"] for r in table.to_pylist()}
    rewards = scorer.score([(QUESTIONS["a"], texts[s]) for s in eligible])
    (kept,) = [r for r in table.to_pylist() if r["kept"]]
    assert kept["sample_id"] == eligible[int(np.argmax(rewards))]
    assert kept["reward"] == pytest.approx(float(rewards.max()), rel=1e-4, abs=1e-4)
    assert kept["choice"].startswith("reward ") and kept["choice"].endswith("(best of 2 with the majority answer)")
