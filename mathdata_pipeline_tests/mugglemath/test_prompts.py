"""MuggleMath rewrite prompts: five types, two variants, switchable, short enough for a small context."""

from __future__ import annotations

import pytest

from mathdata_pipeline.mugglemath.prompts import (
    PROMPT_VARIANTS,
    REWRITE_TYPES,
    augmath_messages,
    rewrite_messages,
    rewrite_prompts,
)

SEED = "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?"


@pytest.mark.parametrize("variant", PROMPT_VARIANTS)
@pytest.mark.parametrize("rewrite_type", REWRITE_TYPES)
def test_rewrite_messages_shape(rewrite_type, variant):
    messages = rewrite_messages(SEED, rewrite_type, k=4, variant=variant)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert SEED in user and "4 new questions" in user and "numbered list" in user
    assert "do not answer" in user


def test_prompts_differ_by_type_and_variant():
    users = {(t, v): rewrite_messages(SEED, t, variant=v)[1]["content"] for t in REWRITE_TYPES for v in PROMPT_VARIANTS}
    assert len(set(users.values())) == len(users)
    assert "LaTeX" in rewrite_messages("Find $x$.", "add_condition", variant="math")[0]["content"]
    assert "1 new question " in rewrite_messages(SEED, "change_numbers", k=1)[1]["content"]


def test_types_can_be_switched_off():
    prompts = rewrite_prompts(SEED, types=["increase_complexity", "change_numbers"], k=2)
    assert list(prompts) == ["change_numbers", "increase_complexity"]
    assert rewrite_prompts(SEED, types=[]) == {}
    with pytest.raises(ValueError, match="unknown rewrite types"):
        rewrite_prompts(SEED, types=["change_question"])
    with pytest.raises(ValueError):
        rewrite_messages(SEED, "change_numbers", variant="aime")
    with pytest.raises(ValueError):
        rewrite_messages(SEED, "change_numbers", k=0)


def test_prompts_fit_a_small_context(gsm8k_train):
    longest = max((row["question"] for row in gsm8k_train), key=len)
    for rewrite_type in REWRITE_TYPES:
        messages = rewrite_messages(longest, rewrite_type, k=5)
        chars = sum(len(m["content"]) for m in messages)
        # ~4 characters per token for English: well under 1k tokens, leaving room for 5 answers.
        assert chars < 3000, (rewrite_type, chars)


def test_augmath_prompt_gives_the_solution_and_asks_for_solved_variations():
    question, solution = "Find $x$ if $2x = 6$.", "Divide by 2: $x = \\boxed{3}$."
    system, user = augmath_messages(question, solution, types=["change_numbers", "increase_complexity"], k=5)
    assert system["role"] == "system" and user["role"] == "user"
    text = user["content"]
    assert question in text and solution in text and "Question5/Solution5" in text and "##end" in text
    assert "Change some of the specific numbers" in text and "more complex" in text
    assert "Introduce fractions" not in text  # a switched-off type is not offered
    with pytest.raises(ValueError, match="solution"):
        augmath_messages(question, " ")
    with pytest.raises(ValueError, match="rewrite types"):
        augmath_messages(question, solution, types=[])
