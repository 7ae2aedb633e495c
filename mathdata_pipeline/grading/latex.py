"""Brace matching for LaTeX answer strings, in linear time (safe on 10,000 nested levels)."""

from __future__ import annotations


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
