"""QaDS quality on real parts: FAISS k-means anchors, one-shot win rates scored by the embedded
SmolLM2 on llama.cpp over real GSM8K pairs, and the ridge quality scorer."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from mathdata_pipeline.engines.base import TokenScore
from mathdata_pipeline.engines.local import LocalEngine
from mathdata_pipeline.qads.embeddings import SentenceEmbedder, render_for_embedding
from mathdata_pipeline.qads.quality import (
    choose_anchors,
    fit_quality_scorer,
    label_subset,
    one_shot_prompt,
    quality_scores,
    win_rates,
    zero_shot_prompt,
)

GARBAGE = ("Zebra violet quantum spoon? Lorem ipsum dolor.", "Purple monkey dishwasher orbit kettle banana flux.")


@pytest.fixture(scope="module")
def gsm8k_pairs(data_root) -> list[tuple[str, str]]:
    """The seven shortest of the first 400 GSM8K training pairs (keeps the scoring fast)."""
    with gzip.open(data_root / "gsm8k" / "gsm8k_train.jsonl.gz", "rt", encoding="utf-8") as fh:
        rows = [json.loads(next(fh)) for _ in range(400)]
    rows.sort(key=lambda r: len(r["question"]) + len(r["answer"]))
    return [(r["question"], r["answer"]) for r in rows[:7]]


class MemoScorer:
    """`score_many` over the real engine with an in-memory cache (the role the ledger plays in the
    pipeline); `engine_calls` counts the pairs the engine actually scored."""

    def __init__(self, engine: LocalEngine):
        self.engine, self.memo, self.engine_calls, self.calls = engine, {}, 0, 0

    def __call__(self, pairs):
        self.calls += 1
        for pair in pairs:
            if pair not in self.memo:
                self.memo[pair] = self.engine.score(*pair)
                self.engine_calls += 1
        return [self.memo[pair] for pair in pairs]


@pytest.fixture(scope="module")
def engine():
    with LocalEngine(n_ctx=1024) as eng:
        yield eng


@pytest.fixture(scope="module")
def scorer(engine) -> MemoScorer:
    return MemoScorer(engine)


@pytest.fixture(scope="module")
def crafted(gsm8k_pairs, scorer):
    """Candidates: a copy of anchor 0, two other real pairs, garbage; anchors: three real pairs."""
    anchors = gsm8k_pairs[4:7]
    candidates = [anchors[0], gsm8k_pairs[0], gsm8k_pairs[1], GARBAGE]
    return candidates, anchors, win_rates(candidates, anchors, scorer, exclude_self=False)


def _blobs(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(5, 16)) * 10
    return (centers[np.repeat(np.arange(5), 40)] + rng.normal(size=(200, 16))).astype(np.float32)


def test_kmeans_anchors_are_distinct_one_per_cluster_and_deterministic():
    x = _blobs()
    anchors = choose_anchors(x, m=5, method="kmeans", seed=3)
    assert len(set(anchors.tolist())) == 5 and sorted(anchors.tolist()) == anchors.tolist()
    assert sorted(set((anchors // 40).tolist())) == [0, 1, 2, 3, 4]  # one nearest row per well-separated cluster
    np.testing.assert_array_equal(anchors, choose_anchors(x, m=5, method="kmeans", seed=3))
    many = choose_anchors(x, m=150, method="kmeans", seed=0)
    assert len(np.unique(many)) == 150
    assert choose_anchors(x[:7], m=100).tolist() == list(range(7))  # m is capped at n
    sample = choose_anchors(x, m=20, method="random", seed=1)
    assert len(np.unique(sample)) == 20 and sample.max() < 200
    np.testing.assert_array_equal(sample, choose_anchors(x, m=20, method="random", seed=1))
    with pytest.raises(ValueError, match="method"):
        choose_anchors(x, m=3, method="dbscan")


def test_prompts_put_one_demonstration_before_the_zero_shot_prompt():
    zero = zero_shot_prompt("What is {x} + 1?")
    assert zero == "Question: What is {x} + 1?\nAnswer:\n"
    one = one_shot_prompt("What is 2 + 2?", "2 + 2 = 4.\n#### 4", "What is {x} + 1?")
    assert one == "Question: What is 2 + 2?\nAnswer:\n2 + 2 = 4.\n#### 4\n\n" + zero


def test_win_rates_on_real_gsm8k_pairs(crafted, engine):
    candidates, anchors, rates = crafted
    assert rates.q.shape == (4,) and rates.s0.shape == (3,) and rates.s1.shape == (4, 3)
    assert ((rates.q >= 0) & (rates.q <= 1)).all() and ((rates.q_mean_logp >= 0) & (rates.q_mean_logp <= 1)).all()
    assert rates.pairs_scored == 3 + 4 * 3
    # deterministic: the engine gives the same scores again
    assert engine.score(zero_shot_prompt(anchors[1][0]), anchors[1][1]).logprob == rates.s0[1]
    assert engine.score(one_shot_prompt(*candidates[3], anchors[2][0]), anchors[2][1]).logprob == rates.s1[3, 2]
    # copying helps: the anchor itself as the demonstration makes its answer far more likely
    assert rates.s1[0, 0] > rates.s0[0] + 20
    # garbage helps less than any real demonstration, on every anchor, and wins less often
    assert (rates.s1[3] < rates.s1[:3].min(axis=0)).all()
    assert rates.q[3] < rates.q[0]


def test_exclude_self_skips_the_identical_anchor(crafted, scorer):
    candidates, anchors, full = crafted
    calls_before = scorer.engine_calls
    rates = win_rates(candidates, anchors, scorer, exclude_self=True, max_pairs_per_call=4)
    assert scorer.engine_calls == calls_before  # every pair was scored before
    assert rates.pairs_scored == 3 + 4 * 3 - 1 and np.isnan(rates.s1[0, 0])
    np.testing.assert_array_equal(rates.s1[1:], full.s1[1:])
    assert rates.q[0] == float(np.mean(full.s1[0, 1:] > full.s0[1:]))
    alone = win_rates([anchors[0]], [anchors[0]], scorer)
    assert np.isnan(alone.q[0]) and alone.pairs_scored == 1


def test_win_rates_reject_bad_input_and_bad_scores(gsm8k_pairs):
    def scores_one_pair_short_fault(pairs):
        return [TokenScore(-1.0, 3)] * (len(pairs) - 1)

    with pytest.raises(ValueError, match=r"anchors\[1\]\.answer"):
        win_rates(gsm8k_pairs[:1], [gsm8k_pairs[1], (gsm8k_pairs[2][0], " ")], scores_one_pair_short_fault)
    with pytest.raises(ValueError, match="metric"):
        win_rates(gsm8k_pairs[:1], gsm8k_pairs[1:2], scores_one_pair_short_fault, metric="max_logp")
    with pytest.raises(ValueError, match="returned 1 scores for 2 pairs"):
        win_rates(gsm8k_pairs[:1], gsm8k_pairs[1:2], scores_one_pair_short_fault)


def test_ridge_scorer_finds_a_linear_signal_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16))
    signal = np.clip(0.5 + 0.1 * (x @ rng.normal(size=16)) + 0.02 * rng.normal(size=400), 0, 1)
    fitted = fit_quality_scorer(x, signal, alpha=1.0, holdout=0.25, seed=0)
    assert fitted.heldout_count == 100 and fitted.labelled_count == 400
    assert fitted.heldout_pearson > 0.9 and fitted.heldout_spearman > 0.9
    predicted = fitted.predict(rng.normal(size=(50, 16)) * 5)
    assert predicted.shape == (50,) and ((predicted >= 0) & (predicted <= 1)).all()

    noise = fit_quality_scorer(x, rng.uniform(size=400), seed=0)
    assert abs(noise.heldout_pearson) < 0.3 and abs(noise.heldout_spearman) < 0.3


def test_ridge_scorer_on_tiny_and_partial_labels():
    x = np.arange(12, dtype=float).reshape(6, 2)
    q = np.array([0.0, 0.2, np.nan, 0.6, 0.8, 1.0])
    tiny = fit_quality_scorer(x, q, holdout=0.25)  # 5 finite labels: 1 held out
    assert tiny.labelled_count == 5 and tiny.heldout_count == 1 and np.isnan(tiny.heldout_pearson)
    constant = fit_quality_scorer(np.random.default_rng(0).normal(size=(20, 2)), np.full(20, 0.5))
    assert np.isnan(constant.heldout_spearman)
    with pytest.raises(ValueError, match="no labelled row"):
        fit_quality_scorer(x, np.full(6, np.nan))
    with pytest.raises(ValueError, match="row 1"):
        fit_quality_scorer(np.array([[0.0], [np.inf]]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        tiny.predict(np.zeros((3, 3)))


def test_label_subset_sizes_and_determinism():
    assert len(label_subset(1000, fraction=0.1, min_count=20, max_count=2000)) == 100
    assert len(label_subset(1000, fraction=0.01, min_count=20, max_count=2000)) == 20
    assert len(label_subset(100_000, fraction=0.1, min_count=20, max_count=2000)) == 2000
    assert len(label_subset(7, fraction=0.1, min_count=20, max_count=2000)) == 7
    chosen = label_subset(500, fraction=0.2, seed=4)
    assert len(np.unique(chosen)) == 100 and (np.diff(chosen) > 0).all()
    np.testing.assert_array_equal(chosen, label_subset(500, fraction=0.2, seed=4))
    with pytest.raises(ValueError, match="fraction"):
        label_subset(10, fraction=1.5)


def test_quality_scores_for_a_small_pool(gsm8k_pairs, scorer):
    rows = gsm8k_pairs[:6]
    embeddings = SentenceEmbedder("embedded").embed([render_for_embedding(q, a) for q, a in rows])
    result = quality_scores(rows, embeddings, scorer, anchors=2, label_fraction=0.5, min_labels=4, max_labels=4, seed=0)
    labelled = np.flatnonzero(~np.isnan(result.q_label))
    assert len(labelled) == 4 and result.report["labelled"] == 4 and result.report["anchors"] == 2
    assert result.report["pairs_scored"] == 2 + 4 * 2 - len(set(labelled) & set(result.report["anchor_rows"]))
    assert ((result.q_pred >= 0) & (result.q_pred <= 1)).all()
    np.testing.assert_array_equal(result.q[labelled], result.q_label[labelled])
    unlabelled = np.setdiff1d(np.arange(6), labelled)
    np.testing.assert_array_equal(result.q[unlabelled], result.q_pred[unlabelled])
    assert "heldout_pearson" in result.report
