"""Influence scores s_C / s_I, rank fusion, pruning rules and the baselines (METHODS.md §5.4, §6.5).

Scores come from gradient features (`gradient_features.py`): a training example d is scored by
the inner products of its (Adam-preconditioned, projected, unit) gradient feature with the
(SGD, projected, unit) gradient features of reference responses: V_C, the correct ones, and V_I,
the incorrect ones.

Sign convention: a gradient step of size eta on d changes the loss of a query q by, to first
order, delta l_q = -eta <g_q, g_d>. So a POSITIVE inner product means training on d LOWERS q's
loss: positive s_C = d helps the model produce correct answers (benefit); positive s_I = d makes
the incorrect answers more likely (harm).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.influence.gradient_features import (
    Example,
    encode_example,
    pad_batch,
    response_losses,
    token_batches,
)

RULES = ("combined", "low_benefit", "high_harm")
FUSIONS = ("difference", "min")
AGGREGATES = ("mean", "max")


@dataclass(frozen=True)
class InfluenceScores:
    """s_C and s_I per training example (n,), and notes on anything unusual (an empty V_C or V_I
    makes that score all-NaN; `fuse_ranks` then uses the other score alone)."""

    s_c: np.ndarray
    s_i: np.ndarray
    notes: list[str] = field(default_factory=list)


def _check_matrix(name: str, matrix: np.ndarray, dim: int | None = None) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or (dim is not None and matrix.shape[0] and matrix.shape[1] != dim):
        raise ValueError(
            f"{name}: expected a 2-D matrix{f' with {dim} columns' if dim else ''}, got shape {matrix.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad.size:
        raise ValueError(f"{name}: row {bad[0]} has a non-finite value")
    return matrix


def _aggregate(products: np.ndarray, groups: Sequence[str] | None, aggregate: str) -> np.ndarray:
    """(n, m) inner products -> (n,): the mean over the m queries, or the max over query groups of
    the mean within each group (each query its own group when `groups` is None)."""
    if aggregate == "mean":
        return products.mean(axis=1)
    if groups is None:
        return products.max(axis=1)
    labels, index = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    sums = np.zeros((products.shape[0], labels.size))
    np.add.at(sums.T, index, products.T)
    return (sums / np.bincount(index, minlength=labels.size)).max(axis=1)


def influence_scores(
    train_features: np.ndarray,
    val_correct_features: np.ndarray,
    val_incorrect_features: np.ndarray,
    aggregate: str = "mean",
    *,
    correct_groups: Sequence[str] | None = None,
    incorrect_groups: Sequence[str] | None = None,
) -> InfluenceScores:
    """s_C(d) and s_I(d) of every training row d (see the module doc for the sign convention).

    Inputs: (n, k) training features and (n_C, k), (n_I, k) reference features, normally unit
    vectors, so inner products are cosines (LESS). `aggregate` over the queries of each set:
    "mean" (METHODS §5.4) or "max" (LESS's max over subsets of the mean within a subset; the
    subsets are `correct_groups` / `incorrect_groups`, one label per query, e.g. the validation
    problem, and each query is its own subset when they are None). An empty set gives an all-NaN
    score and a note.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    train = _check_matrix("train_features", train_features)
    scores, notes = [], []
    for label, name, matrix, groups in (
        ("V_C", "val_correct_features", val_correct_features, correct_groups),
        ("V_I", "val_incorrect_features", val_incorrect_features, incorrect_groups),
    ):
        queries = _check_matrix(
            name, np.asarray(matrix).reshape(-1, train.shape[1]) if np.size(matrix) == 0 else matrix, train.shape[1]
        )
        if groups is not None and len(groups) != queries.shape[0]:
            raise ValueError(f"{name}: {queries.shape[0]} rows but {len(groups)} group labels")
        if queries.shape[0] == 0:
            scores.append(np.full(train.shape[0], np.nan))
            notes.append(
                f"{label} is empty: its score is NaN for every example and rank fusion uses the other score alone"
            )
            continue
        scores.append(_aggregate(train @ queries.T, groups, aggregate))
    return InfluenceScores(scores[0], scores[1], notes)


