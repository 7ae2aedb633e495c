"""LaTeX math spans of a response: `$...$`, `$$...$$`, `\\(...\\)`, `\\[...\\]` and display
environments (`align`, `align*`, `equation`, `gather`, ...), in one linear scan.

An inline span (`$...$`, `\\(...\\)`) may not contain a line break; a display span may. An
escaped dollar `\\$` is a literal character. A span that reads as prose (two plain words in a
row outside `\\text{}`), or whose closing `$` is followed by a digit (`$5 and $6`), is taken for
dollar signs used as currency and is not returned. Of a
multi-line environment only the last row counts, without its alignment marks (`&= 5` gives `5`).
"""

from __future__ import annotations

import re
from functools import cache

# (opener, closer, may span lines)
_DELIMITERS = (("$$", "$$", True), ("\\[", "\\]", True), ("\\(", "\\)", False), ("$", "$", False))
_ENVIRONMENTS = ("align", "align*", "aligned", "equation", "equation*", "gather", "gather*", "eqnarray", "eqnarray*")
# What the scan stops at outside a span: an opener, or an escape to step over (`\$`, `\\`).
_OUTSIDE = re.compile(r"\$\$|\$|\\\[|\\\(|\\begin\{[a-z]+\*?\}|\\[$\\]")
_INNER_ENVIRONMENT = re.compile(r"\\begin\{(aligned|align\*?|gathered|split)\}(.*)\\end\{\1\}[.,;]?", re.DOTALL)
# Between the last two spans of a list: "and" / "or" (after an optional comma); before that
# also a bare comma.
_LAST_LIST_GAP = re.compile(r"\s*,?\s*(?:and|or)\s+")
_LIST_GAP = re.compile(r"\s*,\s*(?:(?:and|or)\s+)?|\s+(?:and|or)\s+")
_MAX_JOINED_SPANS = 16
_ROW_START = re.compile(r"^(?:\s|\\q?quad(?![a-zA-Z])|\\[,;:! ])+")
_ROW_BREAK = re.compile(r"\\\\(?:\[[^\]]*\])?")
_ROW_NOISE = re.compile(r"\\(?:nonumber|notag)(?![a-zA-Z])|\\(?:label|tag)\{[^{}]*\}|&")
_TEXT_GROUP = re.compile(r"\\(?:text|textbf|textrm|textnormal|mbox|mathrm|operatorname)\s*\{[^{}]*\}")
_TWO_WORDS = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}\s+[A-Za-z]{2,}(?![A-Za-z{])")


def _delimiter(token: str) -> tuple[str, str, bool] | None:
    """(opener, closer, may span lines) for a token of `_OUTSIDE`; None for an escape."""
    for opener, closer, multiline in _DELIMITERS:
        if token == opener:
            return opener, closer, multiline
    if token.startswith("\\begin{") and token[7:-1] in _ENVIRONMENTS:
        return token, f"\\end{{{token[7:-1]}}}", True
    return None


def _span_content(opener: str, content: str) -> str:
    """The answer-bearing part of a span's content: for an environment (also one filling a `$$`
    or `\\[` span), its last non-empty row without `&`, `\\label{}`, `\\nonumber` and a leading
    `=`; otherwise the content, stripped."""
    content = content.strip()
    if not opener.startswith("\\begin"):
        inner = _INNER_ENVIRONMENT.fullmatch(content)
        if inner is None:
            return content
        content = inner.group(2)
    rows = [row for row in (_ROW_NOISE.sub("", row).strip() for row in _ROW_BREAK.split(content)) if row]
    if not rows:
        return ""
    last = _ROW_START.sub("", rows[-1])
    return last[1:].strip() if last.startswith("=") else last


@cache
def _closer_pattern(closer: str) -> re.Pattern[str]:
    """What a search for `closer` stops at: the closer (group 1), an escape, a line break (group 2)."""
    return re.compile(rf"({re.escape(closer)})|\\[$\\]|(\n)")


def _find_closer(text: str, start: int, closer: str, multiline: bool) -> tuple[int | None, int]:
    """(index of the closing delimiter at or after `start` or None, index where the search
    stopped). Escaped `\\$` and `\\\\` are skipped; an inline span stops at a line break."""
    pattern = _closer_pattern(closer)
    index = start
    while (match := pattern.search(text, index)) is not None:
        if match.group(1) is not None:
            return match.start(), match.start()
        if match.group(2) is not None and not multiline:
            return None, match.start()
        index = match.end()
    return None, len(text)


def last_math_span(text: str) -> tuple[str, int] | None:
    """`(content, end)` of the last complete math span of `text`: its stripped content and the
    index just after its closing delimiter; or None.

    Input: a response. Output: e.g. `("\\frac{1}{3}", 20)` for `"so it is $\\frac{1}{3}$."`. None
    when there is no span, the last one is empty, or it reads as prose (currency dollars: `"$10
    for the book and $"`). Spans that end the text's last list ("$(-2, 18)$ and $(8, 38)$",
    "$1$, $2$, or $3$": joined by "and"/"or", and before that also by commas) give all their
    contents, joined with ", ".
    """
    spans = _spans(text)
    if not spans:
        return None
    run = [spans[-1]]
    for span in reversed(spans[:-1]):
        gap = text[span[3] : run[0][4]]
        pattern = _LIST_GAP if len(run) > 1 else _LAST_LIST_GAP
        if not pattern.fullmatch(gap):
            break
        run.insert(0, span)
    contents = [_span_content(span[0], text[span[1] : span[2]]) for span in run]
    if not all(contents) or any(looks_like_prose(content) for content in contents):
        return None
    return ", ".join(contents), run[-1][3]


def _spans(text: str) -> list[tuple[str, int, int, int, int]]:
    """The last math spans of `text` (at most 16), in order: (opener, content start, content end,
    span end, span start)."""
    spans: list[tuple[str, int, int, int, int]] = []
    index = 0
    # Per closer: a failed search from some start up to here means none can succeed before here.
    no_closer_before: dict[str, int] = {}
    while (token := _OUTSIDE.search(text, index)) is not None:
        delimiter = _delimiter(token.group(0))
        if delimiter is None:
            index = token.end()  # an escape (`\\$`, `\\\\`) or another environment
            continue
        opener, closer, multiline = delimiter
        index = token.start()
        if index < no_closer_before.get(closer, -1):
            index += len(opener)
            continue
        close, stopped = _find_closer(text, index + len(opener), closer, multiline)
        if close is None:
            no_closer_before[closer] = stopped
            index += len(opener)
            continue
        if opener == "$" and text[close + 1 : close + 2].isdigit():
            index += 1  # `$5 and $6`: two amounts of money, not a formula
            continue
        spans.append((opener, index + len(opener), close, close + len(closer), index))
        del spans[:-_MAX_JOINED_SPANS]
        index = close + len(closer)
    return spans


def math_spans(text: str) -> list[str]:
    """The contents of the last 16 math spans of `text`, in order (same rules as `last_math_span`;
    an environment gives its last row). Used to read the expressions a question states."""
    return [content for span in _spans(text) if (content := _span_content(span[0], text[span[1] : span[2]]))]


def leading_math_span(text: str) -> tuple[str, int] | None:
    """`(content, end)` of the math span that `text` starts with (same rules as `last_math_span`:
    an inline span stays on one line, `\\$` is escaped), or None."""
    token = _OUTSIDE.match(text)
    delimiter = _delimiter(token.group(0)) if token is not None else None
    if delimiter is None:
        return None
    opener, closer, multiline = delimiter
    close, _ = _find_closer(text, len(opener), closer, multiline)
    if close is None:
        return None
    content = _span_content(opener, text[len(opener) : close])
    return (content, close + len(closer)) if content else None


def looks_like_prose(content: str) -> bool:
    """True when `content` has two plain words in a row outside `\\text{...}` groups (so it is
    running text, not a formula): `"10 for the book and "` is prose, `"x = 2"` and
    `"12 \\text{ and } 13"` are not."""
    return _TWO_WORDS.search(_TEXT_GROUP.sub(" ", content)) is not None
