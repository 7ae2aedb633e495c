"""Final-answer extraction from a response or worked solution, in priority order.

1. `boxed`: the last `\\boxed{}` / `\\fbox{}`; with `boxes="all"` (the default) several boxes at
   the end that together form the answer (`$t = \\boxed{1}$ or $t = \\boxed{2}$`) give
   `"1, 2"` (step `boxes`);
2. `hashes`: GSM8K `#### X`;
3. `marker`: an answer phrase ("the answer is", "Final Answer:", ...; see `markers.py`);
4. `math_span`: the last LaTeX math span (`$...$`, `\\(...\\)`, `\\[...\\]`; see `spans.py`);
5. `last_number`: the final number of the text (optional).

Also used by the data loaders to read reference answers, so every function is a linear scan
(no backtracking regex over the whole text) and never raises on odd input.
"""

from __future__ import annotations

import re
from typing import Literal

from .latex import match_brace
from .markers import after_hashes, find_answer_marker
from .normalize import strip_thousands
from .spans import last_math_span, looks_like_prose

BoxMode = Literal["all", "last"]
BOX_MODES: tuple[BoxMode, ...] = ("all", "last")
# Extraction steps, in priority order (the names used in verdict reasons).
STEPS = ("boxed", "boxes", "hashes", "marker", "math_span", "last_number")

_BOX_COMMANDS = ("\\boxed", "\\fbox")
# How many `\boxed` occurrences, from the last one backwards, are examined (at most this many
# unclosed ones, each of which costs a scan to the end of the text).
_MAX_BOX_ATTEMPTS = 16
_MAX_UNCLOSED_BOXES = 6
_ANSWER_MAX_CHARS = 300
# What may stand between two boxes that together form one answer: spaces, punctuation other than a
# full stop, math delimiters, `\quad`, "and"/"or" (plain or in `\text{}`), a short `x =` or `x_1 =`.
_BOX_CONNECTOR = re.compile(
    r"(?:\s|[,;&$~]|\\[()\[\],;:! ]|\\q?quad(?![a-zA-Z])|\\\\"
    r"|\\(?:text|mathrm|textnormal)\s*\{\s*(?:and|or|,)?\s*\}"
    r"|(?<![A-Za-z])(?:and|or)(?![A-Za-z])|[A-Za-z](?:_\{?\w{1,3}\}?)?\s*=)*"
)
_MAX_CONNECTOR_CHARS = 80
_CALCULATOR = re.compile(r"<<[^<>\n]*>>")
_END_OF_TURN = ("<|im_end|>", "<|im_start|>", "<|endoftext|>", "<|eot_id|>")
# A number not glued to a word: `1,234.5` (thousands), `2,74` / `1000,99` (decimal comma: one or
# two digits after it, not inside a list or a pair), `12`, `3.5`, `3/4`, `.5`.
_NUMBER = re.compile(
    r"(?<![A-Za-z_\d.])-?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])"
    r"|(?<![(\[,])\d+,\d{1,2}(?![\d,)\]])"
    r"|\d+(?:\.\d+)?)(?:/\d+)?"
    r"|(?<![\w.])-?\.\d+"
)
_SENTENCE_END = re.compile(r"\.(?:\s+|$)")
_SPACED_NUMBER = re.compile(r"-?\d{1,3}(?: \d{3})+(?:[.,]\d+)?")
_STYLES = ("gsm8k", "boxed")


def last_boxed(text: str) -> str | None:
    """Content of the last closed, non-empty `\\boxed{...}` or `\\fbox{...}` in `text`, or None.

    Braces are matched properly, so `\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`; a box nested in
    another box gives the outer one's content. The unbraced form `\\boxed 5` gives the text up
    to the next `$` or whitespace. If the last box is empty or its brace never closes (a
    truncated response), earlier boxes are tried. At most 16 boxes (6 unclosed) are examined, so
    the cost stays linear in the length of the text.
    """
    boxes = _outer_boxes(text)
    return boxes[-1][2] if boxes else None


