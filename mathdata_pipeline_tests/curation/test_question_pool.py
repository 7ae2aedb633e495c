"""Plain modules behind the DART and MuggleMath assets: pool assembly, subsets, curation, votes."""

from __future__ import annotations

import pyarrow as pa

from mathdata_pipeline.common.samples import SAMPLE_SCHEMA, SampleSpec, sample_rows, solve_request
from mathdata_pipeline.common.subsets import solver_subset
from mathdata_pipeline.common.templates import TEMPLATES, get_template
from mathdata_pipeline.curation.question_pool import build_question_pool
from mathdata_pipeline.dart.sampling import curate
from mathdata_pipeline.decontamination.filter import drop_benchmark_overlap
from mathdata_pipeline.decontamination.index import build_index
from mathdata_pipeline.engines.base import Completion, RequestError, SamplingParams
from mathdata_pipeline.qads.candidates import candidate_rows
from mathdata_pipeline.sources.problems import PROBLEM_SCHEMA

BENCH = "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her friends every day with four."


def _problems(rows):
    base = {name: None for name in PROBLEM_SCHEMA.names}
    return pa.Table.from_pylist([{**base, "source": "s", "origin": "seed", **r} for r in rows], schema=PROBLEM_SCHEMA)


def test_pool_dedups_drops_benchmark_overlap_and_fills_majority_answers():
    seeds = _problems(
        [
            {"problem_id": "a", "question": "What is 1+1?", "reference_answer": "2"},
            {"problem_id": "b", "question": BENCH + " How many are left?", "reference_answer": "9"},
        ]
    )
    augmented = _problems(
        [
            {"problem_id": "c", "question": "what is 1+1?", "origin": "augmented"},
            {"problem_id": "d", "question": "What is 2+2?", "origin": "augmented"},
            {"problem_id": "e", "question": "What is 3+3?", "origin": "augmented"},
        ]
    )
    votes = pa.table({"problem_id": ["d", "d", "e"], "majority_answer": ["4", "4", None]})
    index = build_index([("gsm8k_test", "t1", BENCH + " She sells the remainder at the market.")])
    pool, dropped = build_question_pool(
        {"seed_problems": seeds, "augmented_questions": augmented, "augmented_responses": votes}, index
    )
    assert pool.column("problem_id").to_pylist() == ["a", "d", "e"]
    assert pool.column("reference_answer").to_pylist() == ["2", "4", None]
    assert dropped == {"dropped_duplicate_question": 1, "dropped_benchmark_overlap": 1}


def test_general_candidates_overlapping_a_benchmark_are_dropped():
    """The demo's MMLU pool held a MATH test item; candidates are filtered by their user turn."""
    general = pa.table(
        {
            "row_id": ["g1", "g2"],
            "source": ["mmlu", "mmlu"],
            "messages": [
                [
                    {"role": "user", "content": BENCH + " She sells the remainder at the market.\n\nA. 2\nB. 9"},
                    {"role": "assistant", "content": "The answer is B. 9"},
                ],
                [{"role": "user", "content": "Name a prime number."}, {"role": "assistant", "content": "7"}],
            ],
        }
    )
    index = build_index([("gsm8k_test", "t1", BENCH + " She sells the remainder at the market.")])
    kept, dropped = drop_benchmark_overlap(candidate_rows(None, general), index, id_column="candidate_id")
    assert kept.column("candidate_id").to_pylist() == ["g2"] and dropped == 1


def test_solver_subset_is_deterministic_and_needs_answers():
    pool = _problems(
        [{"problem_id": str(i), "question": f"q{i}", "reference_answer": None if i == 0 else "1"} for i in range(10)]
    )
    one = solver_subset(pool, max_questions=4, salt="x").column("problem_id").to_pylist()
    assert one == solver_subset(pool, max_questions=4, salt="x").column("problem_id").to_pylist()
    assert len(one) == 4 and "0" not in one
    assert solver_subset(pool, max_questions=0, salt="x").num_rows == 9


def test_curate_keeps_the_first_target_correct_samples():
    samples = pa.table(
        {
            "problem_id": ["p", "p", "p", "q", "q", "r"],
            "sample_index": [2, 0, 1, 0, 1, 0],
            "correct": [True, True, True, True, None, False],
            "target": [2, 2, 2, 0, 0, 1],
        }
    )
    kept = curate(samples)
    assert list(zip(kept.column("problem_id").to_pylist(), kept.column("sample_index").to_pylist())) == [
        ("p", 0),
        ("p", 1),
        ("q", 0),
    ]
    assert curate(samples.slice(5)).num_rows == 0


def test_sample_rows_ids_seeds_and_errors():
    template = get_template("deepseekmath")
    specs = [SampleSpec("p", "What is 1+1?", 0, 0), SampleSpec("p", "What is 1+1?", 1, 1)]
    params = SamplingParams(temperature=1.0, max_tokens=8)
    requests = [solve_request(template, s, params, seed_salt="salt") for s in specs]
    assert requests[0].params.seed != requests[1].params.seed
    assert requests[0].params.seed == solve_request(template, specs[0], params, seed_salt="salt").params.seed
    assert "User:" in requests[0].params.stop and requests[0].prompt.startswith("User: What is 1+1?")
    table = sample_rows(
        specs,
        requests,
        [Completion("\\boxed{2}", "stop", 10, 3), RequestError("prompt_too_long", "x")],
        model="m",
        template=template.name,
        extracted=["2", None],
        correct=[True, None],
        grader="g",
    )
    assert table.schema == SAMPLE_SCHEMA and table.column("error").to_pylist() == [None, "prompt_too_long: x"]
    assert len(set(table.column("sample_id").to_pylist())) == 2
    assert set(TEMPLATES) == {"deepseekmath", "qwen-boxed", "alpaca", "chat"}