def checkpoint_influence(
    checkpoints: Sequence[tuple[float, np.ndarray, np.ndarray]],
    correct: np.ndarray,
    groups: Sequence[str],
    aggregate: str = "mean",
) -> InfluenceScores:
    """LESS's checkpoint sum: s(d) = sum_i w_i * agg_i(d), where agg_i is `influence_scores` on
    checkpoint i's features.

    Inputs: per checkpoint (weight w_i, (n, k) training features, (m, k) validation features),
    the validation rows in the same order everywhere; `correct` (m,) booleans splitting V into
    V_C and V_I; `groups` (m,) the subset label of each validation row (used by "max").
    """
    if not checkpoints:
        raise ValueError("no checkpoint features to score")
    correct = np.asarray(correct, dtype=bool)
    labels = np.asarray(groups, dtype=object)
    s_c, s_i, notes = 0.0, 0.0, []
    for weight, train, val in checkpoints:
        if np.shape(val)[0] != correct.size:
            raise ValueError(f"{np.shape(val)[0]} validation features but {correct.size} correctness labels")
        part = influence_scores(
            train,
            val[correct],
            val[~correct],
            aggregate,
            correct_groups=list(labels[correct]),
            incorrect_groups=list(labels[~correct]),
        )
        s_c, s_i = s_c + weight * part.s_c, s_i + weight * part.s_i
        notes = notes or part.notes
    return InfluenceScores(np.asarray(s_c, dtype=np.float64), np.asarray(s_i, dtype=np.float64), notes)


def percentile_ranks(x: np.ndarray) -> np.ndarray:
    """Percentile ranks in [0, 1]: (average 1-based rank - 1) / (n - 1), ties sharing their
    average rank; the smallest value gets 0, the largest 1; a single value gets 0.5.
    Raises ValueError naming the first NaN position."""
    x = np.asarray(x, dtype=np.float64)
    if np.isnan(x).any():
        raise ValueError(f"percentile_ranks: value at row {int(np.flatnonzero(np.isnan(x))[0])} is NaN")
    n = x.size
    if n == 1:
        return np.array([0.5])
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], n]
    average = (starts + ends - 1) / 2  # 0-based average position of each tie group
    ranks = np.empty(n)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks / (n - 1) if n else ranks


def _available(name: str, scores: np.ndarray) -> bool:
    """False for an all-NaN score (empty reference set); ValueError for a partly NaN one."""
    nan = np.isnan(scores)
    if nan.all() and scores.size:
        return False
    if nan.any():
        raise ValueError(f"{name}: row {int(np.flatnonzero(nan)[0])} is NaN while others are not")
    return True


def fuse_ranks(s_c: np.ndarray, s_i: np.ndarray, method: str = "difference") -> np.ndarray:
    """Fused rank r(d), higher = keep, from r_C = percentile_ranks(s_C) (high good) and
    r_I = percentile_ranks(s_I) (high bad).

    "difference": r = r_C - r_I, in [-1, 1]. "min": r = min(r_C, 1 - r_I), in [0, 1].
    If one score is all NaN (empty V_C or V_I) r is the other alone: r_C, or 1 - r_I. Both all
    NaN is an error.
    """
    if method not in FUSIONS:
        raise ValueError(f"rank fusion must be one of {FUSIONS}, got {method!r}")
    s_c, s_i = np.asarray(s_c, dtype=np.float64), np.asarray(s_i, dtype=np.float64)
    if s_c.shape != s_i.shape:
        raise ValueError(f"s_c and s_i differ in shape: {s_c.shape} vs {s_i.shape}")
    has_c, has_i = _available("s_c", s_c), _available("s_i", s_i)
    if not (has_c or has_i):
        raise ValueError("s_c and s_i are both all NaN (V_C and V_I empty): nothing to rank by")
    if not has_i:
        return percentile_ranks(s_c)
    if not has_c:
        return 1 - percentile_ranks(s_i)
    r_c, r_i = percentile_ranks(s_c), percentile_ranks(s_i)
    return r_c - r_i if method == "difference" else np.minimum(r_c, 1 - r_i)


