"""Best-of-n responses per question (ScaleQuest steps 5-6, METHODS.md §3.3 and §6.3).

Both rules choose among the responses in the winning group of the project's majority vote
(`grading.voting`), so the kept response carries the question's reference answer: `majority`
keeps the first of them (no model needed); `reward` keeps the one a reward model scores highest
among those with a final-answer marker (the paper: internlm2-7b-reward, best of 5). Any Hugging
Face sequence-classification model with one output works as the scorer (`RewardScorer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_MARKERS = ("boxed", "he answer is", "final answer is")


def has_final_answer_marker(text: str) -> bool:
    """True when `text` contains "boxed", "he answer is" or "final answer is" (case-sensitive,
    as the paper's response filter)."""
    return any(marker in text for marker in _MARKERS)


class SequenceScorer:
    """One float per text from a Hugging Face sequence-classification model with one output.

    Parameters: `model_path` (folder or hub id of an `AutoModelForSequenceClassification` model
    with num_labels=1), `batch_size`, `max_length` (tokens; longer texts are truncated at the
    end). The raw logit is returned, with no activation (the paper's
    `function_to_apply="none"`). Batches are right-padded, so a decoder model sees each text at
    the positions it would see it alone, and the model picks its own last non-padding token.
    A missing pad token is set to EOS. Runs on the CPU in eval mode.
    """

    def __init__(self, model_path: str, batch_size: int = 8, max_length: int = 2048):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if batch_size < 1 or max_length < 1:
            raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size}, {max_length}")
        self.model_path, self.batch_size, self.max_length = model_path, batch_size, max_length
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_path)
        if self.model.config.num_labels != 1:
            raise ValueError(f"{model_path}: a scorer needs num_labels=1, the model has {self.model.config.num_labels}")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"
        self.model.eval()

    def score_texts(self, texts: Sequence[str], *, add_special_tokens: bool = True) -> np.ndarray:
        """float64 array with the model's logit for each text (texts are used as given)."""
        import torch

        scores = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            encoded = self.tokenizer(
                batch,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                add_special_tokens=add_special_tokens,
                return_tensors="pt",
            )
            with torch.inference_mode():
                logits = self.model(**encoded).logits
            scores.append(logits[:, 0].to(torch.float64).numpy())
        return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float64)


class RewardScorer(SequenceScorer):
    """A reward model scoring (question, response) pairs; see `SequenceScorer` for parameters
    (defaults here: batch_size 4, max_length 2048)."""

    def __init__(self, model_path: str, batch_size: int = 4, max_length: int = 2048):
        super().__init__(model_path, batch_size=batch_size, max_length=max_length)

    def format_pair(self, question: str, response: str) -> str:
        """The text the reward model reads: a user/assistant conversation through the
        tokenizer's chat template when it has one, else "question\\n\\nresponse"."""
        if self.tokenizer.chat_template:
            conversation = [{"role": "user", "content": question}, {"role": "assistant", "content": response}]
            return self.tokenizer.apply_chat_template(conversation, tokenize=False)
        return f"{question}\n\n{response}"

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """float64 array with one reward per (question, response) pair."""
        texts = [self.format_pair(question, response) for question, response in pairs]
        # a chat template already writes any special tokens the model expects
        return self.score_texts(texts, add_special_tokens=not self.tokenizer.chat_template)


@dataclass(frozen=True)
class Choice:
    """The response kept for one question.

    `index`: position of the kept response in its group, None when none is kept; `reason`: why,
    e.g. "majority 3/5 (first with a final-answer marker)" or "no response of the majority
    answer has a final-answer marker"; `reward`: the kept response's reward (rule `reward` only).
    """

    index: int | None
    reason: str
    reward: float | None


def choose_responses(
    groups: Sequence[Sequence[tuple[str, bool]]],
    rule: str = "majority",
    *,
    questions: Sequence[str] | None = None,
    scorer: RewardScorer | None = None,
    require_final_answer_marker: bool = True,
) -> list[Choice]:
    """Pick one response per question among those that carry the question's majority answer.

    Inputs: `groups`, per question its responses in sample order as (text, in the winning group
    of `grading.voting`); `rule`: "majority" (the first eligible response) or "reward" (the
    eligible response `scorer` rewards most; needs `questions`, aligned with `groups`);
    `require_final_answer_marker` (default True, as the paper): responses without a final-answer
    marker are not eligible. Only responses in the winning group are ever eligible, so the kept
    response always agrees with the question's reference answer. Output: one `Choice` per group;
    the reward model scores all eligible responses of all groups in one batched call.
    """
    if rule not in ("majority", "reward"):
        raise ValueError(f"rule must be 'majority' or 'reward', got {rule!r}")
    if rule == "reward" and (scorer is None or questions is None):
        raise ValueError("rule 'reward' needs scorer= and questions=")
    if questions is not None and len(questions) != len(groups):
        raise ValueError(f"{len(questions)} questions for {len(groups)} response groups")
    eligible = [
        [agrees and (not require_final_answer_marker or has_final_answer_marker(text)) for text, agrees in group]
        for group in groups
    ]
    rewards: dict[tuple[int, int], float] = {}
    if rule == "reward":
        keys = [(g, i) for g, flags in enumerate(eligible) for i, ok in enumerate(flags) if ok]
        values = scorer.score([(questions[g], groups[g][i][0]) for g, i in keys])
        rewards = dict(zip(keys, values.tolist()))
    return [_choose_one(g, group, eligible[g], rule, rewards) for g, group in enumerate(groups)]


def _choose_one(
    g: int, group: Sequence[tuple[str, bool]], eligible: list[bool], rule: str, rewards: dict[tuple[int, int], float]
) -> Choice:
    """The Choice of group `g` (see `choose_responses`)."""
    agreeing = sum(agrees for _, agrees in group)
    if not agreeing:
        return Choice(None, "no majority answer", None)
    candidates = [i for i, ok in enumerate(eligible) if ok]
    if not candidates:
        return Choice(None, "no response of the majority answer has a final-answer marker", None)
    if rule == "majority":
        return Choice(candidates[0], f"majority {agreeing}/{len(group)} (first eligible)", None)
    best = max(candidates, key=lambda i: rewards[(g, i)])  # first of equal rewards
    reward = rewards[(g, best)]
    return Choice(best, f"reward {reward:.2f} (best of {len(candidates)} with the majority answer)", reward)
