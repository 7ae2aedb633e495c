"""MuggleMath building blocks: parse rewritten questions, deduplicate them, filter responses.

Plain functions (no Dagster import), used by the MuggleMath stage:

- `parse_numbered_questions`: the new questions in an LLM reply to a rewrite prompt
  (`mugglemath_prompts`), robust to preambles, bold numbers, added answers and truncation.
- `dedup_questions`: drop new questions equal or near-equal (word 5-gram Jaccard) to a seed or
  to an earlier new question.
- `check_calculator_annotations`: verify every GSM8K `<<expr=result>>` with a small arithmetic
  parser (never `eval`).
- `equation_sequence` / `dedup_by_equations`: RFT-style dedup of responses that take the same
  calculation steps.
- `majority_answer`: self-consistency vote for augmented questions without a gold answer.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mathdata_pipeline.methods.grading import TRUNCATED_FINISH_REASONS, normalize_answer
from mathdata_pipeline.methods.grading.numeric import parse_number
from mathdata_pipeline.methods.text import normalize_text, words

# --------------------------------------------------------------------------- question parser

# A list item's first line: `1.`, `1)`, `(1)`, `**1.**`, `### 1.`, `Question 1:`, `**Q1.**`.
_ITEM_START = re.compile(
    r"^[ \t]{0,3}(?:#{1,3}[ \t]*)?(?:[*_]{1,2}[ \t]*)?"
    r"(?:(?:new[ \t]+|rewritten[ \t]+)?(?:question|problem|q)[ \t]*#?[ \t]*(?P<named>\d{1,2})"
    r"[ \t]*[.:)]?|\(?(?P<plain>\d{1,2})[.)])"
    r"(?:[ \t]*[*_]{1,2})?(?=\s|$)[ \t]*(?:[:\-\u2013\u2014][ \t]*)?",
    re.IGNORECASE,
)
# Where an answer or solution the model added begins: a line `Answer: ...` / `**Solution:**` /
# `#### 72` / `A: ...`, or `Answer:` after a sentence end or inside `(`.
_ANSWER_MARK = re.compile(
    r"(?:^[ \t>*_-]*|(?<=[.?!:])[ \t]+|\([ \t]*)[*_]*"
    r"(?:final[ \t]+answer|answer|solution|explanation)[*_]*[ \t]*[:=]"
    r"|^[ \t]*(?:####|A[ \t]*:|(?:the[ \t]+)?(?:final[ \t]+)?answer[ \t]+is\b)",
    re.IGNORECASE | re.MULTILINE,
)
# A label before the question: `**Changed numbers**:`, `**Fractions:**`, `Question:`.
_LABEL = re.compile(
    r"^(?:[*_]{2}[^*_\n]{1,60}?(?::[*_]{2}|[*_]{2}[ \t]*:)"
    r"|(?:new[ \t]+|rewritten[ \t]+)?(?:question|problem)[ \t]*[:\-\u2013\u2014])[ \t]*",
    re.IGNORECASE,
)
_RULE_LINE = re.compile(r"^[ \t]*(?:-{3,}|\*{3,}|_{3,})[ \t]*$", re.MULTILINE)
_CHATTER = re.compile(
    r"^[ \t]*(?:I hope|Hope (?:this|these)|Let me know|Feel free|These (?:questions|problems)"
    r"|Each of these|All of these|Note:|Good luck|Enjoy|I've|I have|Would you like"
    r"|If you (?:need|want|would))",
    re.IGNORECASE,
)
_PREAMBLE = re.compile(
    r"^\s*(?:(?:Sure|Certainly|Of course|Okay|OK)\b[!.,]?\s*"
    r"|Here(?: is|'s| are)\b[^:\n]{0,100}:\s*"
    r"|[^\n]{0,100}\b(?:questions?|problems?|versions?|variations?)\b[^\n]{0,40}:[ \t]*\n)",
    re.IGNORECASE,
)
_QUOTES = "\"\u201c\u201d"
# A question asks something: a `?`, or a capitalized imperative (`Find`, `Compute`, ...).
_ASKS = re.compile(
    r"\?|\b(?:Find|Compute|Calculate|Determine|Evaluate|Simplify|Solve|Express|Show|Prove|Give"
    r"|List|Write|Estimate|Convert|Factor|Expand)\b"
)


@dataclass(frozen=True)
class ParsedQuestions:
    """Questions parsed from one reply.

    `questions`: the usable new questions in reply order, stripped, without duplicates.
    `failure`: None when at least one question was found, else why none was: `"empty"` (blank
    reply), `"no_numbered_items"` (no list and no single question), `"no_questions"` (list
    items, but none holds a question once answers and labels are removed) or `"truncated"`
    (the only item was cut off by the token limit).
    """

    questions: list[str]
    failure: str | None = None


def parse_numbered_questions(text: str, *, expected: int | None = None,
                             finish_reason: str | None = None) -> ParsedQuestions:
    """New questions from an LLM reply to a rewrite prompt.

    Inputs: `text`, the raw reply; `expected`, how many questions were asked for (extra items
    after the first `expected` are dropped; fewer is not a failure, compare
    `len(questions)`); `finish_reason` of the generation: when it is a truncation reason
    (`"length"`, `"abort"`), the last item is incomplete and dropped.
    Output: `ParsedQuestions(questions, failure)`.

    Items start with `1.`, `1)`, `(1)`, `**1.**`, `Question 1:` or `Q1.`; numbers must count
    up by one from the first item, unless every item carries the same number (`1. 1. 1.`).
    A numbered line that does not continue the count, or that follows an answer marker and
    asks nothing, belongs to the current item (so numbered solution steps start no items).
    Text before the first item (preamble) is ignored. Each item keeps its
    following lines (multi-line questions), then loses: an added answer (`Answer: ...`,
    `Solution:`, `#### 72`, from the marker on), everything after a `---` rule, trailing
    chatter lines (`I hope these help!`), a leading label (`**Changed numbers**:`,
    `Question:`) and bold around the whole question. Items that are then empty or ask nothing
    (no `?` and no imperative such as `Find`/`Compute`) are dropped, as are repeats
    (normalized text). A reply without a list is taken as one question if, after a preamble
    such as `Sure! Here is a new question:` and the same cleaning, it is one paragraph (no
    blank line) that asks something.
    """
    if not text or not text.strip():
        return ParsedQuestions([], "empty")
    text = text.replace("\r\n", "\n")
    truncated = finish_reason in TRUNCATED_FINISH_REASONS
    items = _split_items(text)
    if items is None:
        if truncated:
            return ParsedQuestions([], "truncated")
        single = _clean_item(_strip_preamble(text))
        if single is None or "\n\n" in single:
            return ParsedQuestions([], "no_numbered_items")
        return ParsedQuestions([single])
    if truncated:
        items = items[:-1]
        if not items:
            return ParsedQuestions([], "truncated")
    questions: list[str] = []
    seen: set[str] = set()
    for item in items:
        question = _clean_item(item)
        if question and normalize_text(question) not in seen:
            seen.add(normalize_text(question))
            questions.append(question)
    if expected is not None:
        questions = questions[:expected]
    return ParsedQuestions(questions, None if questions else "no_questions")


def _split_items(text: str) -> list[str] | None:
    """Raw text of each list item (first line without its number, plus continuation lines)."""
    lines = text.split("\n")
    starts = [(i, match) for i, line in enumerate(lines) if (match := _ITEM_START.match(line))]
    if not starts:
        return None
    numbers = [int(match.group("named") or match.group("plain")) for _, match in starts]
    if len(set(numbers)) > 1:
        # Keep the numbers that count up by one. After an answer marker in the current item,
        # the next number must also ask something, so numbered solution steps stay inside.
        ends = [index for index, _ in starts[1:]] + [len(lines)]
        chain = [0]
        for position in range(1, len(starts)):
            index, match = starts[position]
            if numbers[position] != numbers[chain[-1]] + 1:
                continue
            current = "\n".join(lines[starts[chain[-1]][0] : index])
            segment = "\n".join([lines[index][match.end():], *lines[index + 1 : ends[position]]])
            if not _ANSWER_MARK.search(current) or _ASKS.search(segment):
                chain.append(position)
        starts = [starts[position] for position in chain]
    bounds = [index for index, _ in starts[1:]] + [len(lines)]
    return [
        "\n".join([lines[start][match.end():], *lines[start + 1 : end]])
        for (start, match), end in zip(starts, bounds)
    ]


def _strip_preamble(text: str) -> str:
    """`text` without leading `Sure!`, `Here is a new question:` or `New problem:` lines."""
    for _ in range(3):
        match = _PREAMBLE.match(text)
        if match is None or match.end() == len(text):
            break
        text = text[match.end():]
    return text


def _clean_item(item: str) -> str | None:
    """The question in one item's raw text, or None when nothing question-like is left."""
    rule = _RULE_LINE.search(item)
    if rule is not None:
        item = item[: rule.start()]
    answer = _ANSWER_MARK.search(item)
    if answer is not None:
        item = item[: answer.start()]
    lines = [line.rstrip() for line in item.strip().split("\n")]
    while lines and (not lines[-1] or _CHATTER.match(lines[-1])):
        lines.pop()
    question = _LABEL.sub("", "\n".join(lines).strip(), count=1).strip()
    if len(question) > 4 and question.startswith("**") and question.endswith("**"):
        question = question[2:-2].strip()
    if len(question) > 2 and question[0] in _QUOTES and question[-1] in _QUOTES:
        question = question[1:-1].strip()
    return question if _ASKS.search(question) else None


