"""Whether two answers are the same mathematical object, component by component.

`answers_equal(predicted, reference, leaf)` parses both cleaned answers into shapes
(`structure.py`) and compares them the way a mathematician would:

- tuples and matrices in order; sets, bare lists and unions in any order; a bare list against a
  tuple in order when the reference is the tuple (`1,3` vs `(3,1)` differs), else in any order;
- intervals by their ends and brackets; an open `(a, b)` tuple equals the open interval;
  an inequality in one quantity equals the interval it describes (`-2 \\leq x \\leq 7` and
  `x \\in [-2, 7]` and `[-2, 7]`); a list of such inequalities (`x < -1 or x > 1`) a union;
- a relation that states a value (`x = 5`, `k = 1 + 1 = 2`; on the predicted side any chain of
  `=` but a single `... = 0`) by that value; a genuine equation or inequality only against
  another relation; `a, b` against one value `v` when every item
  equals `v` (one answer written twice); `1,5` against a number as the decimal `1.5`;
- words by their lower-cased text; formulas (`expr` leaves) by `leaf`.

`leaf(predicted, reference)` decides two formulas: True, False, or None for "cannot tell without
the symbolic check". The result is then True, False or None in the same sense. Nothing is
evaluated here: the symbolic leaf (math-verify) runs in the grader's worker processes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from .normalize import normalize_answer
from .numeric import Tolerance, numbers_equal, parse_number
from .structure import (
    EXPR,
    INTERVAL,
    LIST,
    MATRIX,
    RELATION,
    SET,
    TEXT,
    TUPLE,
    UNION,
    Shape,
    parse_shape,
    relation_interval,
    relation_value,
)

Leaf = Callable[[str, str], "bool | None"]
_COLLECTIONS = frozenset({LIST, SET, TUPLE})
_SET_LIKE = frozenset({INTERVAL, UNION})
_DECIMAL_COMMA = re.compile(r"-?\d+,\d+")
_INFINITIES = frozenset({"\\infty", "-\\infty"})
_WORDS = re.compile(r"[a-z][a-z ]*")


def answers_equal(predicted: str, reference: str, leaf: Leaf) -> bool | None:
    """Compare two cleaned answers (`clean_answer(..., keep_assignment=True)` output).

    Inputs: `predicted`, `reference`; `leaf`, the check for two formulas (see module docstring).
    Output: True (same object), False (different), None (a leaf could not tell).
    """
    return shapes_equal(parse_shape(predicted), parse_shape(reference), leaf)


def cheap_leaf(tolerance: Tolerance) -> Leaf:
    """The in-process leaf check: equal normalized strings; else numbers compared within
    `tolerance`; else an infinity against a number or another infinity, or words against a
    number, differ; else None (the symbolic check must decide)."""

    def leaf(predicted: str, reference: str) -> bool | None:
        predicted_norm, reference_norm = normalize_answer(predicted), normalize_answer(reference)
        if predicted_norm == reference_norm:
            return True
        predicted_value, reference_value = parse_number(predicted_norm), parse_number(reference_norm)
        if predicted_value is not None and reference_value is not None:
            return numbers_equal(predicted_value, reference_value, tolerance)
        for one, other, other_value in (
            (predicted_norm, reference_norm, reference_value),
            (reference_norm, predicted_norm, predicted_value),
        ):
            if one in _INFINITIES and (other in _INFINITIES or other_value is not None):
                return False
            if _WORDS.fullmatch(one) and other_value is not None:
                return False
        return None

    return leaf


def shapes_equal(predicted: Shape, reference: Shape, leaf: Leaf) -> bool | None:
    """Compare two parsed answers (see the module docstring); True, False or None."""
    kinds = {predicted.kind, reference.kind}
    if RELATION in kinds:
        return _with_relation(predicted, reference, leaf)
    if predicted.kind == reference.kind:
        return _same_kind(predicted, reference, leaf)
    if kinds <= _COLLECTIONS:
        if reference.kind == TUPLE:
            return _in_order(predicted.items, reference.items, leaf)
        return _any_order(predicted.items, reference.items, leaf)
    if kinds & _SET_LIKE and kinds <= _SET_LIKE | {TUPLE, LIST}:
        return _as_sets(predicted, reference, leaf)
    decimal = _decimal_comma(predicted, reference, leaf)
    if decimal is not None:
        return decimal
    if predicted.kind in (LIST, SET) and reference.kind not in _COLLECTIONS:
        return _all(shapes_equal(item, reference, leaf) for item in predicted.items)
    if reference.kind in (LIST, SET) and predicted.kind not in _COLLECTIONS:
        return _all(shapes_equal(predicted, item, leaf) for item in reference.items)
    if EXPR in kinds:
        return leaf(predicted.text, reference.text)
    return False


def _same_kind(predicted: Shape, reference: Shape, leaf: Leaf) -> bool | None:
    """Compare two shapes of the same kind."""
    kind = predicted.kind
    if kind == EXPR:
        return leaf(predicted.text, reference.text)
    if kind == TEXT:
        return predicted.text == reference.text
    if kind in (SET, LIST, UNION):
        return _any_order(predicted.items, reference.items, leaf)
    if kind == MATRIX and predicted.columns != reference.columns:
        return False
    if kind == INTERVAL and predicted.closed != reference.closed:
        return False
    return _in_order(predicted.items, reference.items, leaf)


def _with_relation(predicted: Shape, reference: Shape, leaf: Leaf) -> bool | None:
    """Compare when at least one side is a relation."""
    predicted_value = relation_value(predicted, as_response=True)
    reference_value = relation_value(reference)
    if predicted.kind == RELATION and reference.kind == RELATION:
        if predicted_value is not None and reference_value is not None:
            return shapes_equal(predicted_value, reference_value, leaf)
        predicted_set, reference_set = relation_interval(predicted), relation_interval(reference)
        if predicted_set is not None and reference_set is not None:
            return shapes_equal(predicted_set, reference_set, leaf)
        return leaf(predicted.text, reference.text)
    if predicted_value is not None:
        return shapes_equal(predicted_value, reference, leaf)
    if reference_value is not None:
        return shapes_equal(predicted, reference_value, leaf)
    predicted_set, reference_set = relation_interval(predicted), relation_interval(reference)
    if predicted_set is not None and reference.kind != EXPR:
        return shapes_equal(predicted_set, reference, leaf)
    if reference_set is not None and predicted.kind != EXPR:
        return shapes_equal(predicted, reference_set, leaf)
    return False  # an equation or inequality against a value


def _as_sets(predicted: Shape, reference: Shape, leaf: Leaf) -> bool | None:
    """Compare intervals, unions, open pairs and lists of inequalities as sets of numbers."""
    predicted_members, reference_members = _members(predicted), _members(reference)
    if predicted_members is None or reference_members is None:
        return False
    if len(predicted_members) != len(reference_members):
        return leaf(predicted.text, reference.text)  # e.g. `[0,1) \cup [1,2]` vs `[0,2]`
    return _any_order(predicted_members, reference_members, leaf)


def _members(shape: Shape) -> tuple[Shape, ...] | None:
    """The intervals and sets whose union `shape` is, or None if it is not such a union."""
    if shape.kind == INTERVAL or shape.kind == SET:
        return (shape,)
    if shape.kind == TUPLE and len(shape.items) == 2:
        return (Shape(INTERVAL, shape.text, shape.items),)
    if shape.kind == RELATION:
        interval = relation_interval(shape)
        return _members(interval) if interval is not None else None
    if shape.kind in (UNION, LIST):
        members: list[Shape] = []
        for item in shape.items:
            inner = _members(item)
            if inner is None:
                return None
            members.extend(inner)
        return tuple(members)
    return None


def _decimal_comma(predicted: Shape, reference: Shape, leaf: Leaf) -> bool | None:
    """`1,5` (a two-item list written without a space) against a single number, read as `1.5`;
    None when this reading does not apply."""
    for comma, other in ((predicted, reference), (reference, predicted)):
        if comma.kind == LIST and other.kind == EXPR and _DECIMAL_COMMA.fullmatch(comma.text):
            if parse_number(normalize_answer(other.text)) is None:
                continue
            decimal = comma.text.replace(",", ".")
            return leaf(decimal, other.text) if comma is predicted else leaf(other.text, decimal)
    return None


def _all(verdicts: Iterable[bool | None]) -> bool | None:
    """False if any verdict is False (stops there), else None if any is None, else True."""
    undecided = False
    for verdict in verdicts:
        if verdict is False:
            return False
        if verdict is None:
            undecided = True
    return None if undecided else True


def _any(verdicts: Iterable[bool | None]) -> bool | None:
    """True if any verdict is True (stops there), else None if any is None, else False."""
    undecided = False
    for verdict in verdicts:
        if verdict is True:
            return True
        if verdict is None:
            undecided = True
    return None if undecided else False


def _in_order(predicted: tuple[Shape, ...], reference: tuple[Shape, ...], leaf: Leaf) -> bool | None:
    """Item by item, in order; different lengths differ."""
    if len(predicted) != len(reference):
        return False
    return _all(shapes_equal(left, right, leaf) for left, right in zip(predicted, reference))


def _any_order(predicted: tuple[Shape, ...], reference: tuple[Shape, ...], leaf: Leaf) -> bool | None:
    """Whether the items pair up one to one (bipartite matching, comparisons on demand); with
    different counts, whether each item of either side equals some item of the other (sets:
    `{1, 2, 2}` equals `{1, 2}`)."""
    verdicts: dict[tuple[int, int], bool | None] = {}

    def equal(i: int, j: int) -> bool | None:
        if (i, j) not in verdicts:
            verdicts[(i, j)] = shapes_equal(predicted[i], reference[j], leaf)
        return verdicts[(i, j)]

    if len(predicted) != len(reference):
        rows, columns = range(len(predicted)), range(len(reference))
        return _all(
            [_any(equal(i, j) for j in columns) for i in rows] + [_any(equal(i, j) for i in rows) for j in columns]
        )
    if _perfect_matching(len(predicted), lambda i, j: equal(i, j) is True):
        return True
    if _perfect_matching(len(predicted), lambda i, j: equal(i, j) is not False):
        return None
    return False


def _perfect_matching(size: int, edge: Callable[[int, int], bool]) -> bool:
    """Whether a `size` x `size` bipartite graph has a perfect matching (Kuhn's algorithm)."""
    owner: list[int | None] = [None] * size

    def augment(i: int, seen: list[bool]) -> bool:
        for j in range(size):
            if not seen[j] and edge(i, j):
                seen[j] = True
                if owner[j] is None or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return all(augment(i, [False] * size) for i in range(size))
