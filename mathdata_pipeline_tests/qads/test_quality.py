"""QaDS quality on real parts: one-shot win rates scored by the embedded
SmolLM2 on llama.cpp over real GSM8K pairs rendered with its chat template (the SFT template),
None scores as counted errors, the ridge quality scorer and its held-out correlation gate."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pytest

from mathdata_pipeline.engines.base import TokenScore
from mathdata_pipeline.engines.local import LocalEngine
from mathdata_pipeline.qads.embeddings import SentenceEmbedder, render_for_embedding
from mathdata_pipeline.qads.quality import (
    ALPACA_HEADER,
    ScorerTooWeak,
    alpaca_prompt,
    chat_renderer,
    fit_quality_scorer,
    label_subset,
    one_shot_messages,
    quality_scores,
    quality_table,
    scorer_problem,
    win_rates,
    zero_shot_messages,
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


class FaultInjectingScorer:
    """FAULT INJECTION: the real scorer, except that pairs whose completion is one of `refuse` come
    back None, as the engine answers a pair that does not fit its context."""

    def __init__(self, scorer: MemoScorer, refuse: set[str]):
        self.scorer, self.refuse = scorer, refuse

    def __call__(self, pairs):
        scores = self.scorer(pairs)
        return [None if completion in self.refuse else s for (_, completion), s in zip(pairs, scores)]


@pytest.fixture(scope="module")
def engine():
    with LocalEngine(n_ctx=1024) as eng:
        yield eng


@pytest.fixture(scope="module")
def render(engine):
    return chat_renderer(engine)


@pytest.fixture(scope="module")
def scorer(engine) -> MemoScorer:
    return MemoScorer(engine)


@pytest.fixture(scope="module")
def crafted(gsm8k_pairs, scorer, render):
    """Candidates: a copy of anchor 0 (under another problem key, so it is compared), two other
    real pairs, garbage; anchors: three real pairs."""
    anchors = gsm8k_pairs[4:7]
    candidates = [anchors[0], gsm8k_pairs[0], gsm8k_pairs[1], GARBAGE]
    rates = win_rates(
        candidates,
        anchors,
        scorer,
        render=render,
        candidate_problems=["copy", "c1", "c2", "garbage"],
        anchor_problems=["a0", "a1", "a2"],
    )
    return candidates, anchors, rates


def test_prompts_are_the_sft_template_with_one_demonstration_in_front(render):
    one = render(one_shot_messages("What is 2 + 2?", "2 + 2 = 4.\n#### 4", "What is {x} + 1?"))
    zero = render(zero_shot_messages("What is {x} + 1?"))
    demo = "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n2 + 2 = 4.\n#### 4<|im_end|>\n"
    assert one.endswith(demo + "<|im_start|>user\nWhat is {x} + 1?<|im_end|>\n<|im_start|>assistant\n")
    assert zero.endswith("<|im_start|>user\nWhat is {x} + 1?<|im_end|>\n<|im_start|>assistant\n")
    assert one.replace(demo, "") == zero  # the one-shot prompt is the zero-shot one with the demonstration inserted
    alpaca = alpaca_prompt(one_shot_messages("Q1", "A1", "Q2"))
    assert (
        alpaca == ALPACA_HEADER + "### Instruction:\nQ1\n\n### Response:\nA1\n\n### Instruction:\nQ2\n\n### Response:\n"
    )
    with pytest.raises(ValueError, match="ends with a user turn"):
        alpaca_prompt([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])


def test_win_rates_on_real_gsm8k_pairs(crafted, engine, render):
    candidates, anchors, rates = crafted
    assert rates.q.shape == (4,) and rates.s0.shape == (3,) and rates.s1.shape == (4, 3)
    assert ((rates.q >= 0) & (rates.q <= 1)).all() and ((rates.q_mean_logp >= 0) & (rates.q_mean_logp <= 1)).all()
    assert rates.pairs_scored == 3 + 4 * 3 and rates.errors == 0
    # deterministic: the engine gives the same scores again for the rendered prompts
    assert engine.score(render(zero_shot_messages(anchors[1][0])), anchors[1][1]).logprob == rates.s0[1]
    one_shot = render(one_shot_messages(*candidates[3], anchors[2][0]))
    assert engine.score(one_shot, anchors[2][1]).logprob == rates.s1[3, 2]
    # copying helps: the anchor itself as the demonstration makes its answer far more likely
    assert rates.s1[0, 0] > rates.s0[0] + 20
    # garbage helps less than any real demonstration, on every anchor
    assert (rates.s1[3] < rates.s1[:3].min(axis=0)).all()
    np.testing.assert_array_equal(rates.q, (rates.s1 > rates.s0).mean(axis=1))


def test_anchors_skip_every_row_of_their_own_problem(crafted, scorer, render):
    candidates, anchors, full = crafted
    calls_before = scorer.engine_calls
    # candidate 1 answers anchor 2's problem (another solution of it): never compared with it
    rates = win_rates(
        candidates,
        anchors,
        scorer,
        render=render,
        candidate_problems=["copy", "a2", "c2", "garbage"],
        anchor_problems=["a0", "a1", "a2"],
        max_pairs_per_call=4,
    )
    assert scorer.engine_calls == calls_before  # every pair was scored before
    assert rates.pairs_scored == 3 + 4 * 3 - 1 and np.isnan(rates.s1[1, 2])
    assert rates.q[1] == float(np.mean(full.s1[1, :2] > full.s0[:2]))
    # by default the problem is the question text, so an exact copy is skipped too
    default = win_rates(candidates, anchors, scorer, render=render)
    assert np.isnan(default.s1[0, 0]) and default.q[0] == float(np.mean(full.s1[0, 1:] > full.s0[1:]))
    alone = win_rates([anchors[0]], [anchors[0]], scorer, render=render)
    assert np.isnan(alone.q[0]) and alone.pairs_scored == 1


def test_pairs_scored_as_none_are_counted_errors(crafted, scorer, render):
    candidates, anchors, full = crafted
    problems = {"candidate_problems": ["copy", "c1", "c2", "garbage"], "anchor_problems": ["a0", "a1", "a2"]}
    # anchor 1's answer cannot be scored at all: its zero-shot pair and every one-shot pair come back None
    rates = win_rates(candidates, anchors, FaultInjectingScorer(scorer, {anchors[1][1]}), render=render, **problems)
    assert rates.errors == 1 + 4 and rates.anchors_unscored == 1 and np.isnan(rates.s0[1])
    keep = [0, 2]
    np.testing.assert_array_equal(rates.q, (full.s1[:, keep] > full.s0[keep]).mean(axis=1))


def test_win_rates_reject_bad_input_and_bad_scores(gsm8k_pairs, render):
    def scores_one_pair_short_fault(pairs):
        return [TokenScore(-1.0, 3)] * (len(pairs) - 1)

    with pytest.raises(ValueError, match=r"anchors\[1\]\.answer"):
        win_rates(
            gsm8k_pairs[:1], [gsm8k_pairs[1], (gsm8k_pairs[2][0], " ")], scores_one_pair_short_fault, render=render
        )
    with pytest.raises(ValueError, match="metric"):
        win_rates(gsm8k_pairs[:1], gsm8k_pairs[1:2], scores_one_pair_short_fault, render=render, metric="max_logp")
    with pytest.raises(ValueError, match="returned 1 scores for 2 pairs"):
        win_rates(gsm8k_pairs[:1], gsm8k_pairs[1:2], scores_one_pair_short_fault, render=render)


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


def test_label_subset_is_a_share_of_the_pool_with_no_cap():
    assert len(label_subset(1000, fraction=0.1, min_count=20)) == 100
    assert len(label_subset(1000, fraction=0.01, min_count=20)) == 20
    assert len(label_subset(1_000_000, fraction=0.1, min_count=20)) == 100_000  # once capped at 2,000
    assert len(label_subset(7, fraction=0.1, min_count=20)) == 7
    chosen = label_subset(500, fraction=0.2, seed=4)
    assert len(np.unique(chosen)) == 100 and (np.diff(chosen) > 0).all()
    np.testing.assert_array_equal(chosen, label_subset(500, fraction=0.2, seed=4))
    with pytest.raises(ValueError, match="fraction"):
        label_subset(10, fraction=1.5)


def test_the_gate_fails_a_scorer_no_better_than_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16))
    noise = fit_quality_scorer(x, rng.uniform(size=400), seed=0)
    report = {
        "heldout_spearman": noise.heldout_spearman,
        "heldout_count": noise.heldout_count,
        "labelled": 400,
        "predicted_rows": 3600,
    }
    problem = scorer_problem("reasoning", report, 0.1)
    assert (
        problem.startswith("reasoning: held-out Spearman correlation")
        and "below min_heldout_correlation 0.1" in problem
    )
    assert scorer_problem("reasoning", report, None) is None  # the gate is off
    assert scorer_problem("reasoning", {**report, "predicted_rows": 0}, 0.1) is None  # nothing predicted
    signal = fit_quality_scorer(x, np.clip(0.5 + 0.1 * (x @ rng.normal(size=16)), 0, 1), seed=0)
    assert scorer_problem("reasoning", {**report, "heldout_spearman": signal.heldout_spearman}, 0.1) is None
    unmeasurable = scorer_problem("general", {**report, "heldout_spearman": float("nan"), "heldout_count": 1}, 0.1)
    assert "not measurable on 1 held-out rows" in unmeasurable


def test_quality_scores_for_a_small_pool(gsm8k_pairs, scorer, render):
    rows = gsm8k_pairs[:6]
    embeddings = SentenceEmbedder("embedded").embed([render_for_embedding(q, a) for q, a in rows])
    problems = ["p0", "p1", "p2", "p3", "p4", "p4"]  # rows 4 and 5 are two solutions of one problem
    eligible = np.array([True, True, True, True, True, False])  # row 5 is from an evaluation split
    result = quality_scores(
        rows,
        embeddings,
        scorer,
        render=render,
        problems=problems,
        anchor_eligible=eligible,
        anchors=2,
        label_fraction=0.5,
        min_labels=4,
        seed=0,
    )
    labelled = np.flatnonzero(~np.isnan(result.q_label))
    anchors = result.report["anchor_rows"]
    assert len(labelled) == 4 and result.report["labelled"] == 4 and len(anchors) == 2 and 5 not in anchors
    same_problem = sum(problems[i] == problems[a] for i in labelled for a in anchors)
    assert result.report["pairs_scored"] == 2 + 4 * 2 - same_problem and result.report["score_errors"] == 0
    assert ((result.q_pred >= 0) & (result.q_pred <= 1)).all() and result.report["predicted_rows"] == 2
    assert result.report["scorer"] == "ridge" and "heldout_spearman" in result.report


def test_quality_table_keeps_measured_and_predicted_apart_and_gates_the_scorer(gsm8k_pairs, scorer, render):
    rows = gsm8k_pairs[:6]
    embeddings = SentenceEmbedder("embedded").embed([render_for_embedding(q, a) for q, a in rows])
    candidates = pa.table(
        {
            "candidate_id": [f"c{i}" for i in range(6)],
            "kind": ["reasoning"] * 6,
            "problem_id": [f"p{i}" for i in range(6)],
            "evaluation_split": [False] * 6,
        }
    )
    texts = {f"c{i}": pair for i, pair in enumerate(rows)}
    settings = {"render": render, "anchors": 2, "label_fraction": 0.5, "min_labels": 4, "seed": 0}
    table, report = quality_table(candidates, embeddings, texts, scorer, min_heldout_correlation=None, **settings)
    assert table.column_names == ["candidate_id", "kind", "q_label", "q_pred"]
    assert table["q_label"].null_count == 2 and table["q_pred"].null_count == 0
    assert len(report["reasoning"]["anchor_ids"]) == 2
    # 4 labels leave 1 held-out row: the correlation cannot be measured, so a gate refuses the scorer
    with pytest.raises(ScorerTooWeak, match="reasoning: held-out Spearman correlation not measurable"):
        quality_table(candidates, embeddings, texts, scorer, min_heldout_correlation=0.1, **settings)
