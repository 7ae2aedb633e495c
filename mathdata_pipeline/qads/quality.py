"""QaDS quality (METHODS.md §1.3 step Q): how often a row, put in front as a one-shot
demonstration, raises the model's log-probability of an anchor's answer (Nuggets' "golden
score" win rate), measured on a labelled share of the pool and predicted for the rest by a ridge
scorer whose held-out correlation must beat a configured minimum.

Prompts are the pairs rendered with the SFT template (`render`: chat messages -> the prompt text
before the next assistant turn), so a demonstration is scored in the form training will show it.
Scores come from a `score_many(pairs) -> list[TokenScore | None]` callable over (prompt,
completion) pairs, so the engine, its ledger and its cache stay with the caller; a None (a pair
the engine could not score, e.g. longer than its context) is a counted per-pair error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mathdata_pipeline.engines.base import Engine, Message, Request, SamplingParams, TokenScore
from mathdata_pipeline.qads.neighbours import choose_anchors

METRICS = ("sum_logp", "mean_logp")
ALPACA_HEADER = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
)

ScoreMany = Callable[[list[tuple[str, str]]], list[TokenScore | None]]
Render = Callable[[list[Message]], str]
ChooseAnchors = Callable[..., np.ndarray]
Pair = tuple[str, str]


class ScorerTooWeak(ValueError):
    """The quality scorer's held-out correlation is below the configured minimum (or cannot be
    measured): its predictions would rank rows no better than noise."""


def alpaca_prompt(messages: Sequence[Message]) -> str:
    """The Alpaca SFT format (DART-Math and MuggleMath) of a conversation that ends with a user
    turn: the header, then per turn `### Instruction:\\n<user>\\n\\n` or `### Response:\\n<assistant>\\n\\n`,
    ending with the `### Response:\\n` that opens the answer."""
    if not messages or messages[-1]["role"] != "user":
        raise ValueError("alpaca_prompt needs a conversation that ends with a user turn")
    parts = [ALPACA_HEADER]
    for message in messages:
        if message["role"] == "user":
            parts.append(f"### Instruction:\n{message['content']}\n\n")
        elif message["role"] == "assistant":
            parts.append(f"### Response:\n{message['content']}\n\n")
    return "".join(parts) + "### Response:\n"


def chat_renderer(engine: Engine) -> Render:
    """`render` through `engine`'s own chat template (what SFT on the mixture's `messages` uses):
    the conversation plus the opening of the assistant turn. Raises ValueError for an engine that
    leaves the template to a server (it cannot show the prompt it would score)."""

    def render(messages: list[Message]) -> str:
        prompt = engine.render(Request.chat(messages, SamplingParams()))
        if prompt is None:
            raise ValueError(
                f"engine {engine.info.model_id} applies its chat template on the server, so quality prompts "
                "cannot be rendered with it: use template: alpaca, or a backend that renders locally"
            )
        return prompt

    return render


def zero_shot_messages(question: str) -> list[Message]:
    """The conversation whose next assistant turn is scored as the answer to `question`."""
    return [{"role": "user", "content": question}]


def one_shot_messages(demo_question: str, demo_answer: str, question: str) -> list[Message]:
    """The same with one demonstration exchange (`demo_question`, `demo_answer`) in front."""
    return [
        {"role": "user", "content": demo_question},
        {"role": "assistant", "content": demo_answer},
        {"role": "user", "content": question},
    ]


@dataclass
class WinRates:
    """Result of `win_rates` for n candidates and m anchors.

    `q`: (n,) win rate under the chosen metric; `q_sum_logp`, `q_mean_logp`: (n,) win rates
    comparing summed and per-token log-probabilities; NaN for a candidate with no anchor left to
    compare against. `s0`: (m,) summed log-probability of each anchor's answer after the zero-shot
    prompt (NaN when it could not be scored: that anchor is then skipped); `s1`: (n, m) the same
    after each candidate's one-shot prompt (NaN where skipped or not scored).
    `pairs_scored`: pairs sent to `score_many`; `errors`: pairs that came back None;
    `anchors_unscored`: anchors whose zero-shot pair came back None.
    """

    q: np.ndarray
    q_sum_logp: np.ndarray
    q_mean_logp: np.ndarray
    s0: np.ndarray
    s1: np.ndarray
    pairs_scored: int
    errors: int
    anchors_unscored: int


def _check_pairs(name: str, pairs: Sequence[Pair]) -> list[Pair]:
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"{name}[{i}] must be a (question, answer) pair")
        for field, value in zip(("question", "answer"), pair):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name}[{i}].{field} must be a non-empty string")
    return [(q, a) for q, a in pairs]


def _scored(score_many: ScoreMany, pairs: list[Pair], chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """(summed log-probabilities, token counts) of `pairs`, `chunk` pairs per `score_many` call;
    NaN for a pair that came back None."""
    logps, tokens = np.full(len(pairs), np.nan), np.full(len(pairs), np.nan)
    for start in range(0, len(pairs), chunk):
        part = pairs[start : start + chunk]
        scores = list(score_many(part))
        if len(scores) != len(part):
            raise ValueError(f"score_many returned {len(scores)} scores for {len(part)} pairs")
        for offset, score in enumerate(scores):
            if score is None:
                continue
            if score.tokens < 1:
                raise ValueError(f"score_many scored 0 tokens for pair {start + offset}")
            logps[start + offset], tokens[start + offset] = score.logprob, score.tokens
    return logps, tokens


def win_rates(
    candidates: Sequence[Pair],
    anchors: Sequence[Pair],
    score_many: ScoreMany,
    *,
    render: Render,
    candidate_problems: Sequence[str] | None = None,
    anchor_problems: Sequence[str] | None = None,
    metric: str = "sum_logp",
    max_pairs_per_call: int = 20_000,
) -> WinRates:
    """One-shot win rate of each candidate against the anchors.

    Inputs: `candidates` and `anchors` as (question, answer) pairs; `score_many(pairs)` returning a
    TokenScore (or None) per (prompt, completion) pair; `render`, the SFT template (messages ->
    prompt). For anchor a, s0(a) scores a's answer after `render(zero_shot_messages(a.question))`;
    for candidate z, s1(a|z) scores it after `render(one_shot_messages(z.question, z.answer,
    a.question))`. Q(z) = share of compared anchors with s1(a|z) > s0(a). An anchor is never
    compared with a candidate of its own problem (`candidate_problems`, `anchor_problems`: one key
    per pair; default the question text), nor when its s0 or that s1 could not be scored.
    `metric` (`sum_logp`, or `mean_logp` per token) picks which win rate is `q`. Pairs go to
    `score_many` in calls of at most `max_pairs_per_call` (the zero-shot pairs first).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if max_pairs_per_call < 1:
        raise ValueError(f"max_pairs_per_call must be at least 1, got {max_pairs_per_call}")
    candidates, anchors = _check_pairs("candidates", candidates), _check_pairs("anchors", anchors)
    candidate_problems = [q for q, _ in candidates] if candidate_problems is None else list(candidate_problems)
    anchor_problems = [q for q, _ in anchors] if anchor_problems is None else list(anchor_problems)
    if len(candidate_problems) != len(candidates) or len(anchor_problems) != len(anchors):
        raise ValueError("candidate_problems and anchor_problems need one key per pair")
    n, m = len(candidates), len(anchors)
    compared = np.asarray(candidate_problems, dtype=object)[:, None] != np.asarray(anchor_problems, dtype=object)[None]
    compared = compared.reshape(n, m)
    pairs = [(render(zero_shot_messages(q)), a) for q, a in anchors]
    cells = np.argwhere(compared)
    pairs += [(render(one_shot_messages(*candidates[i], anchors[j][0])), anchors[j][1]) for i, j in cells]
    logps, tokens = _scored(score_many, pairs, max_pairs_per_call)
    s0, s0_tokens = logps[:m], tokens[:m]
    s1, s1_tokens = np.full((n, m), np.nan), np.full((n, m), np.nan)
    s1[compared], s1_tokens[compared] = logps[m:], tokens[m:]
    usable = compared & np.isfinite(s1) & np.isfinite(s0)[None, :]
    counts = usable.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        q_sum = np.where(counts > 0, ((s1 > s0) & usable).sum(axis=1) / np.maximum(counts, 1), np.nan)
        per_token = (s1 / s1_tokens > s0 / s0_tokens) & usable
        q_mean = np.where(counts > 0, per_token.sum(axis=1) / np.maximum(counts, 1), np.nan)
    return WinRates(
        q=q_sum if metric == "sum_logp" else q_mean,
        q_sum_logp=q_sum,
        q_mean_logp=q_mean,
        s0=s0,
        s1=s1,
        pairs_scored=len(pairs),
        errors=int(np.isnan(logps).sum()),
        anchors_unscored=int(np.isnan(s0).sum()),
    )


