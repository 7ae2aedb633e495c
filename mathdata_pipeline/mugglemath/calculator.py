"""GSM8K calculator annotations `<<expr=result>>` checked by a small arithmetic parser (never `eval`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

ANNOTATION_RE = re.compile(r"<<([^<>]*)>>")
_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+)"
    r"|(?P<op>\*\*|[-+*/^%()\u00d7\u00f7\u2212])|(?P<skip>\$))"
)
_OP_ALIASES = {"**": "^", "\u00d7": "*", "\u00f7": "/", "\u2212": "-"}
_MAX_EXPRESSION_CHARS = 200
_MAX_DEPTH = 30
_MAX_MAGNITUDE = 1e100
_REL_TOL = 1e-6
_ABS_TOL = 1e-9


@dataclass(frozen=True)
class AnnotationCheck:
    """Result of checking the calculator annotations of one response.

    `ok`: no failure (also True when there are no annotations: check `n_checked`);
    `n_checked`: annotations found; `failures`: one message per failed annotation, naming the
    annotation and the reason (wrong result, malformed expression, too large, ...).
    """

    ok: bool
    n_checked: int
    failures: list[str]


class CalculatorError(Exception):
    """An expression that cannot be evaluated; the message is the reason."""


def check_calculator_annotations(text: str, *, rel_tol: float = _REL_TOL) -> AnnotationCheck:
    """Verify every GSM8K calculator annotation `<<expr=result>>` in `text`.

    Inputs: `text`, a response or reference solution; `rel_tol`, the relative tolerance of the
    comparison (an absolute 1e-9 also applies, for results near 0).
    Output: `AnnotationCheck(ok, n_checked, failures)`.

    `expr` and `result` are read by a small arithmetic parser, never `eval`: numbers (with
    thousands commas, decimals, an ignored `$`), `+ - * /` (also `×`, `÷`, `−`), parentheses,
    unary signs, `^` or `**` for powers and a postfix `%` meaning /100. Each annotation needs
    exactly one `=`; a trailing `.` of the result is ignored. Anything else (letters, names,
    quotes, an unclosed `<<`) is a failure with a reason, as are expressions longer than 200
    characters, nesting deeper than 30, division by zero and any value above 1e100 in
    magnitude (so `9^9^9` is refused, not computed).
    """
    failures: list[str] = []
    matches = list(ANNOTATION_RE.finditer(text))
    for match in matches:
        reason = _annotation_failure(match.group(1), rel_tol)
        if reason is not None:
            failures.append(f"{_shorten(match.group(0))}: {reason}")
    leftover = ANNOTATION_RE.sub("", text)
    if "<<" in leftover or ">>" in leftover:
        failures.append("unbalanced '<<' / '>>' in the text")
    return AnnotationCheck(not failures, len(matches), failures)


def _annotation_failure(body: str, rel_tol: float) -> str | None:
    """Why `expr=result` does not check out, or None when it does."""
    if len(body) > _MAX_EXPRESSION_CHARS:
        return f"longer than {_MAX_EXPRESSION_CHARS} characters"
    if body.count("=") != 1:
        return "expected exactly one '='"
    expression, result = body.split("=")
    try:
        value = _evaluate(expression)
        claimed = _evaluate(result.strip().rstrip("."))
    except CalculatorError as error:
        return str(error)
    if math.isclose(value, claimed, rel_tol=rel_tol, abs_tol=_ABS_TOL):
        return None
    return f"{expression.strip()} = {value:.10g}, not {result.strip()}"


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tokenize_expression(expression: str) -> list[str]:
    """Canonical tokens: numbers without commas or needless zeros, operators unaliased."""
    tokens: list[str] = []
    position = 0
    expression = expression.rstrip()
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if match is None:
            offender = expression[position:].lstrip()[:1]
            raise CalculatorError(f"unexpected character {offender!r}")
        position = match.end()
        if match.group("number"):
            tokens.append(_canonical_number(match.group("number")))
        elif match.group("op"):
            tokens.append(_OP_ALIASES.get(match.group("op"), match.group("op")))
    return tokens


def _canonical_number(number: str) -> str:
    """`1,000.50` -> `1000.5`, `.5` -> `0.5`, `24.` and `24.0` -> `24`, `007` -> `7`."""
    integer, _, fraction = number.replace(",", "").partition(".")
    integer, fraction = integer.lstrip("0") or "0", fraction.rstrip("0")
    return f"{integer}.{fraction}" if fraction else integer


def _evaluate(expression: str) -> float:
    """Value of an arithmetic expression (see `check_calculator_annotations`)."""
    tokens = tokenize_expression(expression)
    if not tokens:
        raise CalculatorError("empty expression")
    return _Evaluator(tokens).run()


def _bounded(value: float) -> float:
    if not math.isfinite(value) or abs(value) > _MAX_MAGNITUDE:
        raise CalculatorError("value too large")
    return value


class _Evaluator:
    """Recursive-descent evaluator over canonical tokens.

    sum := product (('+' | '-') product)*
    product := signed (('*' | '/') signed)*
    signed := ('+' | '-')* power
    power := percent ('^' signed)?          (right-associative, binds tighter than a sign)
    percent := atom '%'*
    atom := number | '(' sum ')'
    """

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.position = 0
        self.depth = 0

    def run(self) -> float:
        value = self._sum()
        if self.position < len(self.tokens):
            raise CalculatorError(f"unexpected {self.tokens[self.position]!r}")
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise CalculatorError("incomplete expression")
        self.position += 1
        return token

    def _sum(self) -> float:
        value = self._product()
        while self._peek() in ("+", "-"):
            operator = self._take()
            right = self._product()
            value = _bounded(value + right if operator == "+" else value - right)
        return value

    def _product(self) -> float:
        value = self._signed()
        while self._peek() in ("*", "/"):
            operator = self._take()
            right = self._signed()
            if operator == "/" and right == 0:
                raise CalculatorError("division by zero")
            value = _bounded(value * right if operator == "*" else value / right)
        return value

    def _signed(self) -> float:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise CalculatorError("expression nested too deeply")
        sign = 1.0
        while self._peek() in ("+", "-"):
            sign = -sign if self._take() == "-" else sign
        value = sign * self._power()
        self.depth -= 1
        return value

    def _power(self) -> float:
        base = self._percent()
        if self._peek() != "^":
            return base
        self._take()
        exponent = self._signed()
        try:
            value = math.pow(base, exponent)
        except OverflowError:
            raise CalculatorError("value too large") from None
        except (ValueError, ZeroDivisionError):
            raise CalculatorError(f"cannot compute {base:g}^{exponent:g}") from None
        return _bounded(value)

    def _percent(self) -> float:
        value = self._atom()
        while self._peek() == "%":
            self._take()
            value /= 100
        return value

    def _atom(self) -> float:
        token = self._take()
        if token == "(":
            value = self._sum()
            if self._peek() != ")":
                raise CalculatorError("unbalanced parentheses")
            self._take()
            return value
        if token[0].isdigit():
            return _bounded(float(token))
        raise CalculatorError(f"unexpected {token!r}")
