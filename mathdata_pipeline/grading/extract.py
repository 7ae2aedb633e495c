"""Final-answer extraction from solution text: `\\boxed{}`, GSM8K `####`, answer phrases, numbers.

Also used by the data loaders to read reference answers, so every function is a linear scan
(no backtracking regex over the whole text) and never raises on odd input.
"""

from __future__ import annotations

import re

from .latex import match_brace
from .normalize import strip_thousands

_BOX_COMMANDS = ("\\boxed", "\\fbox")
# How many `\boxed` occurrences, from the last one backwards, are tried before giving up.
_MAX_BOX_ATTEMPTS = 8
_ANSWER_PHRASE = re.compile(
    r"(?<![\w/])(?:final answer|the answer|answer)\s*(?:is\b|=|:)\s*:?\s*(?:\*\*)?\s*",
    re.IGNORECASE,
)
_ANSWER_MAX_CHARS = 300
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n")
_CALCULATOR = re.compile(r"<<[^<>\n]*>>")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_STYLES = ("gsm8k", "boxed")


def last_boxed(text: str) -> str | None:
    """Content of the last closed, non-empty `\\boxed{...}` or `\\fbox{...}` in `text`, or None.

    Braces are matched properly, so `\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`; a box nested in
    another box gives the outer one's content. The unbraced form `\\boxed 5` gives the text up
    to the next `$` or whitespace. If the last box is empty or its brace never closes (a
    truncated response), earlier boxes are tried. At most 8 boxes are examined, so the cost
    stays linear in the length of the text.
    """
    best: tuple[int, str] | None = None  # (end of the chosen box, its content)
    end = len(text)
    for _ in range(_MAX_BOX_ATTEMPTS):
        start, command = max((text.rfind(name, 0, end), name) for name in _BOX_COMMANDS)
        if start < 0:
            break
        box = _box_content(text, start + len(command))
        end = start
        if box is None or not box[1]:
            continue
        if best is None or box[0] > best[0]:
            best = box  # an earlier box that closes later encloses the chosen one
    return best[1] if best is not None else None


def _box_content(text: str, after: int) -> tuple[int, str] | None:
    """(end index, content) of a box command whose name ends at `after`; None if unusable."""
    if after < len(text) and text[after].isalpha():
        return None  # another command, e.g. `\boxedsomething`
    index = after
    while index < len(text) and text[index].isspace():
        index += 1
    if index < len(text) and text[index] == "{":
        close = match_brace(text, index)
        return (close, text[index + 1 : close].strip()) if close is not None else None
    if index == after:
        return None
    match = re.match(r"[^\s$]+", text[index : index + _ANSWER_MAX_CHARS])
    return (index + match.end(), match.group(0).rstrip(".,;")) if match else None


def _after_hashes(text: str) -> str | None:
    """GSM8K style: the rest of the line after the last `####`, or None."""
    start = text.rfind("####")
    if start < 0:
        return None
    line = text[start + 4 :].split("\n", 1)[0].strip()
    return line or None


def _answer_phrase(text: str) -> str | None:
    """The value after the last "answer is" / "answer:" phrase, up to the end of its sentence."""
    last = _last_match(_ANSWER_PHRASE, text)
    if last is None:
        return None
    rest = text[last.end() : last.end() + _ANSWER_MAX_CHARS]
    for opener, closer in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if rest.startswith(opener):
            close = rest.find(closer, len(opener))
            if close > len(opener):
                return rest[len(opener) : close].strip() or None
    end = _SENTENCE_END.search(rest)
    value = rest[: end.start()] if end else rest
    value = value.replace("**", "").strip().rstrip(".,;:!")
    return value or None


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The last non-overlapping match of `pattern` in `text`, or None."""
    last = None
    for match in pattern.finditer(text):
        last = match
    return last


def _last_number(text: str) -> str | None:
    """The final number of `text`, commas removed.

    If the last non-empty line has an `=`, the first number after its last `=` (`"... 120/24 = 5
    hours to read 120 pages"` gives 5); otherwise the last number of that line, or of the text.
    """
    line = text.rstrip().rsplit("\n", 1)[-1]
    match = None
    if "=" in line:
        match = _NUMBER.search(line, line.rfind("=") + 1)
    match = match or _last_match(_NUMBER, line) or _last_match(_NUMBER, text)
    return match.group(0).replace(",", "") if match is not None else None


def extract_answer(text: str, *, fallback_last_number: bool = True) -> str | None:
    """Final answer of a model response or worked solution, as raw text (not normalized).

    Inputs: `text`, any string; `fallback_last_number` (keyword) enables the last rule below.
    Output: the first of these that finds something, else None:
    1. the last `\\boxed{...}` / `\\fbox{...}` / `\\boxed 5` (nested braces matched);
    2. the rest of the line after the last GSM8K `####`;
    3. the value after the last "the answer is", "final answer:", "answer =" ... phrase: a
       `$...$` / `\\(...\\)` group if one follows, else the text up to the end of the sentence;
    4. if `fallback_last_number`, the final number: the first number after the last `=` of the
       last line if it has one, else the last number (`"... so 1,234 apples"` gives `"1234"`).
    GSM8K calculator annotations (`<<48/2=24>>`) are removed before any rule runs.
    """
    if not text:
        return None
    if "<<" in text:
        text = _CALCULATOR.sub("", text)
    for rule in (last_boxed, _after_hashes, _answer_phrase):
        answer = rule(text)
        if answer:
            return answer
    return _last_number(text) if fallback_last_number else None


def reference_answer_from_solution(solution: str, style: str) -> str | None:
    """Reference final answer stored in a dataset's worked solution, or None if absent.

    Inputs: `solution`, the dataset's solution text; `style`, `"gsm8k"` (the text after the last
    `####`, with thousands separators removed: `"#### 1,080"` gives `"1080"`) or `"boxed"` (the
    content of the last `\\boxed{}`/`\\fbox{}`, as in MATH). Raises ValueError for another style.
    """
    if style == "gsm8k":
        answer = _after_hashes(solution)
        return strip_thousands(answer) if answer else None
    if style == "boxed":
        return last_boxed(solution)
    raise ValueError(f"unknown reference style {style!r}; expected one of {_STYLES}")