def _check_ids(ids: Sequence[str], *arrays: np.ndarray) -> np.ndarray:
    ids = np.asarray([str(i) for i in ids])
    for array in arrays:
        if np.shape(array) != ids.shape:
            raise ValueError(f"{ids.size} ids but a score array of shape {np.shape(array)}")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"duplicate id {str(unique[counts > 1][0])!r}")
    return ids


def _count(fraction: float, n: int) -> int:
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    return math.floor(fraction * n + 1e-9)


def _lowest(ids: np.ndarray, key: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the `count` rows with the smallest key, ties broken by ascending id."""
    mask = np.zeros(ids.size, dtype=bool)
    mask[np.lexsort((ids, key))[:count]] = True
    return mask


def prune(
    ids: Sequence[str],
    s_c: np.ndarray,
    s_i: np.ndarray,
    fraction: float,
    rule: str = "combined",
    fusion: str = "difference",
) -> tuple[np.ndarray, list[str]]:
    """(keep_mask, reasons): drop floor(fraction * n) examples by `rule`.

    "low_benefit": the lowest s_C; "high_harm": the highest s_I; "combined": the lowest fused
    rank (`fuse_ranks(s_c, s_i, fusion)`). Ties go by ascending id (the smaller id is dropped
    first). `reasons[j]` is "" for a kept example, else the rule with the example's value.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    ids = _check_ids(ids, np.asarray(s_c), np.asarray(s_i))
    count = _count(fraction, ids.size)
    s_c, s_i = np.asarray(s_c, dtype=np.float64), np.asarray(s_i, dtype=np.float64)
    if rule == "combined":
        key, label = fuse_ranks(s_c, s_i, fusion), f"combined ({fusion}) r"
    elif rule == "low_benefit":
        if not _available("s_c", s_c):
            raise ValueError("rule 'low_benefit' needs s_C, but it is all NaN (V_C empty)")
        key, label = s_c, "low_benefit s_C"
    else:
        if not _available("s_i", s_i):
            raise ValueError("rule 'high_harm' needs s_I, but it is all NaN (V_I empty)")
        key, label = -s_i, "high_harm s_I"
    dropped = _lowest(ids, key, count)
    value = -key if rule == "high_harm" else key
    reasons = [f"{label}={value[j]:.4g} in the {fraction:.0%} pruned" if dropped[j] else "" for j in range(ids.size)]
    return ~dropped, reasons


def prune_by_score(ids: Sequence[str], scores: np.ndarray, fraction: float, keep: str = "high") -> np.ndarray:
    """Keep mask dropping floor(fraction * n) examples by a baseline score (ties by ascending id).

    keep "high": drop the lowest scores; "low": drop the highest; "middle": drop the lowest
    floor(count / 2) and the highest count - floor(count / 2) (e.g. a perplexity band).
    """
    if keep not in ("high", "low", "middle"):
        raise ValueError(f"keep must be 'high', 'low' or 'middle', got {keep!r}")
    ids = _check_ids(ids, np.asarray(scores))
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError(f"scores: row {int(np.flatnonzero(np.isnan(scores))[0])} is NaN")
    count = _count(fraction, ids.size)
    if keep == "high":
        return ~_lowest(ids, scores, count)
    if keep == "low":
        return ~_lowest(ids, -scores, count)
    return ~(_lowest(ids, scores, count // 2) | _lowest(ids, -scores, count - count // 2))


def perplexity_scores(
    model, tokenizer, examples: Sequence[Example], *, max_length: int = 2048, max_batch_tokens: int = 4096
) -> np.ndarray:
    """Mean response-token NLL (log perplexity) of each example under `model` (the scoring model,
    on its device, from `load_causal_lm`), with the same tokenization and truncation as the
    gradient features; batches are cut by the token budget `max_batch_tokens`."""
    import torch

    device = next(model.parameters()).device
    encoded = [encode_example(tokenizer, example, max_length) for example in examples]
    out = np.zeros(len(encoded))
    with torch.no_grad():
        for rows in token_batches([len(ids) for ids, _ in encoded], max_batch_tokens):
            batch = pad_batch([encoded[i] for i in rows], tokenizer.pad_token_id, str(device))
            out[rows] = response_losses(model, *batch).cpu().numpy()
    return out


def embedding_similarity(train_embeddings: np.ndarray, val_embeddings: np.ndarray) -> np.ndarray:
    """Mean cosine similarity of each training embedding (n, e) to the validation embeddings
    (m, e), shape (n,). Rows are L2-normalised here; a zero row is an error."""
    train = _check_matrix("train_embeddings", train_embeddings)
    val = _check_matrix("val_embeddings", val_embeddings, train.shape[1])
    if val.shape[0] == 0:
        raise ValueError("val_embeddings is empty")
    for name, matrix in (("train_embeddings", train), ("val_embeddings", val)):
        zero = np.flatnonzero(np.linalg.norm(matrix, axis=1) == 0)
        if zero.size:
            raise ValueError(f"{name}: row {zero[0]} is a zero vector")
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    val = val / np.linalg.norm(val, axis=1, keepdims=True)
    return train @ val.mean(axis=0)


def random_scores(ids: Sequence[str], seed: int = 0) -> np.ndarray:
    """Uniform [0, 1) score per id from a hash of (seed, id): the same id always gets the same
    score, whatever the other ids or their order."""
    return np.array([int(stable_hash("random-score", str(seed), str(i)), 16) / 16**16 for i in ids])


SCORE_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("heldout", pa.bool_(), nullable=False),
        pa.field("s_correct", pa.float32()),
        pa.field("s_incorrect", pa.float32()),
        pa.field("s_correct_max", pa.float32()),
        pa.field("s_incorrect_max", pa.float32()),
        pa.field("fused_rank", pa.float32()),
        pa.field("perplexity", pa.float32()),
        pa.field("embedding_similarity", pa.float32()),
        pa.field("random", pa.float32()),
    ]
)


def influence_table(
    train_ids: Sequence[str],
    checkpoints: Sequence[tuple[float, np.ndarray, np.ndarray]],
    correct: np.ndarray,
    groups: Sequence[str],
    *,
    perplexity: np.ndarray,
    similarity: np.ndarray,
    heldout_ids: Sequence[str] = (),
) -> tuple[pa.Table, list[str]]:
    """The `influence_scores` table (SCORE_SCHEMA): per training row s_C and s_I with the mean
    aggregate (`s_correct`, `s_incorrect`) and LESS's max over validation problems
    (`s_correct_max`, `s_incorrect_max`), each summed over checkpoints with their weights
    (`checkpoint_influence`), the fused rank of the mean scores (difference fusion), and the
    baselines (perplexity, embedding similarity, random). Rows of `heldout_ids` (training rows
    whose problem is in V) follow with `heldout` true and no scores, so a pruning spec can drop
    them. Output: (table, notes about missing validation sides)."""
    mean = checkpoint_influence(checkpoints, correct, groups, "mean")
    best = checkpoint_influence(checkpoints, correct, groups, "max")
    n, held = len(train_ids), list(heldout_ids)

    def column(values) -> pa.Array:
        return pa.array(
            np.concatenate([np.asarray(values, dtype=np.float32), np.full(len(held), np.nan, np.float32)]),
            pa.float32(),
            from_pandas=True,
        )

    table = pa.table(
        {
            "sample_id": list(train_ids) + held,
            "heldout": [False] * n + [True] * len(held),
            "s_correct": column(mean.s_c),
            "s_incorrect": column(mean.s_i),
            "s_correct_max": column(best.s_c),
            "s_incorrect_max": column(best.s_i),
            "fused_rank": column(fuse_ranks(mean.s_c, mean.s_i) if n else []),
            "perplexity": column(perplexity),
            "embedding_similarity": column(similarity),
            "random": column(random_scores(train_ids, 0)),
        },
        schema=SCORE_SCHEMA,
    )
    return table, list(mean.notes)