def final_boxes(text: str, boxes: list[tuple[int, int, str]] | None = None) -> list[str]:
    """Contents of the boxes at the end of `text` that together form its answer, in text order,
    duplicates removed; `[]` without a usable box.

    Walking back from the last usable box (as `last_boxed` finds it), an earlier box joins while
    only connectors stand between the two: spaces, `,` `;` `&`, math delimiters, `\\quad`,
    "and"/"or" (also in `\\text{}`) and short left-hand sides such as `x =` or `x_2 =`.
    `"$t = \\boxed{1}$ or $t = \\boxed{-2}$"` gives `["1", "-2"]`; `"first \\boxed{1}, then
    \\boxed{2}"` gives `["2"]`. `boxes`, if given, is `_outer_boxes(text)` already computed.
    """
    boxes = _outer_boxes(text) if boxes is None else boxes
    if not boxes:
        return []
    run = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        gap = text[box[1] + 1 : run[0][0]]
        if len(gap) > _MAX_CONNECTOR_CHARS or not _BOX_CONNECTOR.fullmatch(gap):
            break
        run.insert(0, box)
    return list(dict.fromkeys(content for _, _, content in run))


def _outer_boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of the last usable boxes of `text`, in text order, leaving out boxes
    nested inside another; empty and unclosed boxes are skipped."""
    found: list[tuple[int, int, str]] = []
    end = len(text)
    unclosed = 0
    for _ in range(_MAX_BOX_ATTEMPTS):
        start, command = max((text.rfind(name, 0, end), name) for name in _BOX_COMMANDS)
        if start < 0:
            break
        box = _box_content(text, start + len(command))
        end = start
        if box is None:
            unclosed += 1
            if unclosed >= _MAX_UNCLOSED_BOXES:
                break
            continue
        if box[1]:
            found.append((start, box[0], box[1]))
    found.sort()
    outer: list[tuple[int, int, str]] = []
    for box in found:
        if outer and box[0] < outer[-1][1]:
            continue  # inside the previous box
        outer.append(box)
    return outer


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


def _last_number(text: str) -> str | None:
    """The final number of `text` (thousands separators removed, a decimal comma kept).

    The whole text if it is one number grouped with spaces (`"1 000"`). Otherwise, in the last
    sentence of the last non-empty line that holds a number (else the whole text): the first
    number after its last `=` if it has one (`"... 120/24 = 5 hours to read 120 pages"` gives
    5), else its last number.
    """
    stripped = text.strip()
    if _SPACED_NUMBER.fullmatch(stripped):
        return stripped
    line = stripped.rsplit("\n", 1)[-1]
    sentence = next((part for part in reversed(_SENTENCE_END.split(line)) if _NUMBER.search(part)), text)
    match = None
    if "=" in sentence:
        match = _NUMBER.search(sentence, sentence.rfind("=") + 1)
    match = match or _last_match(_NUMBER, sentence)
    return strip_thousands(match.group(0)) if match is not None else None


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The last non-overlapping match of `pattern` in `text`, or None."""
    last = None
    for match in pattern.finditer(text):
        last = match
    return last


def _before_end_of_turn(text: str) -> str:
    """`text` up to the first chat end-of-turn token (the model went on with a new turn)."""
    cut = min((index for index in (text.find(token) for token in _END_OF_TURN) if index >= 0), default=len(text))
    return text[:cut]


def extract_with_step(
    text: str, *, fallback_last_number: bool = True, boxes: BoxMode = "all"
) -> tuple[str | None, str | None]:
    """`(answer, step)`: the raw final answer of `text` and the name of the step that found it
    (one of `STEPS`), or `(None, None)`. See `extract_answer` for the rules."""
    if not text:
        return None, None
    if "<|" in text:
        text = _before_end_of_turn(text)
    if "<<" in text:
        text = _CALCULATOR.sub("", text)
    if "[asy]" in text:
        text = _without_diagrams(text)
    found = _outer_boxes(text)
    if found:
        later = _final_answer_after(text, found[-1][1] + 1)
        if later is not None:
            return later, "marker"
        contents = final_boxes(text, found) if boxes == "all" else [found[-1][2]]
        return ", ".join(contents), "boxes" if len(contents) > 1 else "boxed"
    hashes = after_hashes(text)
    if hashes:
        return hashes, "hashes"
    marker = find_answer_marker(text)
    if marker is not None:
        return marker[0], "marker"
    span = last_math_span(text)
    if span is not None and not (fallback_last_number and _NUMBER.search(text, span[1])):
        return span[0], "math_span"
    formula = _one_line_formula(text) if span is None else None
    if formula is not None:
        return formula, "math_span"
    if fallback_last_number:
        answer = _last_number(text if span is None else text[span[1] :])
        if answer:
            return answer, "last_number"
    return None, None