@dataclass
class QualityScorer:
    """A ridge regression from embeddings to win rate.

    `model`: the sklearn Ridge fitted on all labelled rows. `heldout_pearson`, `heldout_spearman`:
    correlations between held-out win rates and the predictions of a model fitted on the other
    labelled rows; NaN when the held-out set has fewer than 3 rows or either side is constant.
    `heldout_count`, `train_count`: sizes of that split; `labelled_count`: rows the final model saw.
    """

    model: object
    heldout_pearson: float
    heldout_spearman: float
    heldout_count: int
    train_count: int
    labelled_count: int

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted win rates (n,) for `features` (n, d), clipped to [0, 1]."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.model.n_features_in_:
            raise ValueError(f"features must be (n, {self.model.n_features_in_}), got shape {x.shape}")
        if len(x) == 0:
            return np.zeros(0)
        return np.clip(self.model.predict(x), 0.0, 1.0)


def _correlations(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """(Pearson, Spearman), NaN for fewer than 3 rows or a constant side."""
    if len(truth) < 3 or np.ptp(truth) == 0 or np.ptp(predicted) == 0:
        return float("nan"), float("nan")
    from scipy.stats import pearsonr, spearmanr

    return float(pearsonr(truth, predicted)[0]), float(spearmanr(truth, predicted)[0])


def fit_quality_scorer(
    features: np.ndarray, q: np.ndarray, *, alpha: float = 1.0, holdout: float = 0.25, seed: int = 0
) -> QualityScorer:
    """Fit a ridge scorer (`alpha`) predicting `q` (n,) from `features` (n, d).

    Rows whose q is NaN (no anchor to compare against) are left out. A seeded `holdout` share of
    the rest (rounded down; none when that would leave no training row) measures the held-out
    correlations, then the model is refitted on all of them. Raises ValueError on mismatched
    shapes, a non-finite feature (naming the row) or when no row has a finite q.
    """
    from sklearn.linear_model import Ridge

    x, y = np.asarray(features, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"features must be (n, d) and q (n,), got shapes {x.shape} and {y.shape}")
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        raise ValueError(f"features row {int(bad[0])} has a non-finite value")
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(y) == 0:
        raise ValueError("no labelled row has a finite q: nothing to fit")
    order = np.random.default_rng(seed).permutation(len(y))
    n_hold = int(holdout * len(y)) if len(y) > 1 else 0
    held, train = order[:n_hold], order[n_hold:]
    pearson = spearman = float("nan")
    if n_hold:
        probe = Ridge(alpha=alpha).fit(x[train], y[train])
        pearson, spearman = _correlations(y[held], np.clip(probe.predict(x[held]), 0.0, 1.0))
    model = Ridge(alpha=alpha).fit(x, y)
    return QualityScorer(
        model=model,
        heldout_pearson=pearson,
        heldout_spearman=spearman,
        heldout_count=n_hold,
        train_count=len(train),
        labelled_count=len(y),
    )


def label_subset(n: int, fraction: float = 0.1, min_count: int = 20, seed: int = 0) -> np.ndarray:
    """Sorted indices of the rows to label: a seeded uniform sample of round(fraction · n) rows
    (a share of the pool, with no upper cap), raised to `min_count`, never more than n."""
    if n < 0 or not 0 <= fraction <= 1 or min_count < 0:
        raise ValueError(f"need n >= 0, 0 <= fraction <= 1 and min_count >= 0; got {n}, {fraction}, {min_count}")
    count = min(n, max(min_count, int(round(fraction * n))))
    return np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False)).astype(np.int64)


