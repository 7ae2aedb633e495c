"""Bracket matching and top-level scanning for LaTeX answer strings, in linear time (safe on deep nesting)."""

from __future__ import annotations

import re


def match_brace(text: str, open_index: int) -> int | None:
    """Index of the `}` that closes the `{` at `text[open_index]`, or None if it never closes.

    Escaped braces (`\\{`, `\\}`) are literal characters and do not change the depth, so in
    `\\boxed{\\{1,2\\}}` the first `{` is closed by the last `}`. One left-to-right pass.
    """
    depth = 0
    index = open_index
    length = len(text)
    while index < length:
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return None


def brace_pairs(text: str) -> dict[int, int]:
    """Map from the index of every `{` that is closed to the index of its `}`.

    Escaped braces are skipped as in `match_brace`; unclosed `{` and stray `}` are left out.
    One pass with a stack, so looking up many commands in one string stays linear.
    """
    pairs: dict[int, int] = {}
    stack: list[int] = []
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "{":
            stack.append(index)
        elif char == "}" and stack:
            pairs[stack.pop()] = index
        index += 1
    return pairs


def unwrap_command(text: str, command: str) -> str:
    """Replace every `\\command{arg}` in `text` by `arg`.

    `command` includes its backslash (e.g. `"\\text"`). Spaces between the command and `{` are
    allowed; occurrences with no braced argument, whose brace never closes, or that are only the
    prefix of a longer command (`\\textbf` when unwrapping `\\text`) are left unchanged. Nested
    uses of the same command are unwrapped one level. Example:
    `unwrap_command("5\\text{ cm}", "\\text")` gives `"5 cm"`.
    """
    if command not in text:
        return text
    pairs = brace_pairs(text)
    out: list[str] = []
    position = 0
    while True:
        found = text.find(command, position)
        if found < 0:
            out.append(text[position:])
            return "".join(out)
        after = found + len(command)
        brace = after
        while brace < len(text) and text[brace] == " ":
            brace += 1
        close = pairs.get(brace)
        if (after < len(text) and text[after].isalpha()) or close is None:
            out.append(text[position:after])
            position = after
            continue
        out.append(text[position:found])
        out.append(text[brace + 1 : close])
        position = close + 1


def strip_outer_braces(text: str) -> str:
    """Remove braces that wrap the whole string: `{{5}}` -> `5`, but `{1}+{2}` is unchanged."""
    pairs = brace_pairs(text)
    start, end = 0, len(text) - 1
    while start < end and text[start] == "{" and pairs.get(start) == end:
        start += 1
        end -= 1
    return text[start : end + 1].strip() if start else text


# Openers and closers of any bracket type count alike, so `[0,1)` and `(a,b]` are balanced.
_OPEN_COMMANDS = ("\\{", "\\langle", "\\lbrace", "\\lbrack", "\\begin")
_CLOSE_COMMANDS = ("\\}", "\\rangle", "\\rbrace", "\\rbrack", "\\end")


def _depth_step(text: str, index: int) -> tuple[int, int]:
    """(depth change, length) of the token at `text[index]`: a backslash command, an opening or a
    closing bracket, or any other character (no change)."""
    char = text[index]
    if char == "\\":
        return _command_at(text, index)
    return (1 if char in "([{" else -1 if char in ")]}" else 0), 1


def _command_at(text: str, index: int) -> tuple[int, int]:
    """(depth change, length) of the backslash command starting at `text[index]`."""
    for name in _OPEN_COMMANDS:
        if text.startswith(name, index) and not text[index + len(name) : index + len(name) + 1].isalpha():
            return 1, len(name)
    for name in _CLOSE_COMMANDS:
        if text.startswith(name, index) and not text[index + len(name) : index + len(name) + 1].isalpha():
            return -1, len(name)
    end = index + 1
    while end < len(text) and text[end].isalpha():
        end += 1
    return 0, max(end - index, 2)


def top_level_matches(text: str, pattern: re.Pattern[str]) -> list[re.Match[str]] | None:
    """Non-empty matches of `pattern` that start outside every bracket of `text`, left to right.

    Brackets are `()`, `[]`, `{}`, `\\{\\}`, `\\langle\\rangle` and `\\begin ... \\end`, of any
    type pairing (so intervals like `[0,1)` balance). Returns None when the brackets do not
    balance (no structure can be trusted then). One left-to-right pass.
    """
    matches: list[re.Match[str]] = []
    depth = 0
    index = 0
    length = len(text)
    while index < length:
        if depth == 0:
            match = pattern.match(text, index)
            if match is not None and match.end() > index:
                matches.append(match)
                index = match.end()
                continue
        change, step = _depth_step(text, index)
        depth += change
        if depth < 0:
            return None
        index += step
    return matches if depth == 0 else None


def split_top_level(text: str, pattern: re.Pattern[str]) -> list[str]:
    """`text` cut at the top-level matches of `pattern` (see `top_level_matches`); `[text]` when
    there are none or the brackets do not balance."""
    if pattern.search(text) is None:
        return [text]
    matches = top_level_matches(text, pattern)
    if not matches:
        return [text]
    parts, start = [], 0
    for match in matches:
        parts.append(text[start : match.start()])
        start = match.end()
    parts.append(text[start:])
    return parts


_OUTER_OPENERS = ("\\{", "\\langle", "(", "[", "{")
_OUTER_CLOSERS = ("\\}", "\\rangle", ")", "]", "}")


def outer_brackets(text: str) -> tuple[str, str, str] | None:
    """`(opener, closer, inside)` when one pair of brackets encloses all of `text`, else None.

    `"[0, 1)"` gives `("[", ")", "0, 1")`; `"(1)+(2)"` gives None. Openers: `(`, `[`, `{`,
    `\\{`, `\\langle`; the closer may be of another type (half-open intervals).
    """
    opener = next((name for name in _OUTER_OPENERS if text.startswith(name)), None)
    closer = next((name for name in _OUTER_CLOSERS if text.endswith(name)), None)
    if opener is None or closer is None or len(text) < len(opener) + len(closer):
        return None
    depth = 0
    index = 0
    last = len(text) - len(closer)
    while index < len(text):
        change, step = _depth_step(text, index)
        depth += change
        if depth <= 0:
            break
        index += step
    if depth != 0 or index != last:
        return None
    return opener, closer, text[len(opener) : last]
