"""Best-of-n responses per question (ScaleQuest steps 5-6, METHODS.md §3.3 and §6.3).

Two rules: `majority` keeps the first response whose final answer is the most common one
(self-consistency, no model needed); `reward` keeps the response a reward model scores highest
among those with a final-answer marker (the paper: internlm2-7b-reward, best of 5). Any Hugging
Face sequence-classification model with one output works as the scorer (`RewardScorer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mathdata_pipeline.methods.grading import normalize_answer

_MARKERS = ("boxed", "he answer is", "final answer is")


def has_final_answer_marker(text: str) -> bool:
    """True when `text` contains "boxed", "he answer is" or "final answer is" (case-sensitive,
    as the paper's response filter)."""
    return any(marker in text for marker in _MARKERS)


def _normalized(answer: str | None) -> str:
    """`normalize_answer` of an extracted answer; "" for None or blank."""
    return normalize_answer(answer) if answer is not None and answer.strip() else ""


def most_common_answer(answers: Sequence[str | None]) -> tuple[str | None, int]:
    """The most common final answer among one question's samples.

    Input: extracted answers (None or blank when nothing was extracted; these never win).
    Output: (the winner's `normalize_answer` form, how many answers share it), or (None, 0)
    when no answer is present. Ties go to the answer that occurs first in `answers`.
    """
    counts: dict[str, int] = {}
    for normalized in map(_normalized, answers):
        if normalized:
            counts[normalized] = counts.get(normalized, 0) + 1
    if not counts:
        return None, 0
    winner = max(counts, key=counts.__getitem__)  # max keeps the first of equal counts (insertion order)
    return winner, counts[winner]


def majority_selection(answers: Sequence[str | None], min_agreement: int = 2) -> tuple[int | None, str | None, int]:
    """Majority-vote choice among one question's responses.

    Inputs: the extracted answer of each response (None when absent); `min_agreement`, the
    least number of responses that must share the winning answer.
    Output: (index of the first response whose normalized answer is the majority answer,
    that normalized answer, its count). When the count is below `min_agreement` the index and
    answer are None and the count is the best count found.
    """
    normalized = [_normalized(answer) for answer in answers]
    winner, count = most_common_answer(answers)
    if winner is None or count < min_agreement:
        return None, None, count
    return normalized.index(winner), winner, count


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
            batch = list(texts[start:start + self.batch_size])
            encoded = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                     add_special_tokens=add_special_tokens, return_tensors="pt")
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
    e.g. "majority 3/5" or "no final answer marker"; `reward`: the kept response's reward
    (rule `reward` only); `majority_answer` and `votes`: the most common answer among the
    group's eligible responses and how many share it.
    """

    index: int | None
    reason: str
    reward: float | None
    majority_answer: str | None
    votes: int


def choose_responses(groups: Sequence[Sequence[tuple[str, str | None]]], rule: str = "majority", *,
                     questions: Sequence[str] | None = None, scorer: RewardScorer | None = None,
                     min_agreement: int = 2, require_final_answer_marker: bool = True) -> list[Choice]:
    """Pick one response per question.

    Inputs: `groups`, per question the list of (response text, extracted answer or None);
    `rule`: "majority" (first response with the majority answer, which needs `min_agreement`
    votes) or "reward" (highest `scorer` reward; needs `questions`, aligned with `groups`, and
    `scorer`); `require_final_answer_marker` (default True, as the paper): responses without a
    final-answer marker are skipped before either rule (for the vote their answer counts as
    missing, the denominator stays the group size).
    Output: one `Choice` per group. The reward model scores all eligible responses of all
    groups in one batched call.
    """
    if rule not in ("majority", "reward"):
        raise ValueError(f"rule must be 'majority' or 'reward', got {rule!r}")
    if rule == "reward" and (scorer is None or questions is None):
        raise ValueError("rule 'reward' needs scorer= and questions=")
    if questions is not None and len(questions) != len(groups):
        raise ValueError(f"{len(questions)} questions for {len(groups)} response groups")
    eligible = [[not require_final_answer_marker or has_final_answer_marker(text) for text, _ in group]
                for group in groups]
    rewards: dict[tuple[int, int], float] = {}
    if rule == "reward":
        keys = [(g, i) for g, flags in enumerate(eligible) for i, ok in enumerate(flags) if ok]
        values = scorer.score([(questions[g], groups[g][i][0]) for g, i in keys])
        rewards = dict(zip(keys, values.tolist()))
    return [_choose_one(g, group, eligible[g], rule, rewards, min_agreement) for g, group in enumerate(groups)]


def _choose_one(g: int, group: Sequence[tuple[str, str | None]], eligible: list[bool], rule: str,
                rewards: dict[tuple[int, int], float], min_agreement: int) -> Choice:
    """The Choice of group `g` (see `choose_responses`)."""
    if not group:
        return Choice(None, "no responses", None, None, 0)
    if not any(eligible):
        return Choice(None, "no final answer marker", None, None, 0)
    answers = [answer if ok else None for (_, answer), ok in zip(group, eligible)]
    index, winner, votes = majority_selection(answers, min_agreement)
    if rule == "majority":
        if index is None:
            return Choice(None, f"no majority (best {votes}/{len(group)})", None, None, votes)
        return Choice(index, f"majority {votes}/{len(group)}", None, winner, votes)
    candidates = [i for i, ok in enumerate(eligible) if ok]
    best = max(candidates, key=lambda i: rewards[(g, i)])  # first of equal rewards
    reward = rewards[(g, best)]
    return Choice(best, f"reward {reward:.2f} (best of {len(candidates)} with final-answer marker)", reward,
                  winner, votes)
