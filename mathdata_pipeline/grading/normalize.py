"""Canonical string form of a final answer, so that equal answers compare equal as strings.

Two stages:

- `clean_answer` removes presentation that never changes the value (math delimiters, sizing
  commands, thin spaces, units, degree signs, thousands separators, `x =` prefixes, ...) and
  keeps valid LaTeX. Its output is what the symbolic checker parses.
- `normalize_answer` goes further for string comparison: spaces are dropped, fractions and
  square roots get explicit braces, decimals get a canonical spelling (`0.50` and `.5` both
  become `0.5`) and answers made only of words are lower-cased.

Every step is a linear scan or a regex anchored on a short tail, so 100,000-character or
deeply nested inputs cost milliseconds.
"""

from __future__ import annotations

import re
import unicodedata

from .latex import strip_outer_braces, unwrap_command

# Commands whose argument is the value itself (`\text{(A)}` means `(A)`).
_WRAPPERS = (
    "\\boxed",
    "\\fbox",
    "\\textbf",
    "\\mathbf",
    "\\textrm",
    "\\mathrm",
    "\\textnormal",
    "\\mbox",
    "\\text",
    "\\operatorname",
)
# A LaTeX line break `\\` is matched first so that `1 \\ 2` keeps it (it is not `\ `).
_SPACING = re.compile(
    r"(\\\\)|\\[,;:! ]|\\quad(?![a-zA-Z])|\\qquad|\\displaystyle|\\left(?![a-zA-Z])"
    r"|\\right(?![a-zA-Z])|~"
)
_DEGREES = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree")
_PERCENT = re.compile(r"\\?%")
_APPROX = re.compile(r"^(?:\\approx|≈)\s*")
_CURRENCY = re.compile(r"\\\$|[$€£¥₹]|\\euro(?![a-zA-Z])|\\pounds(?![a-zA-Z])")

_UNIT_WORDS = (
    "dollars",
    "dollar",
    "cents",
    "cent",
    "euros",
    "euro",
    "pounds",
    "pound",
    "rupees",
    "yen",
    "percent",
    "percentage",
    "pct",
    "degrees",
    "degree",
    "radians",
    "units",
    "unit",
    "square",
    "sq",
    "cubic",
    "meters",
    "meter",
    "metres",
    "cm",
    "mm",
    "km",
    "kilometers",
    "kilometres",
    "inches",
    "inch",
    "feet",
    "foot",
    "ft",
    "yards",
    "yard",
    "yd",
    "miles",
    "mile",
    "mi",
    "mph",
    "kmh",
    "km/h",
    "m/s",
    "seconds",
    "second",
    "sec",
    "minutes",
    "minute",
    "min",
    "hours",
    "hour",
    "hrs",
    "hr",
    "days",
    "day",
    "weeks",
    "week",
    "months",
    "month",
    "years",
    "year",
    "grams",
    "gram",
    "kg",
    "kilograms",
    "mg",
    "lbs",
    "lb",
    "ounces",
    "ounce",
    "oz",
    "liters",
    "liter",
    "litres",
    "ml",
    "gallons",
    "gallon",
    "cups",
    "cup",
    "people",
    "persons",
    "students",
    "ways",
    "points",
    "digits",
    "times",
    "pieces",
    "items",
    "apples",
    "cookies",
    "marbles",
    "boxes",
    "books",
    "pages",
    "teachers",
    "eggs",
)
# Units that are also common variable names (`2s`, `3m`) count only after a space: `5 m`.
_SHORT_UNITS = ("m", "s", "h", "g", "l", "in")
_UNIT_RE = "|".join(re.escape(word) for word in sorted(_UNIT_WORDS, key=len, reverse=True))
# One trailing unit after whitespace, a digit, `}` or `)`: `85 feet`, `5cm`, `2^{3} cm^2`, `5 m`.
_LAST_UNIT = re.compile(
    rf"(?:(?<=[\s\d}})])(?i:{_UNIT_RE})(?![a-zA-Z])(?:\^\{{?[23]\}}?)?"
    rf"|(?<=\s)(?:{'|'.join(_SHORT_UNITS)})(?![a-zA-Z^]))\.?\s*$"
)
_LAST_TEXT = re.compile(r"\\(?:text|mbox|textnormal|mathrm)\s*\{[^{}]*\}\s*$")
_UNIT_TAIL = 48
_TEXT_TAIL = 200