@dataclass
class QualityScores:
    """Quality of every row of a pool: `q_label` (measured win rate, NaN where not labelled or
    not measurable), `q_pred` (the scorer's prediction, NaN without a scorer) and a `report` dict
    (labelled, anchors, anchor_rows, pairs_scored, score_errors, anchors_unscored, mean_win_rate,
    scorer, heldout_pearson, heldout_spearman, heldout_count, predicted_rows)."""

    q_label: np.ndarray
    q_pred: np.ndarray
    report: dict


def quality_scores(
    rows: Sequence[Pair],
    embeddings: np.ndarray,
    score_many: ScoreMany,
    *,
    render: Render,
    problems: Sequence[str] | None = None,
    anchor_eligible: np.ndarray | None = None,
    choose: ChooseAnchors = choose_anchors,
    anchors: int = 100,
    anchor_selection: str = "kmeans",
    label_fraction: float = 0.1,
    min_labels: int = 20,
    metric: str = "sum_logp",
    alpha: float = 1.0,
    holdout: float = 0.25,
    seed: int = 0,
) -> QualityScores:
    """QaDS quality for a pool of (question, answer) `rows` with their `embeddings` (n, d).

    Anchors: `choose(embeddings, m=anchors, method=anchor_selection, seed=seed)` over the rows
    where `anchor_eligible` (default all; evaluation splits are kept out by the caller). A
    labelled share by `label_subset`, their `win_rates` against the anchors (rendered by `render`;
    never against an anchor of the same entry of `problems`), a ridge scorer on the embeddings
    (`fit_quality_scorer`) and its predictions for every row. When no labelled row has a finite
    win rate nothing can be fitted: q_pred is NaN and the report's `scorer` says so.
    """
    rows = _check_pairs("rows", rows)
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) != len(rows):
        raise ValueError(f"embeddings must be ({len(rows)}, d), got shape {x.shape}")
    problems = [q for q, _ in rows] if problems is None else list(problems)
    eligible = np.flatnonzero(np.ones(len(rows), bool) if anchor_eligible is None else anchor_eligible)
    anchor_rows = eligible[choose(x[eligible], m=anchors, method=anchor_selection, seed=seed)] if len(eligible) else []
    anchor_rows = np.asarray(anchor_rows, dtype=np.int64)
    labelled = label_subset(len(rows), fraction=label_fraction, min_count=min_labels, seed=seed)
    rates = win_rates(
        [rows[i] for i in labelled],
        [rows[i] for i in anchor_rows],
        score_many,
        render=render,
        candidate_problems=[problems[i] for i in labelled],
        anchor_problems=[problems[i] for i in anchor_rows],
        metric=metric,
    )
    q_label = np.full(len(rows), np.nan)
    q_label[labelled] = rates.q
    finite = np.isfinite(rates.q)
    report = {
        "labelled": len(labelled),
        "anchors": len(anchor_rows),
        "anchor_rows": anchor_rows.tolist(),
        "pairs_scored": rates.pairs_scored,
        "score_errors": rates.errors,
        "anchors_unscored": rates.anchors_unscored,
        "mean_win_rate": float(np.mean(rates.q[finite])) if finite.any() else float("nan"),
        "predicted_rows": len(rows) - int(finite.sum()),
    }
    if finite.any():
        scorer = fit_quality_scorer(x[labelled], rates.q, alpha=alpha, holdout=holdout, seed=seed)
        q_pred = scorer.predict(x)
        report.update(
            scorer="ridge",
            heldout_pearson=scorer.heldout_pearson,
            heldout_spearman=scorer.heldout_spearman,
            heldout_count=scorer.heldout_count,
        )
    else:
        q_pred = np.full(len(rows), np.nan)
        report.update(
            scorer="none: no finite win rate",
            heldout_pearson=float("nan"),
            heldout_spearman=float("nan"),
            heldout_count=0,
        )
    return QualityScores(q_label=q_label, q_pred=q_pred, report=report)


