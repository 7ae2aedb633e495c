"""General (non-math) instruction data as chat messages, for the general side of mixtures.

Each converter turns one record into zero or more conversations (lists of {role, content});
`build_general_rows` validates, converts and hashes them into rows of GENERAL_SCHEMA.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa

from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.sources.readers import InputError, Record

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
GENERAL_SCHEMA = pa.schema(
    [
        pa.field("row_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("messages", pa.list_(MESSAGE_TYPE), nullable=False),
        pa.field("license", pa.string()),
        pa.field("source_record", pa.string()),
    ]
)

Messages = list[dict[str, str]]
_TURN_RE = re.compile(r"\n\n(Human|Assistant): ")


def _text(record: Record, label: str, name: str, *, required: bool = True) -> str | None:
    value = record.data.get(name)
    if value is None:
        if required:
            raise InputError(label, "missing required field", where=record.where, field=name)
        return None
    if not isinstance(value, str):
        raise InputError(label, f"expected str, got {type(value).__name__}", where=record.where, field=name)
    return value


def hh_rlhf(record: Record, label: str) -> Iterator[Messages]:
    """Anthropic HH transcript ("\\n\\nHuman: … \\n\\nAssistant: …") of the `chosen` field.

    A transcript whose last assistant turn is empty (a few exist upstream) yields nothing; the
    caller counts it as dropped.
    """
    transcript = _text(record, label, "chosen")
    pieces = _TURN_RE.split(transcript)
    if len(pieces) < 3 or pieces[0].strip():
        raise InputError(label, "not a Human/Assistant transcript", where=record.where, field="chosen")
    roles = {"Human": "user", "Assistant": "assistant"}
    messages = [{"role": roles[r], "content": c.strip()} for r, c in zip(pieces[1::2], pieces[2::2])]
    if messages[-1]["role"] != "assistant":
        raise InputError(label, "transcript does not end with an assistant turn", where=record.where, field="chosen")
    if messages[-1]["content"]:
        yield messages


def self_instruct(record: Record, label: str) -> Iterator[Messages]:
    """Self-Instruct task: one conversation per instance (instruction + input → output)."""
    instruction = _text(record, label, "instruction").strip()
    instances = record.data.get("instances")
    if not isinstance(instances, list) or not instances:
        raise InputError(label, "expected a non-empty list", where=record.where, field="instances")
    for index, instance in enumerate(instances):
        field = f"instances[{index}]"
        if not isinstance(instance, dict) or not isinstance(instance.get("output"), str):
            raise InputError(label, "expected an object with a string `output`", where=record.where, field=field)
        task_input = instance.get("input") or ""
        prompt = f"{instruction}\n\n{task_input.strip()}" if task_input.strip() else instruction
        yield [{"role": "user", "content": prompt}, {"role": "assistant", "content": instance["output"].strip()}]


def mmlu(record: Record, label: str) -> Iterator[Messages]:
    """MMLU item: question with lettered choices; the reply names the letter and the choice."""
    question = _text(record, label, "question").strip()
    choices = record.data.get("choices")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise InputError(label, "expected a list of at least two strings", where=record.where, field="choices")
    letters = "ABCDEFGHIJ"[: len(choices)]
    answer = _text(record, label, "answer").strip()
    if answer not in letters:
        raise InputError(
            label, f"expected one of {', '.join(letters)}, got {answer!r}", where=record.where, field="answer"
        )
    lines = "\n".join(f"{letter}. {choice}" for letter, choice in zip(letters, choices))
    reply = f"The answer is {answer}. {choices[letters.index(answer)]}"
    yield [
        {"role": "user", "content": f"{question}\n\n{lines}\n\nAnswer with the letter of the correct choice."},
        {"role": "assistant", "content": reply},
    ]


def messages(record: Record, label: str) -> Iterator[Messages]:
    """Records that already hold a chat: a `messages` list of {role, content} objects."""
    value = record.data.get("messages")
    if not isinstance(value, list) or not value:
        raise InputError(label, "expected a non-empty list of messages", where=record.where, field="messages")
    for index, message in enumerate(value):
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise InputError(
                label, "expected {role: str, content: str}", where=record.where, field=f"messages[{index}]"
            )
    yield [{"role": m["role"], "content": m["content"]} for m in value]


CONVERTERS: dict[str, Callable[[Record, str], Iterator[Messages]]] = {
    "hh_rlhf": hh_rlhf,
    "self_instruct": self_instruct,
    "mmlu": mmlu,
    "messages": messages,
}


def build_general_rows(
    records: Iterable[Record], *, fmt: str, source: str, label: str, license: str | None
) -> tuple[pa.Table, dict[str, int]]:
    """Convert a general set's records into GENERAL_SCHEMA rows.

    Inputs: records; `fmt`, a key of CONVERTERS; `source`, the set name; `label`, the file name for
    messages; `license`, stored on each row. Output: (table, counts with rows_read, rows_written and
    dropped_duplicate, dropped_empty_reply). Raises `InputError` on malformed records. `row_id` hashes the source and
    the conversation, so an identical conversation appearing twice is kept once (and counted).
    """
    convert = CONVERTERS[fmt]
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    counts = {"rows_read": 0, "rows_written": 0, "dropped_duplicate": 0, "dropped_empty_reply": 0}
    for record in records:
        counts["rows_read"] += 1
        conversations = list(convert(record, label))
        counts["dropped_empty_reply"] += not conversations
        for conversation in conversations:
            row_id = stable_hash("general", source, *(f"{m['role']}:{m['content']}" for m in conversation))
            if row_id in seen:
                counts["dropped_duplicate"] += 1
                continue
            seen.add(row_id)
            rows.append(
                {
                    "row_id": row_id,
                    "source": source,
                    "messages": conversation,
                    "license": license,
                    "source_record": f"{label} {record.where}",
                }
            )
    counts["rows_written"] = len(rows)
    return pa.Table.from_pylist(rows, schema=GENERAL_SCHEMA), counts
