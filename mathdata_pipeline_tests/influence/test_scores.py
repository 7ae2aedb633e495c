"""Influence scores (mean and max aggregates, the checkpoint sum), rank fusion and pruning
arithmetic on hand-made inputs, the baselines, and the first-order claim behind influence on a
tiny real model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mathdata_pipeline.common.hf_models import load_causal_lm
from mathdata_pipeline.influence.gradient_features import (
    Example,
    GradientFeaturizer,
    encode_example,
    pad_batch,
    response_losses,
)
from mathdata_pipeline.influence.scores import (
    SCORE_SCHEMA,
    checkpoint_influence,
    embedding_similarity,
    fuse_ranks,
    influence_scores,
    influence_table,
    percentile_ranks,
    perplexity_scores,
    prune,
    prune_by_score,
    random_scores,
)
from mathdata_pipeline.influence.warmup import warmup_lora
from mathdata_pipeline_tests.influence.conftest import gsm8k_rows

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


def test_perplexity_scores_equal_hf_loss(tiny_lm):
    model, tokenizer = load_causal_lm(str(tiny_lm))
    examples = [
        Example("p1", "What is 2 plus 3? ", "2 plus 3 is 5."),
        Example("p2", "Add 10 and 4. ", "The sum is 14."),
    ]
    scores = perplexity_scores(model, tokenizer, examples, max_batch_tokens=64)
    for score, example in zip(scores, examples):
        prompt = tokenizer(example.prompt, add_special_tokens=False).input_ids
        ids = prompt + tokenizer(example.response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        with torch.no_grad():
            loss = model(
                input_ids=torch.tensor([ids]), labels=torch.tensor([[-100] * len(prompt) + ids[len(prompt) :]])
            ).loss
        assert score == pytest.approx(loss.item(), rel=1e-5)


def test_influence_predicts_the_loss_change_of_a_training_step(tiny_lm, data_root, tmp_path):
    """What influence claims, checked directly on a warmed-up adapter (A and B both non-zero):
    one small SGD step on training example d changes validation example v's loss by about
    -lr * <g_d, g_v> (so the gradients and the sign are right), the projected features estimate
    that inner product (unit features times their norms), and a positive influence (cosine)
    means the step lowers v's loss."""
    rows = sorted(gsm8k_rows(data_root, 40), key=lambda r: len(r["question"] + r["answer"]))[:10]
    train = [Example(f"t{i}", f"Question: {r['question']}\nAnswer: ", r["answer"]) for i, r in enumerate(rows[:8])]
    val = [Example(f"v{i}", f"Question: {r['question']}\nAnswer: ", r["answer"]) for i, r in enumerate(rows[8:])]
    (checkpoint,) = warmup_lora(
        str(tiny_lm), train, tmp_path / "warm", epochs=1, batch_size=2, lr=1e-2, r=8, alpha=16, max_length=160
    )
    featurizer = GradientFeaturizer(str(tiny_lm), checkpoint.path, proj_dim=8192, max_length=160)
    model, lr = featurizer.model, 0.1
    params = [dict(model.named_parameters())[name] for name in featurizer.parameter_names]
    offsets = np.cumsum([0] + [p.numel() for p in params])

    def batch(example):
        return pad_batch([encode_example(featurizer.tokenizer, example, 160)], featurizer.tokenizer.pad_token_id)

    def step(grad, sign):
        with torch.no_grad():
            for p, a, b in zip(params, offsets[:-1], offsets[1:]):
                p += sign * lr * grad[a:b].reshape(p.shape)

    def val_losses():
        with torch.no_grad():
            return np.array([response_losses(model, *batch(v)).item() for v in val])

    def autograd_gradient(example):  # plain backward, independent of the featurizer's hooks
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            response_losses(model, *batch(example)).sum().backward()
        return torch.cat([p.grad.reshape(-1) for p in params])

    before = val_losses()
    val_grads = torch.stack([autograd_gradient(v) for v in val])
    exact, actual = np.zeros((len(train), len(val))), np.zeros((len(train), len(val)))
    for i, example in enumerate(train):
        grad = autograd_gradient(example)
        exact[i] = (val_grads @ grad).numpy()
        step(grad, -1)
        actual[i] = val_losses() - before
        step(grad, +1)
    assert np.corrcoef(-lr * exact.ravel(), actual.ravel())[0, 1] > 0.98
    np.testing.assert_allclose(actual, -lr * exact, atol=0.15 * lr * np.abs(exact).max())

    t_unit, t_norm = featurizer.features_with_norms(train)
    v_unit, v_norm = featurizer.features_with_norms(val)
    estimated = (t_unit * t_norm[:, None]) @ (v_unit * v_norm[:, None]).T
    assert np.corrcoef(estimated.ravel(), exact.ravel())[0, 1] > 0.95
    np.testing.assert_allclose(estimated, exact, atol=0.15 * np.abs(exact).max())
    s_c = influence_scores(t_unit, v_unit[:1], v_unit[1:]).s_c  # cosines with v0
    clear = np.abs(actual[:, 0]) > 0.1 * np.abs(actual[:, 0]).max()
    assert clear.sum() >= 4 and (np.sign(s_c[clear]) == -np.sign(actual[clear, 0])).all()


def test_max_aggregate_takes_the_best_validation_problem():
    train = np.array([[1.0, 0.0], [0.0, 1.0]])
    v_c = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    groups = ["p1", "p2", "p2"]  # p1: (1, 0); p2: mean of (0, 1) and (.6, .8)
    scores = influence_scores(train, v_c, V_I, "max", correct_groups=groups)
    np.testing.assert_allclose(scores.s_c, [max(1.0, 0.3), max(0.0, 0.9)])
    np.testing.assert_allclose(influence_scores(train, v_c, V_I, "max").s_c, [1.0, 1.0])  # each query its own
    with pytest.raises(ValueError, match="3 rows but 2 group labels"):
        influence_scores(train, v_c, V_I, "max", correct_groups=["a", "b"])


def test_checkpoints_are_summed_with_their_weights():
    val = np.array([[1.0, 0.0], [0.0, 1.0]])
    correct = np.array([True, False])
    first, second = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    scores = checkpoint_influence([(0.75, first, val), (0.25, second, val)], correct, ["p", "q"])
    np.testing.assert_allclose(scores.s_c, [0.75])  # 0.75 * <(1,0),(1,0)> + 0.25 * <(0,1),(1,0)>
    np.testing.assert_allclose(scores.s_i, [0.25])
    with pytest.raises(ValueError, match="2 validation features but 3 correctness labels"):
        checkpoint_influence([(1.0, first, val)], np.array([True, False, True]), ["p", "q", "r"])


def test_influence_table_lists_held_out_rows_without_scores():
    val = np.array([[1.0, 0.0], [0.0, 1.0]])
    table, notes = influence_table(
        ["a", "b", "c"],
        [(1.0, TRAIN, val)],
        np.array([True, False]),
        ["p", "q"],
        perplexity=np.array([1.0, 2.0, 3.0]),
        similarity=np.array([0.1, 0.2, 0.3]),
        heldout_ids=["h1"],
    )
    assert table.schema == SCORE_SCHEMA and notes == []
    assert table.column("sample_id").to_pylist() == ["a", "b", "c", "h1"]
    assert table.column("heldout").to_pylist() == [False, False, False, True]
    assert table.column("s_correct").to_pylist()[:3] == pytest.approx([1.0, 0.0, 0.6])
    assert table.column("s_correct").to_pylist()[3] is None and table.column("perplexity").to_pylist()[3] is None
