"""The examples of an influence run: lineage roots, held-out training rows, one template for V and
the training rows (checked against what the engine rendered), the validation table, and the
weights an engine profile serves."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mathdata_pipeline.common.templates import get_template
from mathdata_pipeline.engines.factory import LocalProfile, OpenAIProfile, VLLMProfile
from mathdata_pipeline.influence.examples import (
    check_validation_prompts,
    drop_too_long,
    influence_inputs,
    load_tokenizer,
    problem_roots,
    render_prompt,
    scoring_model_for,
    shared_problems,
    training_rows,
    validation_rows,
    warmup_rows,
)

POOL = pa.table(
    {
        "problem_id": ["seed-1", "seed-2", "aug-1", "aug-1b", "syn-1"],
        "parent_problem_id": [None, None, "seed-1", "aug-1", None],
    }
)
SOLUTIONS = pa.table(
    {
        "sample_id": ["s-aug", "s-seed2", "s-seed1", "s-augb", "s-syn", "s-other"],
        "problem_id": ["aug-1", "seed-2", "seed-1", "aug-1b", "syn-1", "seed-2"],
        "question": ["Q aug", "Q two", "Q one", "Q augb", "Q syn", "Q two"],
        "response": ["A aug", "A two", "A one", "A augb", "A syn", "A two bis"],
    }
)


def test_roots_follow_rewrites_back_to_the_seed():
    roots = problem_roots(POOL)
    assert roots == {"seed-1": "seed-1", "seed-2": "seed-2", "aug-1": "seed-1", "aug-1b": "seed-1", "syn-1": "syn-1"}
    looped = problem_roots(pa.table({"problem_id": ["a", "b"], "parent_problem_id": ["b", "a"]}))
    assert set(looped) == {"a", "b"}  # a cycle ends instead of looping


def test_training_rows_exclude_every_row_of_a_held_out_problem():
    roots = problem_roots(POOL)
    candidates = ["s-aug", "s-seed2", "s-seed1", "s-augb", "s-syn"]  # s-other is not a QaDS candidate
    rows, held = training_rows(SOLUTIONS, candidates, roots, {"seed-1"})
    assert rows.column("sample_id").to_pylist() == ["s-seed2", "s-syn"]
    assert held == ["s-aug", "s-augb", "s-seed1"]
    assert shared_problems(["s-seed2", "s-syn"], SOLUTIONS, roots, ["seed-1"]) == []
    assert shared_problems(["s-augb", "s-syn"], SOLUTIONS, roots, ["aug-1"]) == ["sample s-augb (problem seed-1)"]


def test_warmup_rows_are_a_seeded_share():
    table = pa.table({"sample_id": [f"s{i}" for i in range(40)]})
    share = warmup_rows(table, 0.05, seed=1)
    assert share.num_rows == 2 and share.equals(warmup_rows(table, 0.05, seed=1))
    assert warmup_rows(table, 0.001, seed=1).num_rows == 1
    with pytest.raises(ValueError, match="no training rows|none"):
        warmup_rows(table.slice(0, 0), 0.05, seed=1)


def test_prompts_are_rendered_with_the_template_and_checked(tiny_lm):
    tokenizer = load_tokenizer(str(tiny_lm))
    chat = render_prompt(get_template("chat"), "What is 2+2?", tokenizer)
    assert chat.startswith("<|user|>\nWhat is 2+2?\nPlease reason step by step") and chat.endswith("<|assistant|>\n")
    assert render_prompt(get_template("alpaca"), "What is 2+2?", tokenizer).endswith(
        "### Response:"
    )  # DART-Math's sampling prompt
    samples = pa.table(
        {
            "sample_id": ["v1", "v2", "v3"],
            "problem_id": ["p1", "p1", "p2"],
            "text": ["4", "5", ""],
            "correct": [True, False, None],
            "model": ["m"] * 3,
            "template": ["chat"] * 3,
        }
    )
    problems = [
        {"problem_id": "p1", "question": "What is 2+2?", "reference_solution": "2+2=4"},
        {"problem_id": "p2", "question": "What is 3+3?", "reference_solution": None},
    ]
    table = validation_rows(
        problems, samples, {"p1": chat, "p2": None}, scoring_model=str(tiny_lm), include_reference_solutions=True
    )
    assert table.column("example_id").to_pylist() == ["v1", "v2", "ref-p1"]  # v3 has no text, p2 no solution
    assert table.column("correct").to_pylist() == [True, False, True]
    assert set(table.column("scoring_model").to_pylist()) == {str(tiny_lm)}
    inputs = influence_inputs(
        SOLUTIONS,
        pa.table({"candidate_id": ["s-seed2", "s-syn", "s-seed1"], "kind": ["reasoning"] * 3}),
        POOL,
        table.set_column(1, "problem_id", pa.array(["seed-1"] * 3)),
        max_examples=1,
        max_length=128,
        warmup_fraction=0.5,
        seed=0,
    )
    assert [e.example_id for e in inputs.val] == ["v1", "v2", "ref-p1"] and inputs.val[0].prompt == chat
    assert inputs.heldout_ids == ["s-seed1"] and len(inputs.train) == 1 and len(inputs.warmup) == 1
    assert inputs.counts == {
        "training_rows": 2,
        "scored_rows": 1,
        "heldout_rows": 1,
        "dropped_too_long_train": 0,
        "dropped_too_long_val": 0,
        "dropped_too_long_warmup": 0,
    }
    kept, dropped = drop_too_long(inputs.val, tokenizer, max_length=len(tokenizer(chat).input_ids) + 1)
    assert [e.example_id for e in kept] == ["v1", "v2", "ref-p1"] and dropped == []
    kept, dropped = drop_too_long(inputs.val, tokenizer, max_length=len(tokenizer(chat).input_ids))
    assert kept == [] and dropped == ["v1", "v2", "ref-p1"]  # the prompt alone fills the window
    assert inputs.train[0].prompt.startswith("<|user|>\nQ ") and inputs.train[0].prompt.endswith("<|assistant|>\n")

    engine_rendered = table.set_column(3, "prompt", pa.array(["User: What is 2+2?", None, None]))
    with pytest.raises(ValueError, match="row 'v1': field 'prompt'.*do not share the template"):
        check_validation_prompts(engine_rendered, inputs.val)


def test_scoring_model_follows_the_engine_profile():
    assert scoring_model_for(LocalProfile(backend="local")) == "embedded"
    assert scoring_model_for(LocalProfile(backend="local", model_path="/m/q.gguf")) == "/m/q.gguf"
    assert scoring_model_for(VLLMProfile(backend="vllm", model="org/model-7b")) == "org/model-7b"
    with pytest.raises(ValueError, match="set reference_responses' scoring_model"):
        scoring_model_for(OpenAIProfile(backend="openai", model="x", base_url="http://127.0.0.1:1/v1"))
