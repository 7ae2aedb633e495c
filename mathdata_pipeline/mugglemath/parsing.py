"""MuggleMath's question parser: the new questions in an LLM reply to a rewrite prompt
(`prompts`), robust to preambles, bold numbers, added answers and truncation."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mathdata_pipeline.common.text import normalize_text
from mathdata_pipeline.grading import TRUNCATED_FINISH_REASONS

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
_QUOTES = '"\u201c\u201d'
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


def parse_numbered_questions(
    text: str, *, expected: int | None = None, finish_reason: str | None = None
) -> ParsedQuestions:
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
            segment = "\n".join([lines[index][match.end() :], *lines[index + 1 : ends[position]]])
            if not _ANSWER_MARK.search(current) or _ASKS.search(segment):
                chain.append(position)
        starts = [starts[position] for position in chain]
    bounds = [index for index, _ in starts[1:]] + [len(lines)]
    return [
        "\n".join([lines[start][match.end() :], *lines[start + 1 : end]]) for (start, match), end in zip(starts, bounds)
    ]


def _strip_preamble(text: str) -> str:
    """`text` without leading `Sure!`, `Here is a new question:` or `New problem:` lines."""
    for _ in range(3):
        match = _PREAMBLE.match(text)
        if match is None or match.end() == len(text):
            break
        text = text[match.end() :]
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


# AugMATH replies: `Question1: ...` then `Solution1: ...` ending in `##end1`.
_PAIR_QUESTION = re.compile(
    r"^[ \t>#*_]*(?:question|problem)[ \t]*(?P<n>\d{1,2})[ \t]*[*_]*[ \t]*[:.][*_]*[ \t]*", re.I | re.M
)
_PAIR_SOLUTION = re.compile(
    r"(?:^[ \t>#*_]*solution[ \t]*\d{0,2}[ \t]*[*_]*[ \t]*[:.]|\bsolution[ \t]*\d{1,2}[ \t]*[*_]*[ \t]*:)[*_]*[ \t]*",
    re.I | re.M,
)
_PAIR_END = re.compile(r"#{1,2}[ \t]*end[ \t]*\d{0,2}", re.I)


@dataclass(frozen=True)
class ParsedPairs:
    """Question–solution pairs parsed from one AugMATH reply.

    `pairs`: (question, solution) in reply order, stripped, no repeated questions; `failure`: None
    when at least one pair was found, else `"empty"`, `"no_pairs"` (no `QuestionN:` item with a
    `SolutionN:`) or `"truncated"` (the only pair was cut off by the token limit).
    """

    pairs: list[tuple[str, str]]
    failure: str | None = None


def parse_question_solution_pairs(
    text: str, *, expected: int | None = None, finish_reason: str | None = None
) -> ParsedPairs:
    """The (question, solution) pairs of an AugMATH reply (`prompts.augmath_messages`).

    An item starts at a line `QuestionN:` (also `**Question N:**`, `Problem N.`) and holds a line
    `SolutionN:` (the number may be missing); the question is the text between them, the solution
    the text after it up to `##endN` or the next item. Items without a solution, or whose question
    or solution is empty, are dropped. When `finish_reason` is a truncation reason the last item is
    dropped unless its `##end` marker was written. At most `expected` pairs are returned.
    """
    if not text or not text.strip():
        return ParsedPairs([], "empty")
    text = text.replace("\r\n", "\n")
    starts = list(_PAIR_QUESTION.finditer(text))
    bounds = [m.start() for m in starts[1:]] + [len(text)]
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    cut_off = False
    for index, (start, end) in enumerate(zip(starts, bounds)):
        item = text[start.end() : end]
        solution_mark = _PAIR_SOLUTION.search(item)
        if solution_mark is None:
            continue
        ended = _PAIR_END.search(item, solution_mark.end())
        if finish_reason in TRUNCATED_FINISH_REASONS and index == len(starts) - 1 and ended is None:
            cut_off = True
            continue
        question = item[: solution_mark.start()].strip().strip("*").strip()
        solution = item[solution_mark.end() : ended.start() if ended else len(item)].strip()
        if question and solution and normalize_text(question) not in seen:
            seen.add(normalize_text(question))
            pairs.append((question, solution))
    if expected is not None:
        pairs = pairs[:expected]
    if pairs:
        return ParsedPairs(pairs)
    return ParsedPairs([], "truncated" if cut_off else "no_pairs")