def scorer_problem(kind: str, report: dict, minimum: float | None) -> str | None:
    """Why the `kind` scorer of a `quality_scores` report fails the minimum held-out Spearman
    correlation, or None when it passes, when `minimum` is None (the gate is off) or when every
    row is measured (no prediction is used)."""
    if minimum is None or report["predicted_rows"] == 0:
        return None
    spearman = report["heldout_spearman"]
    if np.isfinite(spearman) and spearman >= minimum:
        return None
    measured = f"{spearman:.3f}" if np.isfinite(spearman) else "not measurable"
    return (
        f"{kind}: held-out Spearman correlation {measured} on {report['heldout_count']} held-out rows "
        f"(of {report['labelled']} labelled) is below min_heldout_correlation {minimum}, so its predictions for "
        f"{report['predicted_rows']} rows are no better than noise; label more rows (label_fraction) or set "
        "min_heldout_correlation to null to accept them"
    )


QUALITY_SCHEMA = pa.schema(
    [
        ("candidate_id", pa.string()),
        ("kind", pa.string()),
        ("q_label", pa.float32()),
        ("q_pred", pa.float32()),
    ]
)


def _nullable(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.float32), pa.float32(), mask=np.isnan(values))


def quality_table(
    candidates: pa.Table,
    matrix: np.ndarray,
    texts: dict[str, Pair],
    score_many: ScoreMany,
    *,
    min_heldout_correlation: float | None = None,
    **settings,
) -> tuple[pa.Table, dict[str, dict]]:
    """`quality_scores` for every kind of candidate, each kind scored against its own anchors.

    Inputs: the `embeddings` rows (candidate_id, kind, problem_id, evaluation_split) and their
    matrix; {candidate_id: (question, response)}; the scoring call; `min_heldout_correlation`
    (None: no gate); `settings`, the other keyword arguments of `quality_scores` (render, choose,
    anchors, …). Anchors come only from rows outside evaluation splits; a candidate is never
    compared with an anchor of its own problem. Output: (QUALITY_SCHEMA table: measured `q_label`
    and predicted `q_pred` in separate columns, per kind the report with anchor ids instead of row
    numbers). Raises ScorerTooWeak naming every kind whose scorer misses the minimum.
    """
    kinds, ids = candidates.column("kind").to_pylist(), candidates.column("candidate_id").to_pylist()
    problems = candidates.column("problem_id").to_pylist()
    evaluation = np.asarray(candidates.column("evaluation_split").to_pylist(), dtype=bool)
    parts, report, weak = [], {}, []
    for kind in dict.fromkeys(kinds):
        rows = [i for i, k in enumerate(kinds) if k == kind]
        kind_ids = [ids[i] for i in rows]
        scores = quality_scores(
            [texts[i] for i in kind_ids],
            matrix[rows],
            score_many,
            problems=[problems[i] for i in rows],
            anchor_eligible=~evaluation[rows],
            **settings,
        )
        parts.append(
            pa.table(
                {
                    "candidate_id": kind_ids,
                    "kind": [kind] * len(rows),
                    "q_label": _nullable(scores.q_label),
                    "q_pred": _nullable(scores.q_pred),
                },
                schema=QUALITY_SCHEMA,
            )
        )
        report[kind] = {k: v for k, v in scores.report.items() if k != "anchor_rows"}
        report[kind]["anchor_ids"] = [kind_ids[i] for i in scores.report["anchor_rows"]]
        problem = scorer_problem(kind, scores.report, min_heldout_correlation)
        if problem:
            weak.append(problem)
    if weak:
        raise ScorerTooWeak("; ".join(weak))
    return (pa.concat_tables(parts) if parts else QUALITY_SCHEMA.empty_table()), report