def _without_diagrams(text: str) -> str:
    """`text` without its Asymptote diagrams (`[asy] ... [/asy]`; an unclosed one runs to the end)."""
    out, position = [], 0
    while (start := text.find("[asy]", position)) >= 0:
        out.append(text[position:start])
        end = text.find("[/asy]", start)
        if end < 0:
            return "".join(out)
        position = end + len("[/asy]")
    out.append(text[position:])
    return "".join(out)


def _final_answer_after(text: str, start: int) -> str | None:
    """The value of a "final answer" phrase in `text[start:]` (after the last box), or None."""
    tail = text[start:]
    if "nswer" not in tail.lower():
        return None
    marker = find_answer_marker(tail)
    return marker[0] if marker is not None and marker[2] else None


def _one_line_formula(text: str) -> str | None:
    """The whole text when it is one line of LaTeX without delimiters (`-\\frac{10}{9}`): it holds
    a command and does not read as prose."""
    stripped = text.strip()
    if "\\" not in stripped or "\n" in stripped or len(stripped) > _ANSWER_MAX_CHARS or looks_like_prose(stripped):
        return None
    return stripped


def extract_answer(text: str, *, fallback_last_number: bool = True, boxes: BoxMode = "all") -> str | None:
    """Final answer of a model response or worked solution, as raw text (not normalized).

    Inputs: `text`, any string; `fallback_last_number` (keyword) enables the last rule below;
    `boxes`, `"all"` (several boxes that together form the answer are joined with ", ") or
    `"last"` (only the last box).
    Output: the first of these that finds something, else None:
    1. the last `\\boxed{...}` / `\\fbox{...}` / `\\boxed 5` (nested braces matched), or with
       `boxes="all"` the run of boxes at the end separated only by connectors (",", "and", "or",
       `\\quad`, math delimiters, `x =`), distinct contents joined with ", ";
    2. the rest of the line after the last GSM8K `####`;
    3. the value after the last answer phrase ("the answer is", "Final Answer:", ...): a formula
       if one follows, else the end of the sentence; a "final answer" phrase after the last
       box wins over the boxes (boxed intermediate results, then "Final Answer: ... $X$");
    4. the content of the last LaTeX math span, unless it reads as prose or (with
       `fallback_last_number`) a number follows it in the text (then rule 5 reads only the text
       after the span); or, without spans, the whole text when it is one line of LaTeX without
       delimiters (`-\\frac{10}{9}`);
    5. if `fallback_last_number`, the final number: the whole text when it is one number written
       with spaces (`"1 000"`), else the first number after the last `=` of the last line if it
       has one, else the last number (`"... so 1,234 apples"` gives `"1234"`; `"2,74"` keeps
       its decimal comma).
    GSM8K calculator annotations (`<<48/2=24>>`) and Asymptote diagrams (`[asy]...[/asy]`) are
    removed and the text is cut at the first chat end-of-turn token (`<|im_end|>`,
    `<|im_start|>`, ...) before any rule runs.
    """
    return extract_with_step(text, fallback_last_number=fallback_last_number, boxes=boxes)[0]


def reference_answer_from_solution(solution: str, style: str) -> str | None:
    """Reference final answer stored in a dataset's worked solution, or None if absent.

    Inputs: `solution`, the dataset's solution text; `style`, `"gsm8k"` (the text after the last
    `####`, with thousands separators removed: `"#### 1,080"` gives `"1080"`) or `"boxed"` (the
    content of the last `\\boxed{}`/`\\fbox{}`, as in MATH; when several boxes at the end form the
    answer, as in `$t = \\boxed{1}$ or $t = \\boxed{2}$`, all of them joined: `"1, 2"`). Raises
    ValueError for another style.
    """
    if style == "gsm8k":
        answer = after_hashes(solution)
        return strip_thousands(answer) if answer else None
    if style == "boxed":
        return ", ".join(final_boxes(solution)) or None
    raise ValueError(f"unknown reference style {style!r}; expected one of {_STYLES}")
