"""MuggleMath requests and new problem rows: one request per (seed, type, round) or, for AugMATH,
per (seed, round); each round's model recorded; AugMATH rows carry their solutions."""

from __future__ import annotations

import json

import pyarrow as pa

from mathdata_pipeline.engines.base import Completion, RequestError, SamplingParams
from mathdata_pipeline.mugglemath.rewrites import new_problems, rewrite_jobs
from mathdata_pipeline.sources.problems import PROBLEM_SCHEMA

PARAMS = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=256)


def seeds(*solutions: str | None) -> pa.Table:
    rows = [
        {
            **dict.fromkeys(PROBLEM_SCHEMA.names),
            "problem_id": f"s{i}",
            "source": "math",
            "question": f"What is {i} + {i}?",
            "reference_solution": solution,
            "level": 1,
            "origin": "seed",
        }
        for i, solution in enumerate(solutions)
    ]
    return pa.Table.from_pylist(rows, schema=PROBLEM_SCHEMA)


def test_every_round_gets_its_own_requests_and_seeds():
    jobs, counts = rewrite_jobs(
        seeds("a", "b"),
        types=["change_numbers", "add_condition"],
        k=2,
        rounds=3,
        variant="gsm8k",
        params=PARAMS,
        salt="x",
    )
    assert len(jobs) == 2 * 2 * 3 and counts == {}
    assert [j.round for j in jobs] == [0] * 4 + [1] * 4 + [2] * 4
    assert len({j.request.params.seed for j in jobs}) == 12
    same = [j for j in jobs if j.parent_id == "s0" and j.rewrite_type == "change_numbers"]
    assert len({json.dumps(j.request.message_dicts()) for j in same}) == 1  # same prompt, new seed per round


def test_augmath_asks_once_per_seed_and_round_and_needs_a_solution():
    jobs, counts = rewrite_jobs(
        seeds("It is $\\boxed{0}$.", None),
        types=["increase_complexity"],
        k=5,
        rounds=2,
        variant="augmath",
        params=PARAMS,
        salt="x",
    )
    assert [(j.parent_id, j.rewrite_type, j.round) for j in jobs] == [("s0", "augmath", 0), ("s0", "augmath", 1)]
    assert counts == {"skipped_no_solution": 1}
    assert "It is $\\boxed{0}$." in jobs[0].request.message_dicts()[1]["content"]


def test_new_problems_record_round_model_and_the_augmath_solution():
    table = seeds("It is $\\boxed{0}$.")
    jobs, _ = rewrite_jobs(table, types=["change_numbers"], k=2, rounds=2, variant="augmath", params=PARAMS, salt="x")
    reply = "Question1: What is $3 + 3$?\nSolution1: $3 + 3 = \\boxed{6}$. ##end1"
    results = [Completion(reply, "stop", 10, 20), RequestError("engine_error", "boom")]
    rows, counts = new_problems(
        table, jobs, results, source="math", k=2, params_hash="h", models={0: "gpt-3.5", 1: "gpt-4"}
    )
    assert rows.num_rows == 1 and counts["request_errors/augmath"] == 1 and counts["questions/round_0"] == 1
    row = rows.to_pylist()[0]
    assert row["question"] == "What is $3 + 3$?" and row["reference_solution"] == "$3 + 3 = \\boxed{6}$."
    assert (
        row["method"] == "mugglemath:augmath" and row["parent_problem_id"] == "s0" and row["reference_answer"] is None
    )
    record = json.loads(row["source_record"])
    assert record["round"] == 0 and record["model"] == "gpt-3.5" and record["seed"] == jobs[0].request.params.seed
    assert (record["temperature"], record["top_p"], record["max_tokens"]) == (0.7, 0.95, 256)
