"""Training examples from chat conversations: token ids, and labels that put the loss on the
assistant turns only.

Two formats (`template`):
- `chat`: the model's own chat template (as `tokenizer.apply_chat_template` renders it). An
  assistant turn spans from the end of the conversation rendered up to it with the generation
  prompt to the end of the conversation rendered with it, so its end-of-turn token is trained
  and the model learns to stop. Templates that do not render a conversation as a growing
  prefix (rare) are refused with the row named.
- `alpaca`: DART-Math's and MuggleMath's SFT format; each user turn becomes an Alpaca instruction
  block (`common.templates` "alpaca"), each assistant turn its response followed by EOS; system
  turns are put in front of the next instruction.

The text is tokenized as it is (no BOS added, special tokens written in it are parsed), as the
generation engines tokenize prompts. Tokens whose first character lies inside an assistant turn
are labelled; every other label is -100 (excluded from the loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mathdata_pipeline.common.templates import TEMPLATES, SolveTemplate

IGNORE = -100
SftTemplate = Literal["chat", "alpaca"]
# The prompt of a benchmark question in each format: the question alone as the user turn (exactly
# what the mixtures' user turns hold), or the Alpaca instruction block.
EVAL_TEMPLATES: dict[str, SolveTemplate] = {
    "chat": SolveTemplate("sft-chat", "chat", "{question}"),
    "alpaca": TEMPLATES["alpaca"],
}


@dataclass(frozen=True)
class Example:
    """One training sequence: `input_ids`, `labels` (-100 outside assistant turns), `truncated`."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool


def render_chat(messages: Sequence[dict], tokenizer, row: str) -> tuple[str, list[tuple[int, int]]]:
    """(text, assistant character spans) of `messages` in the tokenizer's chat template.
    Raises ValueError naming `row` when the template does not render the turns as prefixes."""
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (through.startswith(before) and text.startswith(through)):
            raise ValueError(
                f"row {row}: the chat template does not render turn {i} as a prefix of the conversation; "
                "use template 'alpaca'"
            )
        spans.append((len(before), len(through)))
    return text, spans


def render_alpaca(messages: Sequence[dict], eos_token: str) -> tuple[str, list[tuple[int, int]]]:
    """(text, assistant character spans) of `messages` as consecutive Alpaca blocks."""
    template = TEMPLATES["alpaca"]
    text, system, spans = "", "", []
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "system":
            system += content.strip() + "\n\n"
        elif role == "user":  # DART-Math trains on "### Response:\n" + response; its sampling prompt ends at ":"
            text += ("\n\n" if text else "") + template.prompt(system + content) + "\n"
            system = ""
        elif role == "assistant":
            start = len(text)
            text += content + eos_token
            spans.append((start, len(text)))
    return text, spans


def tokenize_conversation(
    messages: Sequence[dict], tokenizer, template: SftTemplate, max_length: int, row: str = "?"
) -> Example:
    """The training example of one conversation, cut to its first `max_length` tokens.

    Inputs: chat `messages` ([{role, content}, …]); a fast transformers tokenizer; the format;
    `max_length` in tokens; `row`, the row id used in error messages.
    Raises ValueError naming `row` when the conversation has no assistant turn.
    """
    if template == "chat":
        text, spans = render_chat(messages, tokenizer, row)
    else:
        text, spans = render_alpaca(messages, tokenizer.eos_token or "")
    if not spans:
        raise ValueError(f"row {row}: no assistant turn to train on")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    labels = [
        token if any(start <= first < end for start, end in spans) else IGNORE
        for token, (first, _) in zip(ids, offsets)
    ]
    return Example(ids[:max_length], labels[:max_length], truncated=len(ids) > max_length)


def training_examples(
    rows: Sequence[tuple[str, Sequence[dict]]], tokenizer, template: SftTemplate, max_length: int
) -> tuple[list[Example], dict[str, int]]:
    """Examples for (row_id, messages) `rows`, in order.

    Output: (examples, counts): `rows`, `examples`, `truncated` (cut to max_length),
    `dropped_no_assistant_tokens` (cut so short that no assistant token is left: dropped),
    `tokens` and `loss_tokens` (assistant tokens) of the kept examples.
    """
    examples, counts = [], {"rows": len(rows), "truncated": 0, "dropped_no_assistant_tokens": 0}
    for row, messages in rows:
        example = tokenize_conversation(messages, tokenizer, template, max_length, row=row)
        counts["truncated"] += example.truncated
        if all(label == IGNORE for label in example.labels):
            counts["dropped_no_assistant_tokens"] += 1
            continue
        examples.append(example)
    counts["examples"] = len(examples)
    counts["tokens"] = sum(len(e.input_ids) for e in examples)
    counts["loss_tokens"] = sum(sum(label != IGNORE for label in e.labels) for e in examples)
    return examples, counts


def mixture_conversations(mixture) -> list[tuple[str, list[dict]]]:
    """(row_id, messages) of every row of a `mixture` table, in order."""
    return list(zip(mixture.column("row_id").to_pylist(), mixture.column("messages").to_pylist()))
