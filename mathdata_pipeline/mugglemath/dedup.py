"""Deduplication: new questions equal or near-equal (word 5-gram Jaccard) to a seed or an earlier
new question, and responses that take the same calculation steps (equation sequences; among those,
RFT's "farthest" path is kept)."""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable, Sequence

from mathdata_pipeline.common.text import normalize_text, words
from mathdata_pipeline.mugglemath.calculator import ANNOTATION_RE, CalculatorError, tokenize_expression


def dedup_questions(
    candidates: Sequence[str], existing: Iterable[str] = (), *, threshold: float = 0.9, n: int = 5
) -> tuple[list[int], list[tuple[int, str]]]:
    """Drop new questions that repeat a seed or an earlier new question.

    Inputs: `candidates`, the new questions in priority order (an earlier one wins over a
    later near-copy); `existing`, questions to keep clear of (the seeds, earlier rounds);
    `threshold` (0 < threshold <= 1), the word n-gram Jaccard similarity at or above which two
    questions are near-duplicates; `n`, the n-gram length (questions shorter than `n` words
    use their whole word sequence as one n-gram).
    Output: `(kept, dropped)`: `kept` lists the indices of kept candidates in order; `dropped`
    lists `(index, reason)` with reason `"empty"` (blank text), `"exact_existing"` /
    `"exact_candidate"` (same `normalize_text` as an existing question / an earlier kept
    candidate) or `"near_existing"` / `"near_candidate"` (Jaccard >= threshold). Words are
    `text.words` (case, punctuation and LaTeX markup ignored).

    Near-duplicates are found with prefix filtering: each question is indexed under its few
    n-grams that come first in one fixed order, which any question with Jaccard >= threshold
    must share, so only those few candidates are compared in full. The result is exact, and
    the cost stays near-linear for tens of thousands of questions.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    seen_existing = set()
    existing_index = _ShingleIndex(threshold)
    for text in existing:
        seen_existing.add(normalize_text(text))
        existing_index.add(_shingles(text, n))
    seen_kept: set[str] = set()
    kept_index = _ShingleIndex(threshold)
    kept: list[int] = []
    dropped: list[tuple[int, str]] = []
    for index, text in enumerate(candidates):
        normalized = normalize_text(text)
        shingles = _shingles(text, n)
        if not normalized:
            reason = "empty"
        elif normalized in seen_existing:
            reason = "exact_existing"
        elif normalized in seen_kept:
            reason = "exact_candidate"
        elif existing_index.has_near(shingles):
            reason = "near_existing"
        elif kept_index.has_near(shingles):
            reason = "near_candidate"
        else:
            kept.append(index)
            seen_kept.add(normalized)
            kept_index.add(shingles)
            continue
        dropped.append((index, reason))
    return kept, dropped


def _shingles(text: str, n: int) -> frozenset[tuple[str, ...]]:
    """Word n-grams of `text` (the whole word tuple when shorter than `n`; empty if no words)."""
    tokens = words(text)
    if len(tokens) < n:
        return frozenset([tuple(tokens)]) if tokens else frozenset()
    return frozenset(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _order(shingle: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
    """A fixed total order on n-grams that mixes frequent and rare ones (hash, then text)."""
    return hash(shingle), shingle


class _ShingleIndex:
    """Sets of n-grams, indexed by their prefix n-grams for Jaccard threshold queries."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.sets: list[frozenset[tuple[str, ...]]] = []
        self.postings: dict[tuple[str, ...], list[int]] = {}

    def _prefix(self, shingles: frozenset[tuple[str, ...]]) -> list[tuple[str, ...]]:
        # Two sets with Jaccard >= t share an n-gram among the first |S| - ceil(t|S|) + 1 of each.
        size = len(shingles) - math.ceil(self.threshold * len(shingles) - 1e-9) + 1
        return heapq.nsmallest(size, shingles, key=_order)

    def add(self, shingles: frozenset[tuple[str, ...]]) -> None:
        """Index one set (an empty set is never a near-duplicate and is not indexed)."""
        if not shingles:
            return
        self.sets.append(shingles)
        for shingle in self._prefix(shingles):
            self.postings.setdefault(shingle, []).append(len(self.sets) - 1)

    def has_near(self, shingles: frozenset[tuple[str, ...]]) -> bool:
        """Whether an indexed set has Jaccard similarity >= threshold with `shingles`."""
        if not shingles:
            return False
        checked: set[int] = set()
        for shingle in self._prefix(shingles):
            for index in self.postings.get(shingle, ()):
                if index in checked:
                    continue
                checked.add(index)
                other = self.sets[index]
                shared = len(shingles & other)
                if shared >= self.threshold * (len(shingles) + len(other) - shared) - 1e-9:
                    return True
        return False


