"""Decoding one JSON record with every failure located: malformed JSON (line and column), nesting
deeper than the parser allows and integers longer than Python converts (the field where each
happens), instead of a bare RecursionError or ValueError."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

_WHITESPACE = re.compile(r"[ \t\n\r]*")
# How deep the nesting scan goes before it names the field (far below where the parser gives up).
_DEEP = 200


class RecordError(ValueError):
    """A JSON record that cannot be decoded: `message`, and where known the `field` (a path such as
    `messages[2].content`) and the 1-based `line` within the decoded text."""

    def __init__(self, message: str, *, field: str | None = None, line: int | None = None):
        super().__init__(message)
        self.message, self.field, self.line = message, field, line


class _LongInt(str):
    """An integer literal too long to convert, kept as its digits so its field can be named."""


def _int_or_marker(digits: str) -> int | _LongInt:
    limit = sys.get_int_max_str_digits()
    return _LongInt(digits) if limit and len(digits.lstrip("-")) > limit else int(digits)


_DECODER = json.JSONDecoder(parse_int=_int_or_marker)


def loads_record(text: str) -> Any:
    """The JSON value of `text` (surrounding whitespace allowed). Raises RecordError."""
    value, end = decode_value(text, _WHITESPACE.match(text).end())
    end = _WHITESPACE.match(text, end).end()
    if end != len(text):
        raise RecordError(f"malformed JSON (extra data at column {end + 1})", line=text.count("\n", 0, end) + 1)
    return value


def decode_value(text: str, start: int) -> tuple[Any, int]:
    """Decode the JSON value that begins at offset `start` of `text`; returns (value, end offset).
    Raises RecordError naming the line (within `text`) and, for nesting and integer limits, the field."""
    try:
        value, end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise RecordError(f"malformed JSON ({exc.msg} at column {exc.colno})", line=exc.lineno) from exc
    except RecursionError as exc:
        raise RecordError(
            f"nested too deeply to parse (more than {_DEEP} levels)",
            field=_deep_field(text, start),
            line=text.count("\n", 0, start) + 1,
        ) from exc
    limit = sys.get_int_max_str_digits()
    if limit and re.compile(rf"\d{{{limit + 1}}}").search(text, start, end):
        field, digits = _long_int(value)
        if field is not None:
            raise RecordError(
                f"integer of {digits} digits is longer than the {limit}-digit limit",
                field=field or None,
                line=text.count("\n", 0, start) + 1,
            )
    return value, end


def _long_int(value: Any) -> tuple[str | None, int]:
    """(path, digits) of the first over-long integer inside `value`, or (None, 0); iterative, so a
    deep value cannot overflow the stack."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, _LongInt):
            return path, len(item.lstrip("-"))
        if isinstance(item, dict):
            stack.extend((f"{path}.{key}" if path else str(key), child) for key, child in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in reversed(list(enumerate(item))))
    return None, 0


def _deep_field(text: str, start: int) -> str | None:
    """The top-level key under which the value at `start` nests deeper than _DEEP levels (None when
    the value is not an object)."""
    depth, key, last_string, i = 0, None, None, start
    while i < len(text):
        char = text[i]
        if char == '"':
            end = i + 1
            while end < len(text) and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            last_string, i = text[i + 1 : end], end
        elif char in "[{":
            depth += 1
            if depth > _DEEP:
                return key
        elif char in "]}":
            depth -= 1
        elif char == ":" and depth == 1:
            key = last_string
        i += 1
    return key
