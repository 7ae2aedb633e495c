"""ScaleQuest's trained difficulty scorer (METHODS.md §3.3 step 4): a regressor from a question's
text to the solver's fail rate, fit on a labelled subset of seed problems and then used to score
questions the generator wrote, which have no reference answer to grade against.

The paper trains a sequence-classification model on solver fail rates and does not release it
(nor its training data; DART-Math's fail rates of DeepSeekMath-7B-RL are the likely labels). Here
the labels are the fail rates of the pipeline's own solver on seed problems, graded against their
reference answers, and the model is a ridge regression on frozen sentence embeddings: cheap enough
for a CPU, deterministic, and fit in closed form. Its quality is the held-out correlation between
predicted and measured fail rates, reported with the fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mathdata_pipeline.common.text import stable_hash

EmbedFn = Callable[[list[str]], np.ndarray]

MODEL_SCHEMA = pa.schema(
    [
        pa.field("embedder", pa.string()),
        pa.field("weights", pa.list_(pa.float64())),
        pa.field("bias", pa.float64()),
        pa.field("alpha", pa.float64()),
        pa.field("n_train", pa.int64()),
        pa.field("n_heldout", pa.int64()),
        pa.field("heldout_pearson", pa.float64()),
        pa.field("heldout_spearman", pa.float64()),
    ]
)


@dataclass(frozen=True)
class FailRates:
    """Per labelled question: ids, texts, graded samples and correct samples (failed requests are
    not counted), and the fail rate 1 - correct / samples."""

    problem_ids: list[str]
    questions: list[str]
    samples: np.ndarray
    correct: np.ndarray

    @property
    def fail_rates(self) -> np.ndarray:
        """1 - correct / samples per question (float64)."""
        return 1.0 - self.correct / self.samples


def fail_rates_from_samples(samples: pa.Table, questions: dict[str, str]) -> tuple[FailRates, int]:
    """Fail rates of the questions whose samples were graded.

    Inputs: graded sample rows (SAMPLE_SCHEMA: `problem_id`, `correct`; a failed request has a null
    `correct` and does not count); {problem_id: question}. Output: (FailRates of the questions with
    at least one graded sample, in `questions` order; how many questions had none and were left out).
    """
    counts: dict[str, list[int]] = {}
    for pid, correct in zip(samples.column("problem_id").to_pylist(), samples.column("correct").to_pylist()):
        if correct is not None:
            tally = counts.setdefault(pid, [0, 0])
            tally[0] += 1
            tally[1] += bool(correct)
    ids = [pid for pid in questions if pid in counts]
    return (
        FailRates(
            problem_ids=ids,
            questions=[questions[pid] for pid in ids],
            samples=np.asarray([counts[pid][0] for pid in ids], dtype=np.float64),
            correct=np.asarray([counts[pid][1] for pid in ids], dtype=np.float64),
        ),
        len(questions) - len(ids),
    )


def heldout_split(problem_ids: Sequence[str], fraction: float, salt: str) -> np.ndarray:
    """A boolean mask of the held-out rows: the `fraction` of ids (rounded, at least one when
    `fraction` > 0 and there are 2+ rows, never all) that come first in a salted hash order."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"heldout fraction must be in [0, 1), got {fraction}")
    n = len(problem_ids)
    size = min(n - 1, max(1, round(fraction * n))) if fraction > 0 and n >= 2 else 0
    order = sorted(range(n), key=lambda i: stable_hash("heldout", salt, problem_ids[i]))
    mask = np.zeros(n, dtype=bool)
    mask[order[:size]] = True
    return mask


@dataclass(frozen=True)
class DifficultyScorer:
    """Ridge regression from sentence embeddings (`embedder`, unit-norm rows) to fail rate;
    predictions are clipped to [0, 1]."""

    embedder: str
    weights: np.ndarray
    bias: float
    alpha: float

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        """Predicted fail rate per embedding row (float64 in [0, 1])."""
        return np.clip(np.asarray(vectors, dtype=np.float64) @ self.weights + self.bias, 0.0, 1.0)

    def score(self, questions: list[str], embed: EmbedFn) -> np.ndarray:
        """Predicted fail rate per question; `embed` must be the scorer's own `embedder`."""
        return self.predict(embed(questions)) if questions else np.zeros(0)


@dataclass(frozen=True)
class FitReport:
    """How well the scorer ranks unseen questions: sizes of both splits, the held-out Pearson and
    Spearman correlations of predicted and measured fail rates (None when fewer than 3 held-out
    rows or either side is constant, with `note` saying which), and the labels' mean."""

    n_train: int
    n_heldout: int
    heldout_pearson: float | None
    heldout_spearman: float | None
    label_mean: float
    note: str