# ------------------------------------------------------------------------ question dedup


def dedup_questions(candidates: Sequence[str], existing: Iterable[str] = (), *,
                    threshold: float = 0.9, n: int = 5) -> tuple[list[int], list[tuple[int, str]]]:
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


# -------------------------------------------------------------- calculator annotations

_ANNOTATION = re.compile(r"<<([^<>]*)>>")
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


class _CalcError(Exception):
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
    matches = list(_ANNOTATION.finditer(text))
    for match in matches:
        reason = _annotation_failure(match.group(1), rel_tol)
        if reason is not None:
            failures.append(f"{_shorten(match.group(0))}: {reason}")
    leftover = _ANNOTATION.sub("", text)
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
    except _CalcError as error:
        return str(error)
    if math.isclose(value, claimed, rel_tol=rel_tol, abs_tol=_ABS_TOL):
        return None
    return f"{expression.strip()} = {value:.10g}, not {result.strip()}"


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tokenize(expression: str) -> list[str]:
    """Canonical tokens: numbers without commas or needless zeros, operators unaliased."""
    tokens: list[str] = []
    position = 0
    expression = expression.rstrip()
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if match is None:
            offender = expression[position:].lstrip()[:1]
            raise _CalcError(f"unexpected character {offender!r}")
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
    tokens = _tokenize(expression)
    if not tokens:
        raise _CalcError("empty expression")
    return _Evaluator(tokens).run()


