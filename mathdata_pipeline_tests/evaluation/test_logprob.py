"""Batched log-probabilities equal a plain one-at-a-time computation, too-long pairs are left out,
and the ledger serves a second run without a forward pass."""

from __future__ import annotations

import time

import pytest
import torch

from mathdata_pipeline.engines.ledger import RequestLedger
from mathdata_pipeline.evaluation.logprob import BatchScorer, score_many, weights_revision

PAIRS = [
    ("Question: what is 2 + 2?\nAnswer: ", "2 + 2 = 4, so the answer is 4."),
    ("Q: 7 * 6?\nA: ", "42"),
    ("A longer question about trains leaving a station at noon and at three.\nAnswer: ", "They meet at 5 pm."),
    ("Q: 1?\nA: ", "One, written as 1, the smallest positive integer, and the answer."),
]


def _plain(scorer: BatchScorer, prompt: str, completion: str) -> float:
    """The baseline: one unpadded forward pass per pair, log-softmax over every position."""
    p, c = scorer.encode(prompt, completion)
    with torch.no_grad():
        logits = scorer.model(torch.tensor([p + c])).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return float(sum(logprobs[len(p) - 1 + i, t] for i, t in enumerate(c)))


@pytest.fixture
def scorer(tiny_llama):
    return BatchScorer(tiny_llama, model_id="tiny", max_tokens=64, batch_tokens=48)


def test_batched_scores_equal_one_pair_at_a_time(scorer):
    scores = scorer.score(PAIRS)
    for (prompt, completion), score in zip(PAIRS, scores):
        assert score.tokens == len(scorer.encode(prompt, completion)[1])
        assert score.logprob == pytest.approx(_plain(scorer, prompt, completion), abs=1e-4)
    assert len(scorer._batches(list(range(len(PAIRS))), [scorer.encode(*p) for p in PAIRS])) > 1


def test_pairs_longer_than_max_tokens_get_no_score(scorer):
    long = ("Tell me everything. " * 30, "Everything.")
    scores = scorer.score([PAIRS[0], long])
    assert scores[0] is not None and scores[1] is None
    with pytest.raises(ValueError, match="pair 0: empty prompt or completion"):
        scorer.score([("question", "")])


def test_the_ledger_serves_a_rerun_without_scoring(scorer, tmp_path):
    with RequestLedger(tmp_path / "ledger.sqlite") as ledger:
        first, stats = score_many(scorer, ledger, PAIRS + [PAIRS[0]], log=lambda _: None)
        assert stats.cache_hits == 0 and first[0] == first[-1]
        scorer.model = None  # a fault injected on purpose: any forward pass now fails
        again, stats = score_many(scorer, ledger, PAIRS, log=lambda _: None)
    assert stats.cache_hits == len(PAIRS) and again == first[:-1]


def test_a_rewritten_model_gets_a_new_revision(tiny_llama, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_llama, copy)
    before = weights_revision(copy)
    assert before == weights_revision(copy)
    time.sleep(0.01)
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes())
    assert weights_revision(copy) != before