# `x =`, `a_n =`, `AB =`, `f(3) =`, `\theta =`, `\angle ABC =`: a left side without operators
# that does not start with a digit (so the equation `2x = 6` is kept).
_ASSIGNMENT = re.compile(
    r"^\s*(?:\\(?:alpha|beta|gamma|delta|theta|phi|lambda|mu|omega|angle|overline|triangle)"
    r"(?![a-zA-Z])|[a-zA-Z])[^=+\-*/^<>!]{0,30}?\s*=\s*(?=\S)"
)
_THOUSANDS = re.compile(r"[-+]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")
# `1{,}000`, `14 {, }916`, `11,\\! 111`: thousands separators written in LaTeX.
_LATEX_THOUSANDS = re.compile(r"(?<=\d)\s*(?:\{,\s*\}|,\\!)\s*(?=\d{3}(?!\d))")
# Spellings of relations, mapped to one each: `\lt` -> `<`, `>=` / `\ge` / `≥` -> `\geq`, ...
# `!=` only after a space or at the start: `3!=6` is a factorial.
_RELATIONS = re.compile(r"<=|>=|(?:(?<=\s)|^)!=|≤|≥|≠|\\(?:leq|le|geq|ge|neq|ne|lt|gt)(?![a-zA-Z])")
_RELATION_SPELLING = {
    "<=": "\\leq",
    "≤": "\\leq",
    "\\le": "\\leq",
    "\\leq": "\\leq",
    ">=": "\\geq",
    "≥": "\\geq",
    "\\ge": "\\geq",
    "\\geq": "\\geq",
    "!=": "\\neq",
    "≠": "\\neq",
    "\\ne": "\\neq",
    "\\neq": "\\neq",
    "\\lt": "<",
    "\\gt": ">",
}
_DECIMAL = re.compile(r"(?<![\d.])(\d*)\.(\d+)(?![\d.])")
_SIMPLE_SLASH = re.compile(r"(-?)(\d+)/(\d+)")
_LETTER_CHOICE = re.compile(r"\(?([A-Ea-e])\)?")
_WORDS_ONLY = re.compile(r"[A-Za-z][A-Za-z ,]*")
_SPACE_AFTER_COMMAND = re.compile(r"(\\[a-zA-Z]+) (?=[a-zA-Z])")
_FRAC_TWO_CHARS = re.compile(r"\\frac\s*([0-9a-zA-Z])\s*([0-9a-zA-Z])")
_FRAC_SECOND_CHAR = re.compile(r"\\frac\s*(\{[^{}]*\})\s*([0-9a-zA-Z])")
_FRAC_FIRST_CHAR = re.compile(r"\\frac\s*([0-9a-zA-Z])\s*\{")
_SQRT_CHAR = re.compile(r"\\sqrt\s*([0-9a-zA-Z])")
_SQRT_COMMAND = re.compile(r"\\sqrt\s*(\\[a-zA-Z]+)")
_TRAILING_PUNCT = ".,;:!?"


def strip_thousands(text: str) -> str:
    """Remove thousands separators when `text` is exactly one number written with them.

    `"1,000"` gives `"1000"` and `"-12,345.5"` gives `"-12345.5"`, while tuples and lists such as
    `"(1,2)"`, `"1,2"` or `"1, 000"`, and `"0,111"` (a decimal comma) are returned unchanged.
    """
    stripped = text.strip()
    if _THOUSANDS.fullmatch(stripped):
        return stripped.replace(",", "")
    return text