def _bounded(value: float) -> float:
    if not math.isfinite(value) or abs(value) > _MAX_MAGNITUDE:
        raise _CalcError("value too large")
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
            raise _CalcError(f"unexpected {self.tokens[self.position]!r}")
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise _CalcError("incomplete expression")
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
                raise _CalcError("division by zero")
            value = _bounded(value * right if operator == "*" else value / right)
        return value

    def _signed(self) -> float:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _CalcError("expression nested too deeply")
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
            raise _CalcError("value too large") from None
        except (ValueError, ZeroDivisionError):
            raise _CalcError(f"cannot compute {base:g}^{exponent:g}") from None
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
                raise _CalcError("unbalanced parentheses")
            self._take()
            return value
        if token[0].isdigit():
            return _bounded(float(token))
        raise _CalcError(f"unexpected {token!r}")


# ---------------------------------------------------------------------- equation sequence

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
    annotations = _ANNOTATION.findall(text)
    if annotations:
        return tuple(_canonical_equation(body) for body in annotations)
    steps = []
    for match in _TEXT_EQUATION.finditer(text):
        try:
            lhs = _tokenize(match.group("lhs"))
        except _CalcError:
            continue
        if _OPERATORS.intersection(lhs[1:]):
            steps.append("".join(lhs) + "=" + "".join(_tokenize(match.group("rhs"))))
    return tuple(steps)


