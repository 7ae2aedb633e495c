"""Influence scores, rank fusion and pruning arithmetic on hand-made inputs, and the baselines and an
end-to-end score on a tiny real model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mathdata_pipeline.common.hf_models import load_causal_lm
from mathdata_pipeline.influence.gradient_features import Example, GradientFeaturizer
from mathdata_pipeline.influence.scores import (
    embedding_similarity,
    fuse_ranks,
    influence_scores,
    percentile_ranks,
    perplexity_scores,
    prune,
    prune_by_score,
    random_scores,
)
from mathdata_pipeline_tests.influence.test_gradient_features import build_tiny_causal_lm, gsm8k_rows

TRAIN = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
V_C = np.array([[1.0, 0.0], [0.6, 0.8]])
V_I = np.array([[0.0, 1.0]])


def test_influence_scores_mean_and_max():
    scores = influence_scores(TRAIN, V_C, V_I)
    np.testing.assert_allclose(scores.s_c, [0.8, 0.4, 0.8])  # (1 + 0.6) / 2, (0 + 0.8) / 2, (0.6 + 1) / 2
    np.testing.assert_allclose(scores.s_i, [0.0, 1.0, 0.8])
    assert scores.notes == []
    np.testing.assert_allclose(influence_scores(TRAIN, V_C, V_I, aggregate="max").s_c, [1.0, 0.8, 1.0])


def test_empty_reference_set_gives_nan_and_a_note():
    scores = influence_scores(TRAIN, V_C, np.zeros((0, 2)))
    assert np.isnan(scores.s_i).all() and len(scores.notes) == 1 and "V_I is empty" in scores.notes[0]
    np.testing.assert_allclose(fuse_ranks(scores.s_c, scores.s_i), [0.75, 0.0, 0.75])  # r_C alone
    no_correct = influence_scores(TRAIN, np.zeros((0, 2)), V_I)
    np.testing.assert_allclose(fuse_ranks(no_correct.s_c, no_correct.s_i, "min"), [1.0, 0.0, 0.5])  # 1 - r_I
    with pytest.raises(ValueError, match="both all NaN"):
        fuse_ranks(np.full(3, np.nan), np.full(3, np.nan))
    with pytest.raises(ValueError, match="needs s_I"):
        prune(["a", "b", "c"], scores.s_c, scores.s_i, 0.34, rule="high_harm")


def test_bad_feature_rows_are_named():
    with pytest.raises(ValueError, match="val_incorrect_features: row 0 has a non-finite value"):
        influence_scores(TRAIN, V_C, np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="val_correct_features: expected a 2-D matrix with 2 columns"):
        influence_scores(TRAIN, np.ones((2, 3)), V_I)


def test_percentile_ranks_average_ties():
    np.testing.assert_allclose(percentile_ranks(np.array([3.0, 1.0, 2.0, 2.0])), [1.0, 0.0, 0.5, 0.5])
    np.testing.assert_allclose(percentile_ranks(np.array([5.0, 5.0, 5.0])), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(percentile_ranks(np.array([7.0])), [0.5])
    with pytest.raises(ValueError, match="row 1 is NaN"):
        percentile_ranks(np.array([1.0, np.nan]))


def test_fuse_ranks_exact_arithmetic():
    s_c = np.array([0.1, 0.4, 0.3, 0.2, 0.5])  # r_C = [0, .75, .5, .25, 1]
    s_i = np.array([0.9, 0.1, 0.2, 0.3, 0.8])  # r_I = [1, 0, .25, .5, .75]
    np.testing.assert_allclose(fuse_ranks(s_c, s_i, "difference"), [-1.0, 0.75, 0.25, -0.25, 0.25])
    np.testing.assert_allclose(fuse_ranks(s_c, s_i, "min"), [0.0, 0.75, 0.5, 0.25, 0.25])


def test_prune_rules_exact_masks_and_tie_breaking():
    ids = ["e", "d", "c", "b", "a"]
    s_c = np.array([0.1, 0.4, 0.3, 0.2, 0.5])
    s_i = np.array([0.9, 0.1, 0.2, 0.3, 0.8])
    keep, reasons = prune(ids, s_c, s_i, 0.4, rule="low_benefit")
    assert keep.tolist() == [False, True, True, False, True]
    assert reasons[0].startswith("low_benefit s_C=0.1") and reasons[1] == ""
    keep, _ = prune(ids, s_c, s_i, 0.4, rule="high_harm")
    assert keep.tolist() == [False, True, True, True, False]
    # Fused "difference" ranks are [-1, .75, .25, -.25, .25]: "c" and "a" tie at .25, so with
    # three to drop the tie goes to the smaller id, "a".
    keep, reasons = prune(ids, s_c, s_i, 0.6, rule="combined")
    assert keep.tolist() == [False, True, True, False, False]
    assert reasons[4].startswith("combined (difference) r=0.25")
    keep, _ = prune(ids, s_c, s_i, 0.6, rule="combined", fusion="min")  # [0, .75, .5, .25, .25]: drops e, a, b
    assert keep.tolist() == [False, True, True, False, False]
    keep, _ = prune(ids, s_c, s_i, 0.0)
    assert keep.all()
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        prune(["a", "a"], s_c[:2], s_i[:2], 0.5)
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\)"):
        prune(ids, s_c, s_i, 1.0)


def test_prune_by_score_keeps_high_low_or_middle():
    ids = ["a", "b", "c", "d", "e", "f"]
    scores = np.array([3.0, 1.0, 2.0, 5.0, 4.0, 1.0])
    # High: drops the three lowest, 1 ("b"), 1 ("f") and 2 ("c"); low: the three highest, 5, 4, 3.
    assert prune_by_score(ids, scores, 0.5, keep="high").tolist() == [True, False, False, True, True, False]
    assert prune_by_score(ids, scores, 0.5, keep="low").tolist() == [False, True, True, False, False, True]
    # Middle: 3 dropped, one from the bottom ("b" before "f" on the tie) and two from the top.
    assert prune_by_score(ids, scores, 0.5, keep="middle").tolist() == [True, False, True, False, False, True]


def test_random_and_embedding_baselines():
    first = random_scores(["a", "b", "c"], seed=3)
    assert ((first >= 0) & (first < 1)).all() and len(set(first)) == 3
    np.testing.assert_array_equal(random_scores(["c", "a"], seed=3), first[[2, 0]])
    assert not np.allclose(random_scores(["a", "b", "c"], seed=4), first)
    similarity = embedding_similarity(np.array([[2.0, 0.0], [0.0, 3.0]]), np.array([[1.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_allclose(similarity, [(1 + 2**-0.5) / 2, (0 + 2**-0.5) / 2])
    with pytest.raises(ValueError, match="train_embeddings: row 1 is a zero vector"):
        embedding_similarity(np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[1.0, 0.0]]))


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory, data_root) -> Path:
    rows = gsm8k_rows(data_root, 200)
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), [r["question"] + r["answer"] for r in rows])


def test_perplexity_scores_equal_hf_loss(tiny_lm):
    model, tokenizer = load_causal_lm(str(tiny_lm))
    examples = [
        Example("p1", "What is 2 plus 3? ", "2 plus 3 is 5."),
        Example("p2", "Add 10 and 4. ", "The sum is 14."),
    ]
    scores = perplexity_scores(model, tokenizer, examples, batch_size=2)
    for score, example in zip(scores, examples):
        prompt = tokenizer(example.prompt, add_special_tokens=False).input_ids
        ids = prompt + tokenizer(example.response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        with torch.no_grad():
            loss = model(
                input_ids=torch.tensor([ids]), labels=torch.tensor([[-100] * len(prompt) + ids[len(prompt) :]])
            ).loss
        assert score == pytest.approx(loss.item(), rel=1e-5)


def test_training_copy_of_a_correct_reference_scores_highest(tiny_lm, data_root):
    rows = gsm8k_rows(data_root, 6)
    examples = [Example(f"t{i}", f"Question: {r['question']}\nAnswer: ", r["answer"]) for i, r in enumerate(rows)]
    featurizer = GradientFeaturizer(str(tiny_lm), proj_dim=1024, max_length=200, batch_size=3)
    train = featurizer.features(examples)
    correct = featurizer.features([Example("v0", examples[2].prompt, examples[2].response)])
    wrong = featurizer.features([Example("v1", examples[4].prompt, "The answer is 7.\n#### 7")])
    scores = influence_scores(train, correct, wrong)
    assert int(np.argmax(scores.s_c)) == 2 and scores.s_c[2] == pytest.approx(1.0, abs=1e-5)
    keep, _ = prune([e.example_id for e in examples], scores.s_c, scores.s_i, 0.5)
    assert keep.sum() == 3 and keep[2]
