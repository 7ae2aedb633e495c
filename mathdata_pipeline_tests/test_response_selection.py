"""Best-of-n responses: final-answer markers, majority votes, and a real reward model (a one-output
sequence-classification head on the embedded SmolLM2) choosing among responses."""

from __future__ import annotations

import numpy as np
import pytest

from mathdata_pipeline.methods.response_selection import (
    Choice,
    RewardScorer,
    choose_responses,
    has_final_answer_marker,
    majority_selection,
    most_common_answer,
)

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"
RESPONSES = [
    "He has 3 + 4 = 7 apples. The answer is 7.",
    "3 plus 4 makes 7, so the final answer is $\\boxed{7}$.",
    "Tom ends up with 12 apples, since 3 * 4 = 12. \\boxed{12}",
    "I think it is seven apples in total.",
]


@pytest.fixture(scope="session")
def sequence_classifier_dir(tmp_path_factory) -> str:
    """A real one-output sequence-classification model: the embedded SmolLM2 weights with a
    seeded random score head, saved as a transformers folder. Built once per session under the
    session's base temp folder, also when another test module imports this fixture."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from mathdata_pipeline.methods.hf_models import embedded_checkpoint

    root = tmp_path_factory.getbasetemp() / "sequence_classifier"
    if (root / "config.json").is_file():
        return str(root)
    tokenizer = AutoTokenizer.from_pretrained(embedded_checkpoint())
    torch.manual_seed(0)
    classifier = AutoModelForSequenceClassification.from_pretrained(embedded_checkpoint(), num_labels=1)
    classifier.config.pad_token_id = tokenizer.pad_token_id
    classifier.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return str(root)


@pytest.fixture(scope="module")
def scorer(sequence_classifier_dir) -> RewardScorer:
    return RewardScorer(sequence_classifier_dir, batch_size=3)


@pytest.mark.parametrize("text, expected", [
    ("so \\boxed{5}", True),
    ("The answer is 5.", True),
    ("Thus the final answer is 5", True),
    ("the answer: 5", False),
    ("It is 5.", False),
])
def test_final_answer_marker(text, expected):
    assert has_final_answer_marker(text) is expected


@pytest.mark.parametrize("answers, expected", [
    (["7", "7.0", "12", None], (0, "7", 2)),
    ([None, "\\frac12", "0.5", "1/2"], (1, "\\frac{1}{2}", 2)),
    (["3", "4", "5"], (None, None, 1)),
    ([None, None], (None, None, 0)),
    ([], (None, None, 0)),
    (["", " ", "8", "8"], (2, "8", 2)),
])
def test_majority_selection(answers, expected):
    assert majority_selection(answers) == expected


def test_majority_ties_go_to_the_first_seen_answer():
    assert most_common_answer(["5", "4", "4", "5"]) == ("5", 2)
    assert majority_selection(["5", "4", "4", "5"], min_agreement=3) == (None, None, 2)


def test_choose_by_majority_with_reasons():
    groups = [
        [(text, answer) for text, answer in zip(RESPONSES, ["7", "7", "12", "7"])],
        [("The answer is 3", "3"), ("The answer is 4", "4"), ("no marker 3", "3")],
        [("no marker", "9"), ("still nothing", "9")],
        [],
    ]
    choices = choose_responses(groups, "majority")
    assert choices[0] == Choice(0, "majority 2/4", None, "7", 2)  # the marker-less "seven" does not vote
    assert choices[1] == Choice(None, "no majority (best 1/3)", None, None, 1)
    assert choices[2] == Choice(None, "no final answer marker", None, None, 0)
    assert choices[3].index is None and choices[3].reason == "no responses"
    relaxed = choose_responses(groups[1:3], "majority", require_final_answer_marker=False)
    assert [(c.index, c.reason) for c in relaxed] == [(0, "majority 2/3"), (0, "majority 2/2")]


def test_rule_validation():
    with pytest.raises(ValueError, match="rule"):
        choose_responses([], "best")
    with pytest.raises(ValueError, match="scorer"):
        choose_responses([[("The answer is 1", "1")]], "reward")


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
def test_reward_choice_follows_the_scores_among_marked_responses(scorer, response_scores):
    groups = [[(text, None) for text in RESPONSES], [(text, None) for text in RESPONSES[:2]], [("no marker", "1")]]
    choices = choose_responses(groups, "reward", questions=[QUESTION] * 3, scorer=scorer)
    marked = [i for i, text in enumerate(RESPONSES) if has_final_answer_marker(text)]
    assert marked == [0, 1, 2]
    best = max(marked, key=lambda i: response_scores[i])
    assert choices[0].index == best
    assert choices[0].reward == pytest.approx(response_scores[best], abs=1e-4)
    assert choices[0].reason == f"reward {choices[0].reward:.2f} (best of 3 with final-answer marker)"
    assert choices[1].index == int(np.argmax(response_scores[:2]))
    assert choices[2] == Choice(None, "no final answer marker", None, None, 0)