# `a op b ... = c` written in prose: starts at a number, `$` or `(`, no letters on the left.
_TEXT_EQUATION = re.compile(
    r"(?<![\w.,])(?P<lhs>[$(]*\d[\d.,$()+\-*/^%\u00d7\u00f7\u2212 \t]{0,120}?)[ \t]*="
    r"[ \t]*(?P<rhs>-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)"
)
_OPERATORS = frozenset("+-*/^")


def equation_sequence(text: str) -> tuple[str, ...]:
    """The calculation steps of a response, in order, in a canonical spelling.

    Input: a response. Output: one string per step, `lhs=rhs` with spaces, `$` and thousands
    commas removed, numbers canonical (`24.0` -> `24`) and `×`/`÷`/`**` spelled `*`/`/`/`^`.
    The steps are the GSM8K calculator annotations `<<lhs=rhs>>` when the text has any (an
    annotation that does not tokenize is kept with only its spaces removed); otherwise the
    prose equations `a op b ... = c` whose left side has an operator and no letters:
    `48 / 2 = 24` counts, `x = 72` does not, and neither does `3 x 4 = 12` (`x` is a letter).
    """
    annotations = ANNOTATION_RE.findall(text)
    if annotations:
        return tuple(_canonical_equation(body) for body in annotations)
    steps = []
    for match in _TEXT_EQUATION.finditer(text):
        try:
            lhs = tokenize_expression(match.group("lhs"))
        except CalculatorError:
            continue
        if _OPERATORS.intersection(lhs[1:]):
            steps.append("".join(lhs) + "=" + "".join(tokenize_expression(match.group("rhs"))))
    return tuple(steps)


def _canonical_equation(body: str) -> str:
    """`48 / 2 = 24.0` -> `48/2=24`; bodies that do not tokenize lose only their spaces."""
    try:
        return "=".join("".join(tokenize_expression(side)) for side in body.split("="))
    except CalculatorError:
        return "".join(body.split())


def dedup_by_equations(responses: Sequence[str]) -> list[int]:
    """Indices of the responses to keep: one per distinct equation sequence, the farthest one.

    Input: the (already filtered) responses to ONE question, in sample order. Output: kept indices,
    ascending. Two responses are duplicates when `equation_sequence` gives the same steps in the
    same order; responses without any equation are compared by `normalize_text` instead, so
    different prose answers are all kept.

    Which duplicate stays follows RFT's `collect_rejection_sampling.py` ("farthest" paths): the
    responses are visited in order; a new equation sequence is kept; a response whose sequence is
    already kept replaces the kept one when its summed character edit distance to the *other*
    kept responses is larger than the kept one's, so the kept set drifts towards paths that are
    worded most differently.
    """
    import editdistance

    slots: list[int] = []  # kept response of each distinct sequence, in first-seen order
    slot_of: dict[tuple[str, ...], int] = {}
    for index, response in enumerate(responses):
        key = equation_sequence(response) or ("\x00text", normalize_text(response))
        slot = slot_of.get(key)
        if slot is None:
            slot_of[key] = len(slots)
            slots.append(index)
            continue
        current = slots[slot]
        others = [responses[j] for j in slots if j != current]
        challenger = sum(editdistance.eval(response, other) for other in others)
        if challenger > sum(editdistance.eval(responses[current], other) for other in others):
            slots[slot] = index
    return sorted(slots)
