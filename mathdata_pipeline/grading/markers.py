"""Answers announced in words: GSM8K `#### X` and answer phrases ("the answer is", "Final Answer:",
"**Final Answer**", a line starting with "Answer" and a formula, ...).

Every function is a linear scan or a regex without nested quantifiers, and returns None rather than
raising on odd input.
"""

from __future__ import annotations

import re

from .spans import last_math_span, leading_math_span, looks_like_prose

_ANSWER_MAX_CHARS = 300
# "the answer is", "final answer:", "answers are", "the answer would be", "answer =", ...
_PHRASE = (
    r"(?<![\w/])(?:(?:the\s+)?final\s+answers?|(?:the\s+)?(?:correct\s+)?answers?)"
    r"(?:\s*\*\*)?\s*(?:is\b|are\b|=|:|would\s+be\b|should\s+be\b|will\s+be\b)"
)
# "**Final Answer**" or "Final Answer" alone before a line break or a formula.
_HEADING = r"(?<![\w/])final\s+answers?\s*(?:\*\*)?\s*(?=\n|\$|\\\[|\\\(|\\boxed)"
# "Answer $9$", "**Answer:** \[ 9 \]" at the start of a line.
_LINE_START = r"(?:^|(?<=\n))[ \t#*]*answers?\b(?:\s*\*\*)?(?=\s*(?:\$|\\\[|\\\())"
_MARKER = re.compile(rf"(?:{_PHRASE}|{_HEADING}|{_LINE_START})[ \t:*]*\n?[ \t]*", re.IGNORECASE)
_ANSWER_WORD = re.compile(r"answer", re.IGNORECASE)
# How far a marker reaches on either side of its word "answer" ("the final answer", "answer  **:").
_MARKER_REACH = 24
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n")
# "The largest $n$ is 34" -> "34"
_SUBJECT_IS = re.compile(r"^the\b.*\s(?:is|are|equals)\s+", re.IGNORECASE)
_QUOTES = re.compile(r'^\\?"|\\?"$')
_FORMULA_CONNECTOR = re.compile(r"\s*(?:,\s*(?:and\s+|or\s+)?|and\s+|or\s+)(?=\$|\\\(|\\\[)")
_MAX_FORMULAS = 16
# Words between a marker and its value: "the answer is therefore 3", "is simply $5$".
_FILLER = re.compile(
    r"^(?:(?:therefore|thus|hence|then|so|simply|just|clearly|exactly|indeed)\b[\s,]*)+", re.IGNORECASE
)
_PLAIN_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*")


def after_hashes(text: str) -> str | None:
    """GSM8K style: the rest of the line after the last `####`, stripped, or None. A line that
    starts with a letter is a Markdown heading (`#### Answer`, `#### Step 2`), not an answer."""
    start = text.rfind("####")
    if start < 0:
        return None
    line = text[start + 4 :].split("\n", 1)[0].strip()
    return line if line and not line[0].isalpha() else None


def answer_after_marker(text: str) -> str | None:
    """The value announced by the last answer phrase of `text`, or None.

    Phrases: "the answer is/are/=/:", "final answer is", "the answer would/should/will be",
    "**Final Answer**" before a line break or formula, and a line starting with "Answer" followed by
    a formula. The value is the formula that follows (`$...$`, `\\(...\\)`, `\\[...\\]`, possibly
    on the next line; several joined by "and" / "," give them all) or else the text up to the end
    of the sentence. A sentence such as "The largest $n$ is 34" gives what follows its last "is";
    filler words ("therefore 3") are dropped; in a sentence with `=`, words and digits (`15 gallons *
    8 pints / gallon = 120 pints`) the first number after the last `=` is the value; prose that
    still remains gives its last formula, else its last number.
    """
    found = find_answer_marker(text)
    return found[0] if found is not None else None


def find_answer_marker(text: str) -> tuple[str, int, bool] | None:
    """`(value, start, final)` for the last answer phrase of `text` that announces a value (see
    `answer_after_marker`): `start` is where the phrase begins and `final` whether it says "final
    answer". None without such a phrase."""
    last = _last_marker(text)
    if last is None:
        return None
    rest = _FILLER.sub("", _QUOTES.sub("", text[last.end() : last.end() + _ANSWER_MAX_CHARS].lstrip()))
    value = _leading_formulas(rest)
    if value is None:
        end = _SENTENCE_END.search(rest)
        sentence = (rest[: end.start()] if end else rest).replace("**", "").strip().rstrip(".,;:!")
        value = _value_of_sentence(_QUOTES.sub("", sentence).strip()) if sentence else None
    if value is None:
        return None
    return value, last.start(), "final" in last.group(0).lower()


def _last_marker(text: str) -> re.Match[str] | None:
    """The last match of `_MARKER` in `text`, searched only around occurrences of "answer" (from
    the last one back), so the cost is a fast scan for the word plus a few short matches."""
    for word in reversed(list(_ANSWER_WORD.finditer(text))):
        last = None
        for match in _MARKER.finditer(text, max(0, word.start() - _MARKER_REACH), word.end() + _MARKER_REACH):
            last = match
        if last is not None:
            return last
    return None


def _leading_formulas(rest: str) -> str | None:
    """The formula `rest` starts with, or several joined by "," / "and" / "or" (`$2$ and $5$`
    gives `"2, 5"`); None if `rest` does not start with a formula."""
    formulas = []
    while len(formulas) < _MAX_FORMULAS:
        found = leading_math_span(rest)
        if found is None:
            break
        formulas.append(found[0])
        connector = _FORMULA_CONNECTOR.match(rest, found[1])
        if connector is None:
            break
        rest = rest[connector.end() :]
    return ", ".join(formulas) or None


def _value_of_sentence(value: str) -> str | None:
    """The answer inside a sentence that follows a marker (see `answer_after_marker`)."""
    if not any(char.isalnum() for char in value):
        return None
    subject = _SUBJECT_IS.match(value)
    if subject is not None:
        value = value[subject.end() :].strip()
    value = _FILLER.sub("", value)
    if "=" in value and "$" not in value and _PLAIN_WORD.search(value) and any(char.isdigit() for char in value):
        # GSM8K style: `15 gallons * 8 pints / gallon = 120 pints` -> 120
        numbers = _NUMBER.findall(value[value.rfind("=") + 1 :])
        if numbers:
            return numbers[0]
    if not looks_like_prose(value):
        return value or None
    formula = last_math_span(value)
    if formula is not None:
        return formula[0]
    numbers = _NUMBER.findall(value)
    return numbers[-1] if numbers else None