def _strip_delimiters(text: str) -> str:
    """Remove math-mode delimiters around the whole answer and any remaining bare `$`."""
    text = text.strip()
    for opener, closer in (("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(opener) and text.endswith(closer):
            text = text[len(opener) : len(text) - len(closer)].strip()
    return re.sub(r"(?<!\\)\$", "", text)


def _strip_units(text: str) -> str:
    """Drop trailing units (`\\text{ cm}` groups, then unit words) that follow a number.

    Only the tail of the string is searched, and only when what stays in front contains a
    digit, so `\\text{odd}` or `x` are never emptied.
    """
    text = _strip_tail(text, _LAST_TEXT, _TEXT_TAIL, rounds=3)
    return _strip_tail(text, _LAST_UNIT, _UNIT_TAIL, rounds=4).strip()


def _strip_tail(text: str, pattern: re.Pattern[str], window: int, *, rounds: int) -> str:
    """Cut `pattern` off the end of `text` up to `rounds` times, looking only at the last `window`
    characters, and only while the remaining head still contains a digit."""
    for _ in range(rounds):
        tail = text[-window:]
        match = pattern.search(tail)
        if match is None:
            break
        head = text[: len(text) - len(tail) + match.start()].rstrip()
        if not any(char.isdigit() for char in head):
            break
        text = head
    return text


def _strip_assignment(text: str) -> str:
    """`x = 5` -> `5`, `\\theta = \\pi` -> `\\pi`, `f(3) = 2` -> `2`.

    Text with several `=`, with an inequality, or whose left side holds an operator or starts
    with a digit (`2x - y = 0`, `2x = 6`) is an equation and is kept.
    """
    if text.count("=") != 1 or any(mark in text for mark in ("<", ">", "\\le", "\\ge", "\\ne")):
        return text
    match = _ASSIGNMENT.match(text)
    return text[match.end() :] if match is not None else text


def clean_answer(answer: str, *, keep_assignment: bool = False) -> str:
    """Answer with presentation-only markup removed; the result is still valid LaTeX.

    Input: an extracted answer such as `"$\\dfrac{1}{2}\\text{ cm}.$"`. Output: `"\\frac{1}{2}"`.
    Removes math delimiters (`$`, `\\(\\)`, `\\[\\]`), wrappers that hold the value
    (`\\boxed{}`, `\\text{}`, `\\mathrm{}`, `\\textbf{}`, ...), `\\left`/`\\right`, spacing
    (`\\!`, `\\,`, `\\;`, `~`, `\\quad`), `\\displaystyle`, degree signs (`^\\circ`, `°`),
    percent signs, currency symbols, a leading `\\approx`, trailing units (`\\text{ cm}`,
    `dollars`, `sq units`, `5 m` but not `2s`), thousands separators of a single number
    (`1,000`, `1{,}000`, `1,\\!000`; never the tuple `(1,2)`), a leading assignment (`x = 5`,
    `f(3) = 5`; kept when `keep_assignment`), braces around the whole answer and trailing
    punctuation; turns `\\dfrac`/`\\tfrac`/`\\cfrac` into `\\frac` and spells relations one way
    (`<=`, `\\le`, `≤` -> `\\leq`; `>=` -> `\\geq`; ` != `, `\\ne` -> `\\neq`, but `3!=6` stays a
    factorial; `\\lt` -> `<`; `\\gt` -> `>`). Unicode is NFKC-normalized and the minus sign U+2212 becomes `-`.
    """
    text = unicodedata.normalize("NFKC", answer).replace("\u2212", "-").replace("\n", " ")
    text = _strip_delimiters(text)
    text = _LATEX_THOUSANDS.sub("", text)
    text = _SPACING.sub(lambda match: match.group(1) or " ", text)
    text = _RELATIONS.sub(lambda match: _RELATION_SPELLING[match.group(0)], text)
    for variant in ("\\dfrac", "\\tfrac", "\\cfrac"):
        text = text.replace(variant, "\\frac")
    text = _DEGREES.sub("", text)
    text = _PERCENT.sub("", text)
    text = _CURRENCY.sub("", text)
    text = _APPROX.sub("", text.strip())
    text = _strip_units(text.rstrip(_TRAILING_PUNCT + " "))
    for wrapper in _WRAPPERS:
        text = unwrap_command(text, wrapper)
    text = strip_outer_braces(text.strip())
    if not keep_assignment:
        text = _strip_assignment(text)
    text = _strip_units(text.rstrip(_TRAILING_PUNCT + " "))
    return strip_thousands(text).strip()


def _canonical_decimal(match: re.Match[str]) -> str:
    """`0.50` -> `0.5`, `.5` -> `0.5`, `3.0` -> `3`."""
    integer, fraction = match.group(1).lstrip("0") or "0", match.group(2).rstrip("0")
    return f"{integer}.{fraction}" if fraction else integer


def normalize_answer(answer: str) -> str:
    """Canonical string of an answer for exact comparison.

    Input: any extracted answer. Output: `clean_answer(answer)` then: a lone choice letter
    `(B)` -> `B`; answers made only of words lower-cased with commas unspaced
    (`Yes` -> `yes`, `A, C` -> `a,c`); otherwise all spaces removed (except one after a control
    word followed by a letter, so `\\pi r` stays distinct from `\\pir`), `\\frac`/`\\sqrt`
    arguments braced (`\\frac12` == `\\frac{1}{2}`, `\\sqrt2` == `\\sqrt{2}`), `a/b` of two
    integers written as `\\frac{a}{b}`, decimals canonical (`0.50`, `.5` -> `0.5`; `3.0` -> `3`),
    `\\le`/`\\ge` spelled `\\leq`/`\\geq`, and a leading `+` dropped. Equal outputs mean equal
    answers; different outputs do not prove the answers differ (the grader then tries the
    numeric and symbolic checks).
    """
    text = clean_answer(answer)
    letter = _LETTER_CHOICE.fullmatch(text)
    if letter is not None:
        return letter.group(1).upper()
    if _WORDS_ONLY.fullmatch(text):
        return re.sub(r"\s*,\s*", ",", " ".join(text.lower().split()))
    text = _SPACE_AFTER_COMMAND.sub("\\1\x00", text)
    text = "".join(text.split()).replace("\x00", " ")
    text = re.sub(r"\\le(?![a-zA-Z])", r"\\leq", text)
    text = re.sub(r"\\ge(?![a-zA-Z])", r"\\geq", text)
    text = _FRAC_TWO_CHARS.sub(r"\\frac{\1}{\2}", text)
    text = _FRAC_SECOND_CHAR.sub(r"\\frac\1{\2}", text)
    text = _FRAC_FIRST_CHAR.sub(r"\\frac{\1}{", text)
    text = _SQRT_CHAR.sub(r"\\sqrt{\1}", text)
    text = _SQRT_COMMAND.sub(r"\\sqrt{\1}", text)
    text = _DECIMAL.sub(_canonical_decimal, text)
    slash = _SIMPLE_SLASH.fullmatch(text)
    if slash is not None:
        text = f"{slash.group(1)}\\frac{{{slash.group(2)}}}{{{slash.group(3)}}}"
    return text[1:] if text.startswith("+") else text