def _canonical_equation(body: str) -> str:
    """`48 / 2 = 24.0` -> `48/2=24`; bodies that do not tokenize lose only their spaces."""
    try:
        return "=".join("".join(_tokenize(side)) for side in body.split("="))
    except _CalcError:
        return "".join(body.split())


def dedup_by_equations(responses: Sequence[str]) -> list[int]:
    """Indices of the responses to keep: the first of each distinct equation sequence.

    Input: the (already filtered) responses to ONE question. Output: kept indices in order.
    Two responses are duplicates when `equation_sequence` gives the same steps in the same
    order (as in RFT's `collect_rejection_sampling.py`). Responses without any equation are
    compared by `normalize_text` instead, so different prose answers are all kept.
    """
    seen: set[tuple[str, ...]] = set()
    kept: list[int] = []
    for index, response in enumerate(responses):
        key = equation_sequence(response) or ("\x00text", normalize_text(response))
        if key not in seen:
            seen.add(key)
            kept.append(index)
    return kept


# ---------------------------------------------------------------------------- majority vote


@dataclass(frozen=True)
class Vote:
    """Outcome of a majority vote.

    `answer`: the winning answer (its `normalize_answer` form, as first seen) or None when no
    answer wins; `agreement`: votes for the most common answer / all answers, None included
    (0.0 for no answers); `votes`: how many answers agree with the most common answer.
    """

    answer: str | None
    agreement: float
    votes: int


def majority_answer(answers: Sequence[str | None], *, min_agreement: float = 0.5) -> Vote:
    """Self-consistency vote over the final answers sampled for one question.

    Inputs: `answers`, one extracted answer per sampled response (None or blank when nothing
    was extracted; these count in the denominator); `min_agreement`, the smallest share of
    all answers the winner needs. Output: `Vote(answer, agreement, votes)`.

    Answers are grouped by `normalize_answer`, and answers that parse as the same number are
    one group (`18`, `18.0`, `$18` and `\\frac{36}{2}`). `answer` is None when the largest
    group is tied with another, or when `agreement < min_agreement`.
    """
    counts: dict[object, int] = {}
    spelling: dict[object, str] = {}
    for answer in answers:
        normalized = normalize_answer(answer) if answer and answer.strip() else ""
        if not normalized:
            continue
        key = _vote_key(normalized)
        counts[key] = counts.get(key, 0) + 1
        spelling.setdefault(key, normalized)
    if not counts:
        return Vote(None, 0.0, 0)
    top = max(counts, key=counts.__getitem__)
    votes = counts[top]
    agreement = votes / len(answers)
    tied = sum(count == votes for count in counts.values()) > 1
    winner = None if tied or agreement < min_agreement else spelling[top]
    return Vote(winner, agreement, votes)


def _vote_key(normalized: str) -> object:
    """Group key: the number for numeric answers (12 significant digits), else the string."""
    value = parse_number(normalized)
    if value is None:
        return normalized
    if isinstance(value, int) or (value.is_integer() and abs(value) < 2**53):
        return ("number", int(value))
    return ("number", float(f"{value:.12g}"))
