"""QaDS quality (METHODS.md §1.3 step Q): how often a row, put in front as a one-shot
demonstration, raises the model's log-probability of an anchor's answer (Nuggets' "golden
score" win rate), measured on a labelled subset and predicted for the rest by a ridge scorer.

Scores come from a `score_many(pairs) -> list[TokenScore]` callable over (prompt, completion)
pairs, so the engine, its ledger and its cache stay with the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mathdata_pipeline.engines.base import TokenScore

# A block per example; the prompt ends with "Answer:\n" so the scored answer starts on a fresh line.
ZERO_SHOT_TEMPLATE = "Question: {question}\nAnswer:\n"
ONE_SHOT_TEMPLATE = "Question: {demo_question}\nAnswer:\n{demo_answer}\n\n" + ZERO_SHOT_TEMPLATE
METRICS = ("sum_logp", "mean_logp")
ANCHOR_METHODS = ("kmeans", "random")

ScoreMany = Callable[[list[tuple[str, str]]], list[TokenScore]]
Pair = tuple[str, str]


def choose_anchors(embeddings: np.ndarray, m: int = 100, method: str = "kmeans", seed: int = 0) -> np.ndarray:
    """Row indices (sorted, distinct) of `min(m, n)` anchors among the n rows of `embeddings` (n, d).

    `kmeans`: FAISS k-means with m centroids (20 iterations, `seed`), then for each centroid the
    nearest row not already taken (centroids closest to a row choose first). `random`: a seeded
    uniform sample without replacement.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, d), got shape {x.shape}")
    if method not in ANCHOR_METHODS:
        raise ValueError(f"method must be one of {ANCHOR_METHODS}, got {method!r}")
    if m < 1:
        raise ValueError(f"m must be at least 1, got {m}")
    n = len(x)
    m = min(m, n)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    if method == "random":
        return np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False)).astype(np.int64)
    import faiss

    kmeans = faiss.Kmeans(x.shape[1], m, niter=20, seed=seed)
    kmeans.train(x)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    return _distinct_nearest_rows(index, kmeans.centroids, n)


def _distinct_nearest_rows(index, centroids: np.ndarray, n: int) -> np.ndarray:
    """For each centroid the nearest row of `index` not taken by an earlier centroid (centroids
    nearest to their first neighbour choose first); the neighbour lists are searched again, four
    times longer, until every centroid finds a free row."""
    k = min(n, 16)
    while True:
        distances, rows = index.search(centroids, k)
        taken: set[int] = set()
        for c in np.argsort(distances[:, 0], kind="stable"):
            free = [int(r) for r in rows[c] if r >= 0 and int(r) not in taken]
            if not free:
                break
            taken.add(free[0])
        if len(taken) == len(centroids) or k == n:
            return np.asarray(sorted(taken), dtype=np.int64)
        k = min(n, k * 4)


def zero_shot_prompt(question: str, template: str = ZERO_SHOT_TEMPLATE) -> str:
    """The prompt whose continuation is scored as the answer to `question` with no demonstration:
    `template` formatted with {question} (default `"Question: ...\\nAnswer:\\n"`)."""
    return template.format(question=question)


def one_shot_prompt(demo_question: str, demo_answer: str, question: str, template: str = ONE_SHOT_TEMPLATE) -> str:
    """The prompt for `question` with one demonstration (`demo_question`, `demo_answer`) in front:
    `template` formatted with {demo_question}, {demo_answer}, {question}. The default is the
    demonstration as a "Question: ...\\nAnswer:\\n..." block, a blank line, then the zero-shot prompt."""
    return template.format(demo_question=demo_question, demo_answer=demo_answer, question=question)


@dataclass
class WinRates:
    """Result of `win_rates` for n candidates and m anchors.

    `q`: (n,) win rate under the chosen metric; `q_sum_logp`, `q_mean_logp`: (n,) win rates
    comparing summed and per-token log-probabilities; NaN for a candidate with no anchor left to
    compare against. `s0`: (m,) summed log-probability of each anchor's answer after the zero-shot
    prompt; `s1`: (n, m) the same after each candidate's one-shot prompt (NaN where skipped).
    `pairs_scored`: number of (prompt, completion) pairs sent to `score_many`.
    """

    q: np.ndarray
    q_sum_logp: np.ndarray
    q_mean_logp: np.ndarray
    s0: np.ndarray
    s1: np.ndarray
    pairs_scored: int


