"""Best-of-n responses per question (ScaleQuest steps 5-6, METHODS.md §3.3 and §6.3).

Both rules choose among the responses in the winning group of the project's majority vote
(`grading.voting`), so the kept response carries the question's reference answer: `majority`
keeps the first of them (no model needed); `reward` keeps the one a reward model scores highest
among those with a final-answer marker (the paper: internlm2-7b-reward, best of 5). Any model that
gives one scalar per text works as the scorer (`RewardScorer`): a sequence-classification model
with one output, or a checkpoint with its own code behind `trust_remote_code`.
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
    """One float per text from a model that gives one scalar per sequence.

    Two kinds of model work: a Hugging Face sequence-classification model with one output (the
    raw logit is returned, no activation: the paper's `function_to_apply="none"`), and a model
    with its own code behind `trust_remote_code` whose forward returns one value per sequence in
    `logits` (InternLM2-Reward's `AutoModel` class; a `reward_token_id` in its config is appended
    to every text, as its `get_score` does).

    Parameters: `model_path` (folder or hub id); `batch_tokens`, the token budget of one forward
    pass (rows x longest row; rows are sorted by length so similar lengths share a batch);
    `max_length`, tokens per text: a longer text keeps its first quarter and its end (where a
    response's final answer is) and loses the middle, and is counted in `truncated`; `device` and
    `dtype` as in `common.devices` ("auto": CUDA in bfloat16, else CPU float32);
    `trust_remote_code` (default False) lets the checkpoint run its own Python code (README).
    Batches are right-padded with an attention mask, so a text's score does not depend on its
    batch (up to floating-point rounding). A missing pad token is set to EOS. Eval mode.
    """

    def __init__(
        self,
        model_path: str,
        *,
        batch_tokens: int = 16384,
        max_length: int = 2048,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
    ):
        from mathdata_pipeline.common.devices import placement

        if batch_tokens < 1 or max_length < 2:
            raise ValueError(f"batch_tokens must be >= 1 and max_length >= 2, got {batch_tokens}, {max_length}")
        self.model_path, self.batch_tokens, self.max_length = model_path, batch_tokens, max_length
        self.device, self.dtype = placement(device, dtype)
        self.tokenizer, self.model = _load_scalar_model(model_path, self.device, self.dtype, trust_remote_code)
        self.reward_token_id = getattr(self.model.config, "reward_token_id", None)
        self.truncated = 0

    def token_ids(self, texts: Sequence[str], *, add_special_tokens: bool = True) -> list[list[int]]:
        """The ids the model reads for each text: tokenized, cut to `max_length` by `keep_ends`
        (the reward token, when the model has one, is appended after the cut). Counts cut texts
        in `truncated`."""
        room = self.max_length - (self.reward_token_id is not None)
        encoded = self.tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
        out = []
        for ids in encoded:
            self.truncated += len(ids) > room
            kept = keep_ends(ids, room)
            out.append(kept + [self.reward_token_id] if self.reward_token_id is not None else kept)
        return out

    def score_texts(self, texts: Sequence[str], *, add_special_tokens: bool = True) -> np.ndarray:
        """float64 array with the model's scalar for each text (texts are used as given), in input order."""
        import torch

        from mathdata_pipeline.common.batching import token_budget_batches

        ids = self.token_ids(texts, add_special_tokens=add_special_tokens)
        scores = np.zeros(len(ids), dtype=np.float64)
        pad = self.tokenizer.pad_token_id
        for rows in token_budget_batches([len(x) for x in ids], self.batch_tokens):
            width = max(len(ids[i]) for i in rows)
            input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, i in enumerate(rows):
                input_ids[j, : len(ids[i])] = torch.tensor(ids[i])
                mask[j, : len(ids[i])] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
            scores[rows] = _one_scalar_per_row(logits, len(rows), self.model_path)
        return scores


def keep_ends(ids: list[int], max_length: int) -> list[int]:
    """`ids` cut to `max_length` tokens by dropping the middle: the first quarter of the room
    (special tokens, system prompt, the question's start) and the rest from the end (the end of
    the response, with its final answer). Shorter lists are returned unchanged."""
    if len(ids) <= max_length:
        return list(ids)
    head = max_length // 4
    return list(ids[:head]) + list(ids[len(ids) - (max_length - head) :])


def _one_scalar_per_row(logits, rows: int, model_path: str) -> np.ndarray:
    """float64 (rows,) from a model output of shape (rows,) or (rows, 1); ValueError otherwise."""
    import torch

    if logits.dim() == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if tuple(logits.shape) != (rows,):
        raise ValueError(
            f"{model_path}: the model returned logits of shape {tuple(logits.shape)}; a scorer needs one value per text"
        )
    return logits.to(torch.float64).cpu().numpy()


def _load_scalar_model(model_path: str, device: str, dtype: str, trust_remote_code: bool):
    """(tokenizer, model) of a one-scalar model: the checkpoint's own `AutoModel` class when its
    code maps one and no sequence-classification class, else `AutoModelForSequenceClassification`
    (which must have num_labels=1). ValueError naming `trust_remote_code` when the checkpoint
    ships code and it is not allowed."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise
        raise ValueError(
            f"{model_path} ships its own model code; set trust_remote_code: true in the config to run it "
            "(only for code you have read: it runs with the pipeline's rights)"
        ) from exc
    auto_map = getattr(config, "auto_map", None) or {}
    custom = "AutoModel" in auto_map and "AutoModelForSequenceClassification" not in auto_map
    model_class = AutoModel if custom else AutoModelForSequenceClassification
    extra = {"device_map": {"": device}} if device != "cpu" else {}
    model = model_class.from_pretrained(
        model_path, config=config, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, **extra
    )
    if not custom and model.config.num_labels != 1:
        raise ValueError(f"{model_path}: a scorer needs num_labels=1, the model has {model.config.num_labels}")
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return tokenizer, model


class RewardScorer(SequenceScorer):
    """A reward model scoring (question, response) pairs; parameters as `SequenceScorer`
    (the paper: internlm2-7b-reward, which needs `trust_remote_code=True`)."""

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