def fit_ridge(vectors: np.ndarray, targets: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Closed-form ridge regression with an unpenalized intercept: (weights, bias)."""
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    x = np.asarray(vectors, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    x_mean, y_mean = x.mean(axis=0), float(y.mean())
    centered = x - x_mean
    weights = np.linalg.solve(centered.T @ centered + alpha * np.eye(x.shape[1]), centered.T @ (y - y_mean))
    return weights, y_mean - float(x_mean @ weights)


def correlations(predicted: np.ndarray, measured: np.ndarray) -> tuple[float | None, float | None, str]:
    """(Pearson, Spearman, note) of two aligned arrays; None for both when they cannot be computed."""
    if len(predicted) < 3:
        return None, None, f"only {len(predicted)} held-out questions"
    if np.ptp(measured) == 0:
        return None, None, f"every held-out question has the same measured fail rate ({measured[0]:.2f})"
    if np.ptp(predicted) == 0:
        return None, None, "the scorer predicts one value for every held-out question"
    from scipy.stats import spearmanr

    pearson = float(np.corrcoef(predicted, measured)[0, 1])
    spearman = float(spearmanr(predicted, measured).statistic)
    return pearson, (spearman if math.isfinite(spearman) else None), ""


def fit_difficulty_scorer(
    labels: FailRates, embed: EmbedFn, *, embedder: str, alpha: float, heldout_fraction: float, salt: str
) -> tuple[DifficultyScorer, FitReport, np.ndarray, np.ndarray]:
    """Fit the scorer on the training split of `labels` and measure it on the held-out split.

    Inputs: the labelled questions; `embed` (texts -> unit-norm rows) named `embedder`; ridge
    `alpha`; the held-out share and the salt of the split. Output: (scorer, report, held-out mask,
    predictions for every labelled question). Raises ValueError with fewer than 2 labelled questions.
    """
    if len(labels.problem_ids) < 2:
        raise ValueError(f"{len(labels.problem_ids)} labelled questions; the scorer needs at least 2")
    vectors = embed(labels.questions)
    heldout = heldout_split(labels.problem_ids, heldout_fraction, salt)
    targets = labels.fail_rates
    weights, bias = fit_ridge(vectors[~heldout], targets[~heldout], alpha)
    scorer = DifficultyScorer(embedder, weights, bias, alpha)
    predicted = scorer.predict(vectors)
    pearson, spearman, note = correlations(predicted[heldout], targets[heldout])
    report = FitReport(int((~heldout).sum()), int(heldout.sum()), pearson, spearman, float(targets.mean()), note)
    return scorer, report, heldout, predicted


def scorer_table(scorer: DifficultyScorer, report: FitReport) -> pa.Table:
    """The scorer and its report as a one-row table (MODEL_SCHEMA), what `load_scorer` reads."""
    row = {
        "embedder": scorer.embedder,
        "weights": scorer.weights.tolist(),
        "bias": scorer.bias,
        "alpha": scorer.alpha,
        "n_train": report.n_train,
        "n_heldout": report.n_heldout,
        "heldout_pearson": report.heldout_pearson,
        "heldout_spearman": report.heldout_spearman,
    }
    return pa.Table.from_pylist([row], schema=MODEL_SCHEMA)


def load_scorer(table: pa.Table) -> DifficultyScorer:
    """The scorer stored by `scorer_table`; ValueError naming the field when the table is not one."""
    missing = set(MODEL_SCHEMA.names).difference(table.column_names)
    if table.num_rows != 1 or missing:
        raise ValueError(f"not a difficulty scorer table: {table.num_rows} rows, missing fields {sorted(missing)}")
    row = table.to_pylist()[0]
    return DifficultyScorer(row["embedder"], np.asarray(row["weights"], dtype=np.float64), row["bias"], row["alpha"])


def label_table(labels: FailRates, heldout: np.ndarray, predicted: np.ndarray) -> pa.Table:
    """One row per labelled question: problem_id, question, samples, correct, fail_rate, heldout
    (the split) and predicted (the fitted scorer's fail rate)."""
    return pa.table(
        {
            "problem_id": pa.array(labels.problem_ids, pa.string()),
            "question": pa.array(labels.questions, pa.string()),
            "samples": pa.array(labels.samples.astype(np.int32)),
            "correct": pa.array(labels.correct.astype(np.int32)),
            "fail_rate": pa.array(labels.fail_rates, pa.float64()),
            "heldout": pa.array(heldout, pa.bool_()),
            "predicted": pa.array(predicted, pa.float64()),
        }
    )