def _check_pairs(name: str, pairs: Sequence[Pair]) -> list[Pair]:
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"{name}[{i}] must be a (question, answer) pair")
        for field, value in zip(("question", "answer"), pair):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name}[{i}].{field} must be a non-empty string")
    return [(q, a) for q, a in pairs]


def _scored(score_many: ScoreMany, pairs: list[Pair], chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """(summed log-probabilities, token counts) of `pairs`, `chunk` pairs per `score_many` call."""
    logps, tokens = np.zeros(len(pairs)), np.zeros(len(pairs))
    for start in range(0, len(pairs), chunk):
        part = pairs[start : start + chunk]
        scores = list(score_many(part))
        if len(scores) != len(part):
            raise ValueError(f"score_many returned {len(scores)} scores for {len(part)} pairs")
        for offset, score in enumerate(scores):
            if score.tokens < 1:
                raise ValueError(f"score_many scored 0 tokens for pair {start + offset}")
            logps[start + offset], tokens[start + offset] = score.logprob, score.tokens
    return logps, tokens


def win_rates(
    candidates: Sequence[Pair],
    anchors: Sequence[Pair],
    score_many: ScoreMany,
    *,
    metric: str = "sum_logp",
    exclude_self: bool = True,
    one_shot_template: str = ONE_SHOT_TEMPLATE,
    zero_shot_template: str = ZERO_SHOT_TEMPLATE,
    max_pairs_per_call: int = 20_000,
) -> WinRates:
    """One-shot win rate of each candidate against the anchors.

    Inputs: `candidates` and `anchors` as (question, answer) pairs; `score_many(pairs)` returning a
    TokenScore per (prompt, completion) pair. For anchor a, s0(a) scores a's answer after
    `zero_shot_prompt(a.question)`; for candidate z, s1(a|z) scores it after
    `one_shot_prompt(z.question, z.answer, a.question)`. Q(z) = share of anchors with
    s1(a|z) > s0(a), skipping the anchor identical to z when `exclude_self`. `metric` (`sum_logp`
    or `mean_logp`, the per-token version) picks which win rate is `q`. All pairs go to
    `score_many` in calls of at most `max_pairs_per_call` pairs (the zero-shot pairs first).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if max_pairs_per_call < 1:
        raise ValueError(f"max_pairs_per_call must be at least 1, got {max_pairs_per_call}")
    candidates, anchors = _check_pairs("candidates", candidates), _check_pairs("anchors", anchors)
    n, m = len(candidates), len(anchors)
    compared = np.ones((n, m), dtype=bool)
    if exclude_self:
        anchor_rows = {pair: j for j, pair in enumerate(anchors)}
        for i, pair in enumerate(candidates):
            if pair in anchor_rows:
                compared[i, anchor_rows[pair]] = False
    pairs = [(zero_shot_prompt(q, zero_shot_template), a) for q, a in anchors]
    cells = np.argwhere(compared)
    pairs += [(one_shot_prompt(*candidates[i], anchors[j][0], one_shot_template), anchors[j][1]) for i, j in cells]
    logps, tokens = _scored(score_many, pairs, max_pairs_per_call)
    s0, s0_tokens = logps[:m], tokens[:m]
    s1, s1_tokens = np.full((n, m), np.nan), np.full((n, m), np.nan)
    s1[compared], s1_tokens[compared] = logps[m:], tokens[m:]
    counts = compared.sum(axis=1)
    with np.errstate(invalid="ignore"):
        q_sum = np.where(counts > 0, ((s1 > s0) & compared).sum(axis=1) / np.maximum(counts, 1), np.nan)
        q_mean = np.where(
            counts > 0, ((s1 / s1_tokens > s0 / s0_tokens) & compared).sum(axis=1) / np.maximum(counts, 1), np.nan
        )
    return WinRates(
        q=q_sum if metric == "sum_logp" else q_mean,
        q_sum_logp=q_sum,
        q_mean_logp=q_mean,
        s0=s0,
        s1=s1,
        pairs_scored=len(pairs),
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


def label_subset(
    n: int, fraction: float = 0.1, min_count: int = 20, max_count: int = 2000, seed: int = 0
) -> np.ndarray:
    """Sorted indices of the rows to label: a seeded uniform sample of round(fraction · n) rows,
    raised to `min_count` and lowered to `max_count`, and never more than n."""
    if n < 0 or not 0 <= fraction <= 1 or min_count < 0 or max_count < min_count:
        raise ValueError(
            f"need n >= 0, 0 <= fraction <= 1 and 0 <= min_count <= max_count; got n={n}, "
            f"fraction={fraction}, min_count={min_count}, max_count={max_count}"
        )
    count = min(n, max(min_count, min(max_count, int(round(fraction * n)))))
    return np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False)).astype(np.int64)


@dataclass
class QualityScores:
    """Quality of every row of a pool: `q_label` (measured win rate, NaN where not labelled),
    `q_pred` (the scorer's prediction), `q` (measured where present, else predicted) and a
    `report` dict (labelled, anchors, anchor_rows, heldout_pearson, heldout_spearman,
    heldout_count, pairs_scored, mean_win_rate)."""

    q_label: np.ndarray
    q_pred: np.ndarray
    q: np.ndarray
    report: dict


def quality_scores(
    rows: Sequence[Pair],
    embeddings: np.ndarray,
    score_many: ScoreMany,
    *,
    anchors: int = 100,
    anchor_selection: str = "kmeans",
    label_fraction: float = 0.1,
    min_labels: int = 20,
    max_labels: int = 2000,
    metric: str = "sum_logp",
    alpha: float = 1.0,
    holdout: float = 0.25,
    seed: int = 0,
) -> QualityScores:
    """QaDS quality for a pool of (question, answer) `rows` with their `embeddings` (n, d):
    anchors by `choose_anchors`, a labelled subset by `label_subset`, their `win_rates`, a ridge
    scorer on the embeddings (`fit_quality_scorer`), predictions for every row.

    When no labelled row has a finite win rate (a one-row pool whose only anchor is itself),
    nothing can be fitted: q_pred is NaN and the report's `scorer` says so.
    """
    rows = _check_pairs("rows", rows)
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) != len(rows):
        raise ValueError(f"embeddings must be ({len(rows)}, d), got shape {x.shape}")
    anchor_rows = choose_anchors(x, m=anchors, method=anchor_selection, seed=seed)
    labelled = label_subset(len(rows), fraction=label_fraction, min_count=min_labels, max_count=max_labels, seed=seed)
    rates = win_rates([rows[i] for i in labelled], [rows[i] for i in anchor_rows], score_many, metric=metric)
    q_label = np.full(len(rows), np.nan)
    q_label[labelled] = rates.q
    report = {
        "labelled": len(labelled),
        "anchors": len(anchor_rows),
        "anchor_rows": anchor_rows.tolist(),
        "pairs_scored": rates.pairs_scored,
        "mean_win_rate": float(np.nanmean(rates.q)) if np.isfinite(rates.q).any() else float("nan"),
    }
    if np.isfinite(rates.q).any():
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
    return QualityScores(q_label=q_label, q_pred=q_pred, q=np.where(np.isnan(q_label), q_pred, q_label), report=report)


QUALITY_SCHEMA = pa.schema(
    [
        ("candidate_id", pa.string()),
        ("kind", pa.string()),
        ("q_label", pa.float32()),
        ("q_pred", pa.float32()),
        ("quality", pa.float32()),
    ]
)


def quality_table(
    candidates: pa.Table, matrix: np.ndarray, texts: dict[str, Pair], score_many: ScoreMany, **settings
) -> tuple[pa.Table, dict[str, dict]]:
    """`quality_scores` for every kind of candidate, each kind scored against its own anchors.

    Inputs: the `embeddings` rows (candidate_id, kind) and their matrix; {candidate_id: (question,
    response)}; the scoring call; `settings`, the keyword arguments of `quality_scores`.
    Output: (QUALITY_SCHEMA table, per kind the report with anchor ids instead of row numbers).
    """
    kinds, ids = candidates.column("kind").to_pylist(), candidates.column("candidate_id").to_pylist()
    parts, report = [], {}
    for kind in dict.fromkeys(kinds):
        rows = [i for i, k in enumerate(kinds) if k == kind]
        kind_ids = [ids[i] for i in rows]
        scores = quality_scores([texts[i] for i in kind_ids], matrix[rows], score_many, **settings)
        parts.append(
            pa.table(
                {
                    "candidate_id": kind_ids,
                    "kind": [kind] * len(rows),
                    "q_label": pa.array(scores.q_label, pa.float32(), mask=np.isnan(scores.q_label)),
                    "q_pred": pa.array(scores.q_pred, pa.float32()),
                    "quality": pa.array(scores.q, pa.float32()),
                },
                schema=QUALITY_SCHEMA,
            )
        )
        report[kind] = {k: v for k, v in scores.report.items() if k != "anchor_rows"}
        report[kind]["anchor_ids"] = [kind_ids[i] for i in scores.report["anchor_rows"]]
    return (pa.concat_tables(parts) if parts else QUALITY_SCHEMA.empty_table()), report
