"""What kind of mathematical object a cleaned answer writes down, as a small tree of `Shape`s.

`parse_shape` reads the output of `clean_answer(answer, keep_assignment=True)`:

- `list`: items separated at the top level by `;` (first), else by `,`, "and", "or" (`1, 2`);
  `a \\pm b` is the list `a+b, a-b`;
- `union`: members separated by `\\cup`;
- `relation`: terms joined by `=`, `<`, `>`, `\\leq`, `\\geq`, `\\neq`, `\\approx`, `\\in`,
  `\\equiv` (a final `\\pmod{n}` dropped)
  (after an implication `\\Rightarrow` / `\\implies` / `\\rightarrow`, only its conclusion);
- `matrix`: one `pmatrix`/`bmatrix`/`Bmatrix`/`matrix`/`smallmatrix`/`array` environment;
- `set` `\\{...\\}`, `tuple` `(a, b)` / `[a, b, c]` / `\\langle a, b\\rangle`, `interval`
  `[a, b)` `(a, b]` `[a, b]` (`(a, b)` stays a tuple: it may be either);
- `text`: words only (lower-cased); `expr`: anything else, compared as a formula.

Parsing is a series of top-level scans, at most 8 levels deep and 64 items wide (deeper or wider
input stays one `expr`); nothing is evaluated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .latex import outer_brackets, split_top_level, top_level_matches

EXPR, TEXT, TUPLE, SET, LIST, INTERVAL, UNION, MATRIX, RELATION = (
    "expr",
    "text",
    "tuple",
    "set",
    "list",
    "interval",
    "union",
    "matrix",
    "relation",
)
MAX_DEPTH = 8
MAX_ITEMS = 64
INFINITY = "\\infty"

_SEMICOLON = re.compile(r"\s*;\s*")
# `,`, "and", "or" (also glued to brackets: `(1,2)or(2,1)`).
_COMMA = re.compile(r"\s*,\s*|\s+(?:and|or)\s+|(?<=[)\]}])\s*(?:and|or)\s*(?=[(\[{\\])")
_ITEM_SEPARATOR = re.compile(r"\s*[,;]\s*")
_LEADING_CONJUNCTION = re.compile(r"^(?:and|or)\s+")
_CUP = re.compile(r"\s*\\cup(?![a-zA-Z])\s*")
_IMPLIES = re.compile(r"\s*\\(?:Rightarrow|implies|Longrightarrow|rightarrow|therefore)(?![a-zA-Z])\s*")
_RELATION_OP = re.compile(r"\s*(\\(?:leq|geq|neq|approx|in|equiv)(?![a-zA-Z])|<|>|=|≈)\s*")
# A modulus after the last term of a congruence: `\pmod{13}`, `\pmod 5`, `(\mod 7)`, `\bmod 7`.
_MODULUS = re.compile(r"\s*(?:\\pmod\s*(?:\{[^{}]*\}|\d+)|\(\s*\\(?:b?mod)\s*\d+\s*\)|\\bmod\s*\d+)\s*$")
_PLUS_MINUS = re.compile(r"\s*\\pm(?![a-zA-Z])\s*|\s*±\s*")
_SUM = re.compile(r"[+-]")
_MATRIX = re.compile(
    r"\\begin\{(p|b|B|small)?matrix\}(?P<body>.*)\\end\{\1matrix\}"
    r"|\\begin\{array\}\{[^{}]*\}(?P<array>.*)\\end\{array\}",
    re.DOTALL,
)
_ROW = re.compile(r"\s*\\\\\s*")
_CELL = re.compile(r"\s*&\s*")
_WORDS = re.compile(r"[A-Za-z]+(?: [A-Za-z]+)*")
_COMMAND = re.compile(r"\\[a-zA-Z]+")
# Operators that make a term more than a name (`x^2`, `2x+1`, `a \cdot b`), at the top level.
_NAME_BREAKER = re.compile(r"[+\-*/^=<>!]|\\(?:cdot|times|div)(?![a-zA-Z])")
_NAME_MAX_CHARS = 40
_INCREASING = frozenset({"<", "\\leq"})
_DECREASING = frozenset({">", "\\geq"})


@dataclass(frozen=True)
class Shape:
    """One node of a parsed answer.

    Attributes: `kind` (one of the module's kinds); `text`, the cleaned source of this node
    (lower-cased words for `text`); `items`, the children (list/set/tuple/union members,
    interval endpoints, matrix cells row by row, relation terms); `closed`, for an interval,
    whether each end is included; `columns`, for a matrix; `ops`, for a relation, the operator
    between `items[i]` and `items[i + 1]`.
    """

    kind: str
    text: str
    items: tuple[Shape, ...] = ()
    closed: tuple[bool, bool] = (False, False)
    columns: int = 0
    ops: tuple[str, ...] = ()


def parse_shape(text: str, depth: int = 0) -> Shape:
    """The `Shape` of a cleaned answer (see the module docstring). Never raises."""
    text = text.strip()
    if not text or depth > MAX_DEPTH:
        return Shape(EXPR, text)
    for pattern, kind in ((_SEMICOLON, LIST), (_COMMA, LIST), (_CUP, UNION)):
        parts = [_LEADING_CONJUNCTION.sub("", part.strip()) for part in split_top_level(text, pattern)]
        parts = [part for part in parts if part]
        if len(parts) > MAX_ITEMS:
            return Shape(EXPR, text)
        if len(parts) > 1:
            return Shape(kind, text, _members(parts, depth) if kind == LIST else _items(parts, depth))
        if len(parts) == 1 and parts[0] != text:
            return parse_shape(parts[0], depth + 1)
    statements = split_top_level(text, _IMPLIES)
    if len(statements) > 1 and statements[-1].strip():
        return parse_shape(statements[-1], depth + 1)  # `a = 60 \Rightarrow N = 28`: the conclusion
    relation = _relation(text, depth)
    if relation is not None:
        return relation
    plus_minus = split_top_level(text, _PLUS_MINUS)
    if len(plus_minus) == 2:
        return Shape(LIST, text, tuple(parse_shape(part, depth + 1) for part in _expand_plus_minus(*plus_minus)))
    matrix = _matrix(text, depth)
    if matrix is not None:
        return matrix
    brackets = outer_brackets(text)
    if brackets is not None:
        return _bracketed(text, *brackets, depth)
    words = " ".join(text.split())
    if _WORDS.fullmatch(words):
        return Shape(TEXT, words.lower())
    return Shape(EXPR, text)


def _items(parts: list[str], depth: int) -> tuple[Shape, ...]:
    """The shapes of `parts`, one level deeper."""
    return tuple(parse_shape(part, depth + 1) for part in parts if part)


def _members(parts: list[str], depth: int) -> tuple[Shape, ...]:
    """Members of a set or list: as `_items`, with `a \\pm b` contributing both of its values."""
    members: list[Shape] = []
    for shape in _items(parts, depth):
        plus_minus = shape.kind == LIST and _PLUS_MINUS.search(shape.text) is not None
        members.extend(shape.items if plus_minus else (shape,))
    return tuple(members)


def _relation(text: str, depth: int) -> Shape | None:
    """A relation chain `a = b < c ...`, or None without a top-level relation operator."""
    matches = top_level_matches(text, _RELATION_OP) if _RELATION_OP.search(text) else None
    if not matches or len(matches) >= MAX_ITEMS:
        return None
    terms, start = [], 0
    for match in matches:
        terms.append(text[start : match.start()].strip())
        start = match.end()
    terms.append(text[start:].strip())
    if not all(terms):
        return None  # `= 5`, `x <`: not a relation we can read
    ops = tuple("\\approx" if match.group(1) == "≈" else match.group(1) for match in matches)
    if "\\equiv" in ops:
        terms[-1] = _MODULUS.sub("", terms[-1]) or terms[-1]
    return Shape(RELATION, text, tuple(parse_shape(term, depth + 1) for term in terms), ops=ops)


def _expand_plus_minus(left: str, right: str) -> tuple[str, str]:
    """`a \\pm b` -> (`a+b`, `a-b`); `\\pm b` -> (`b`, `-b`). A sum `b` is parenthesized."""
    left, right = left.strip(), right.strip()
    if split_top_level(right, _SUM) != [right]:
        right = f"({right})"
    if not left:
        return right, f"-{right}"
    return f"{left}+{right}", f"{left}-{right}"


def _matrix(text: str, depth: int) -> Shape | None:
    """A matrix environment filling all of `text` (not nested in another), or None."""
    if not text.startswith("\\begin"):
        return None
    match = _MATRIX.fullmatch(text)
    if match is None:
        return None
    body = match.group("body") if match.group("body") is not None else match.group("array")
    if "\\begin" in body:
        return None
    rows = [row for row in split_top_level(body.strip(), _ROW) if row.strip()]
    cells = [split_top_level(row.strip(), _CELL) for row in rows]
    if not cells or len({len(row) for row in cells}) != 1 or len(rows) * len(cells[0]) > MAX_ITEMS:
        return None
    items = tuple(parse_shape(cell, depth + 1) for row in cells for cell in row)
    return Shape(MATRIX, text, items, columns=len(cells[0]))


def _bracketed(text: str, opener: str, closer: str, inside: str, depth: int) -> Shape:
    """The shape of `text`, which `opener` ... `closer` enclose entirely."""
    inside = inside.strip()
    if opener == "{":
        return parse_shape(inside, depth + 1)  # a LaTeX group, not a set
    parts = [part.strip() for part in split_top_level(inside, _ITEM_SEPARATOR)] if inside else []
    if len(parts) > MAX_ITEMS:
        return Shape(EXPR, text)
    if opener == "\\{" and closer == "\\}":
        return Shape(SET, text, _members(parts, depth))
    if opener == "\\langle" and closer == "\\rangle":
        return Shape(TUPLE, text, tuple(parse_shape(part, depth + 1) for part in parts))
    if opener not in "([" or closer not in ")]" or not all(parts):
        return Shape(EXPR, text)
    if len(parts) == 1:
        return parse_shape(inside, depth + 1) if (opener, closer) in (("(", ")"), ("[", "]")) else Shape(EXPR, text)
    items = tuple(parse_shape(part, depth + 1) for part in parts)
    if len(parts) == 2 and (opener, closer) != ("(", ")"):
        return Shape(INTERVAL, text, items, closed=(opener == "[", closer == "]"))
    if opener + closer in ("()", "[]"):
        return Shape(TUPLE, text, items)
    return Shape(EXPR, text)


def is_constant(text: str) -> bool:
    """True when `text` has no letter outside command names (`\\frac{1}{2} \\times 378`, `\\pi`)."""
    return not any(char.isalpha() for char in _COMMAND.sub("", text))


def is_name(text: str) -> bool:
    """True when `text` names a quantity rather than computing one: `x`, `a_{n+1}`, `f(3)`,
    `\\angle ABC`, `(p, q)`, `\\frac{NO}{BO}`; not `2x`, `x^2`, `a + b`, `-x` or a constant."""
    text = text.strip()
    if not text or len(text) > _NAME_MAX_CHARS or text[0].isdigit() or text[0] in "+-." or is_constant(text):
        return False
    return _NAME_BREAKER.search(text) is None or top_level_matches(text, _NAME_BREAKER) == []


def relation_value(shape: Shape, *, as_response: bool = False) -> Shape | None:
    """The value a relation states, or None when it is a genuine equation or inequality.

    A chain of `=` or `\\equiv` (possibly ending in `\\approx ...`) states its last exact term when an earlier
    term is a name (`x = 5+5+1 = 11` -> 11, `k = \\frac{1}{3}` -> 1/3) or when every term is a
    constant (`\\frac{1}{2} \\times 378 = 189` -> 189); `x \\approx 11` states 11 and
    `x = \\frac{1}{3} \\approx 0.33` states 1/3. `2x + 4y = 3` and `7 = 11a + c` state nothing.
    With `as_response` (the side being graded, which works its way to the value) every chain
    states its last exact term (`a+b = -3+3 = 0` -> 0, `x + y = 2` -> 2), except one equation
    with 0 on the right (`2x - y + 2z - 18 = 0` is an equation in standard form).
    """
    if shape.kind != RELATION or any(op not in ("=", "\\equiv", "\\approx") for op in shape.ops):
        return None
    terms = shape.items
    if shape.ops[0] == "\\approx":
        return terms[1] if is_name(terms[0].text) else None
    exact = terms[: shape.ops.index("\\approx") + 1] if "\\approx" in shape.ops else terms
    if any(is_name(term.text) for term in exact[:-1]) or all(is_constant(term.text) for term in exact):
        return exact[-1]
    if as_response and not (len(exact) == 2 and exact[-1].text == "0"):
        return exact[-1]
    return None


def relation_interval(shape: Shape) -> Shape | None:
    """The set of values an inequality in one named quantity allows, or None.

    `x \\in S` gives S; `x > 5` gives `(5, \\infty)`, `5 \\geq x` gives `(-\\infty, 5]`,
    `-2 \\leq x < 7` gives `[-2, 7)` (as `interval` shapes). Anything else gives None.
    """
    if shape.kind != RELATION:
        return None
    terms, ops = shape.items, shape.ops
    if ops == ("\\in",):
        return terms[1] if is_name(terms[0].text) else None
    names = [is_name(term.text) for term in terms]
    if names.count(True) != 1 or not (set(ops) <= _INCREASING or set(ops) <= _DECREASING):
        return None
    if len(ops) == 1:
        variable_left = names[0]
        bound = terms[1] if variable_left else terms[0]
        upper = (ops[0] in _INCREASING) == variable_left  # `x < b` and `b > x` bound x from above
        inclusive = ops[0] in ("\\leq", "\\geq")
        if upper:
            return _interval(Shape(EXPR, "-" + INFINITY), bound, (False, inclusive))
        return _interval(bound, Shape(EXPR, INFINITY), (inclusive, False))
    if len(ops) == 2 and names[1]:
        low, high = (terms[0], terms[2]) if ops[0] in _INCREASING else (terms[2], terms[0])
        first, second = (ops[0], ops[1]) if ops[0] in _INCREASING else (ops[1], ops[0])
        return _interval(low, high, (first == "\\leq" or first == "\\geq", second == "\\leq" or second == "\\geq"))
    return None


def _interval(low: Shape, high: Shape, closed: tuple[bool, bool]) -> Shape:
    """An interval shape from its two endpoint shapes."""
    text = f"{'[' if closed[0] else '('}{low.text}, {high.text}{']' if closed[1] else ')'}"
    return Shape(INTERVAL, text, (low, high), closed=closed)
