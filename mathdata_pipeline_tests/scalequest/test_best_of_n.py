"""Best-of-n responses: final-answer markers, majority votes, and a real reward model (a one-output
sequence-classification head on the embedded SmolLM2) choosing among responses."""

from __future__ import annotations

import numpy as np
import pytest

from mathdata_pipeline.scalequest.best_of_n import (
    Choice,
    RewardScorer,
    choose_responses,
    has_final_answer_marker,
)

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"
RESPONSES = [
    "He has 3 + 4 = 7 apples. The answer is 7.",
    "3 plus 4 makes 7, so the final answer is $\\boxed{7}$.",
    "Tom ends up with 12 apples, since 3 * 4 = 12. \\boxed{12}",
    "I think it is seven apples in total.",
]


@pytest.fixture(scope="module")
def scorer(sequence_classifier_dir) -> RewardScorer:
    return RewardScorer(sequence_classifier_dir, batch_size=3)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{5}", True),
        ("The answer is 5.", True),
        ("Thus the final answer is 5", True),
        ("the answer: 5", False),
        ("It is 5.", False),
    ],
)
def test_final_answer_marker(text, expected):
    assert has_final_answer_marker(text) is expected


def test_majority_rule_keeps_the_first_agreeing_response_with_a_marker():
    groups = [
        [(RESPONSES[2], False), (RESPONSES[3], True), (RESPONSES[0], True), (RESPONSES[1], True)],
        [("The answer is 3", False), ("The answer is 4", False)],
        [("no marker", True), ("still nothing", True)],
        [],
    ]
    choices = choose_responses(groups, "majority")
    # the marker-less "seven" agrees but is not eligible; a disagreeing response is never kept
    assert choices[0] == Choice(2, "majority 3/4 (first eligible)", None)
    assert choices[1] == Choice(None, "no majority answer", None)
    assert choices[2] == Choice(None, "no response of the majority answer has a final-answer marker", None)
    assert choices[3] == Choice(None, "no majority answer", None)
    relaxed = choose_responses(groups[2:3], "majority", require_final_answer_marker=False)
    assert [(c.index, c.reason) for c in relaxed] == [(0, "majority 2/2 (first eligible)")]


def test_rule_validation():
    with pytest.raises(ValueError, match="rule"):
        choose_responses([], "best")
    with pytest.raises(ValueError, match="scorer"):
        choose_responses([[("The answer is 1", True)]], "reward")


@pytest.fixture(scope="module")
def response_scores(scorer) -> np.ndarray:
    return scorer.score([(QUESTION, response) for response in RESPONSES])


@pytest.mark.slow
def test_reward_scorer_scores_real_pairs(scorer, response_scores):
    assert response_scores.shape == (4,) and response_scores.dtype == np.float64
    assert np.isfinite(response_scores).all()
    assert len(set(np.round(response_scores, 6).tolist())) == 4  # the texts are told apart
    again = scorer.score([(QUESTION, response) for response in RESPONSES[:3]])
    assert np.array_equal(again, response_scores[:3])  # deterministic (same batch)
    # right padding does not change a score: a short pair scored alone gives its batched value
    alone = scorer.score([(QUESTION, RESPONSES[0])])
    np.testing.assert_allclose(alone, response_scores[:1], rtol=1e-4, atol=1e-4)
    text = scorer.format_pair(QUESTION, RESPONSES[0])
    assert text.startswith("<|im_start|>") and QUESTION in text
    assert text.rstrip().endswith(RESPONSES[0] + "<|im_end|>")


@pytest.mark.slow
def test_reward_choice_follows_the_scores_among_agreeing_marked_responses(scorer, response_scores):
    everyone = [[(text, True) for text in RESPONSES], [(text, True) for text in RESPONSES[:2]], [("no marker", True)]]
    choices = choose_responses(everyone, "reward", questions=[QUESTION] * 3, scorer=scorer)
    marked = [i for i, text in enumerate(RESPONSES) if has_final_answer_marker(text)]
    assert marked == [0, 1, 2]
    best = max(marked, key=lambda i: response_scores[i])
    assert choices[0].index == best
    assert choices[0].reward == pytest.approx(response_scores[best], abs=1e-4)
    assert choices[0].reason == f"reward {choices[0].reward:.2f} (best of 3 with the majority answer)"
    assert choices[1].index == int(np.argmax(response_scores[:2]))
    assert choices[2] == Choice(None, "no response of the majority answer has a final-answer marker", None)
    # a response outside the winning group is never kept, however high its reward
    only_loser_is_best = [[(RESPONSES[i], i != best) for i in marked]]
    choice = choose_responses(only_loser_is_best, "reward", questions=[QUESTION], scorer=scorer)[0]
    assert choice.index is not None and marked[choice.index] != best
