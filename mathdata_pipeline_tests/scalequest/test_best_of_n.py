"""Best-of-n responses: final-answer markers, majority votes, and real reward models choosing among
responses: a one-output sequence-classification head on the embedded SmolLM2, and a tiny model with
its own code (like InternLM2-Reward) that loads only with `trust_remote_code`."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from mathdata_pipeline.scalequest.best_of_n import (
    Choice,
    RewardScorer,
    SequenceScorer,
    choose_responses,
    has_final_answer_marker,
    keep_ends,
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
    return RewardScorer(sequence_classifier_dir, batch_tokens=150, device="cpu")


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
    np.testing.assert_allclose(again, response_scores[:3], rtol=1e-4, atol=1e-4)  # other batches, same scores
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


def test_keep_ends_drops_the_middle():
    ids = list(range(100))
    assert keep_ends(ids, 100) == ids and keep_ends(ids[:5], 8) == ids[:5]
    cut = keep_ends(ids, 20)
    assert cut == list(range(5)) + list(range(85, 100))  # a quarter of the room from the start, the rest from the end


@pytest.mark.slow
def test_truncation_keeps_the_final_answer(sequence_classifier_dir):
    filler = "Let us add the numbers one at a time and check every step. " * 40
    texts = [filler + "So the answer is 7.", filler + "So the answer is 9."]
    scorer = SequenceScorer(sequence_classifier_dir, max_length=64, device="cpu")
    scores = scorer.score_texts(texts)
    assert scorer.truncated == 2
    assert abs(scores[0] - scores[1]) > 1e-4  # the ends differ and were kept (right truncation would tie them)
    assert (
        scorer.token_ids(texts[:1])[0][-6:]
        == scorer.tokenizer(" So the answer is 7.", add_special_tokens=False)["input_ids"][-6:]
    )


@pytest.mark.slow
def test_the_token_budget_does_not_change_scores(sequence_classifier_dir, response_scores):
    one_at_a_time = RewardScorer(sequence_classifier_dir, batch_tokens=1, device="cpu")
    scores = one_at_a_time.score([(QUESTION, response) for response in RESPONSES])
    np.testing.assert_allclose(scores, response_scores, rtol=1e-4, atol=1e-4)


# A reward model with its own code, shaped like InternLM2-Reward: `AutoModel` in its auto_map, a
# `reward_token_id` that must be the last real token, one value per sequence in `logits`.
CUSTOM_REWARD_CODE = """
import torch
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutputWithPast


class TinyRewardConfig(PretrainedConfig):
    model_type = "tiny_reward"

    def __init__(self, vocab_size=49152, hidden_size=16, reward_token_id=0, **kwargs):
        self.vocab_size, self.hidden_size, self.reward_token_id = vocab_size, hidden_size, reward_token_id
        super().__init__(**kwargs)


class TinyRewardModel(PreTrainedModel):
    config_class = TinyRewardConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.head = torch.nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, input_ids, attention_mask, **kwargs):
        last = attention_mask.sum(dim=1) - 1
        if not bool((input_ids[torch.arange(len(last)), last] == self.config.reward_token_id).all()):
            raise ValueError("the last token must be the reward token")
        mask = attention_mask.unsqueeze(-1).to(self.embed.weight.dtype)
        pooled = (self.embed(input_ids) * mask).sum(dim=1) / mask.sum(dim=1)
        return SequenceClassifierOutputWithPast(logits=self.head(pooled).squeeze(-1))
"""


@pytest.fixture(scope="module")
def custom_reward_dir(tmp_path_factory):
    """A tiny reward model whose class lives in its own modeling file (auto_map), with SmolLM2's tokenizer."""
    import torch
    from transformers import AutoTokenizer

    from mathdata_pipeline.common.hf_models import embedded_checkpoint

    source = tmp_path_factory.mktemp("code") / "modeling_tiny_reward.py"
    source.write_text(CUSTOM_REWARD_CODE)
    spec = importlib.util.spec_from_file_location("modeling_tiny_reward", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # save_pretrained copies the class's source file, found through sys.modules
    spec.loader.exec_module(module)
    module.TinyRewardConfig.register_for_auto_class()
    module.TinyRewardModel.register_for_auto_class("AutoModel")
    tokenizer = AutoTokenizer.from_pretrained(embedded_checkpoint())
    reward_token = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("custom_reward")
    module.TinyRewardModel(
        module.TinyRewardConfig(vocab_size=len(tokenizer), reward_token_id=reward_token)
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del sys.modules[spec.name]
    return folder


def test_custom_reward_code_runs_only_when_trusted(custom_reward_dir):
    assert "AutoModel" in json.loads((custom_reward_dir / "config.json").read_text())["auto_map"]
    with pytest.raises(ValueError, match="trust_remote_code: true"):
        RewardScorer(str(custom_reward_dir), device="cpu")
    scorer = RewardScorer(str(custom_reward_dir), trust_remote_code=True, device="cpu", max_length=24, batch_tokens=64)
    pairs = [(QUESTION, response) for response in RESPONSES]
    scores = scorer.score(pairs)  # the model refuses any row whose last token is not its reward token
    assert scores.shape == (4,) and np.isfinite(scores).all() and len(set(scores.round(6).tolist())) == 4
    assert scorer.truncated == 4 and all(len(ids) == 24 for ids in scorer.token_ids(["x" * 400]))
    assert all(ids[-1] == scorer.reward_token_id for ids in scorer.token_ids(["short", "x" * 400]))
    single = RewardScorer(str(custom_reward_dir), trust_remote_code=True, device="cpu", max_length=24, batch_tokens=1)
    np.testing.assert_allclose(single.score(pairs), scores, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_reward_model_on_cuda_in_bfloat16(sequence_classifier_dir, response_scores):
    gpu = RewardScorer(sequence_classifier_dir, device="cuda")
    assert gpu.dtype == "bfloat16" and str(next(gpu.model.parameters()).dtype) == "torch.bfloat16"
    scores = gpu.score([(QUESTION, response) for response in RESPONSES])
    np.testing.assert_allclose(scores, response_scores, rtol=0.1, atol=0.1)
