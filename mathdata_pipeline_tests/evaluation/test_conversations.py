"""Training examples put the loss on assistant turns only, in both formats, with the real SmolLM2
tokenizer and chat template."""

from __future__ import annotations

import copy

import pytest

from mathdata_pipeline.evaluation.conversations import IGNORE, tokenize_conversation, training_examples

QUESTION = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?"
ANSWER = "She sold 48/2 = 24 clips in May, so 48 + 24 = 72 in all.\n#### 72"


def _trained_text(example, tokenizer) -> str:
    return tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label != IGNORE])


def test_chat_format_trains_the_answer_and_its_end_of_turn_only(smol_tokenizer):
    messages = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    example = tokenize_conversation(messages, smol_tokenizer, "chat", 512)
    assert _trained_text(example, smol_tokenizer) == ANSWER + "<|im_end|>\n"
    full = smol_tokenizer.apply_chat_template(messages, tokenize=False)
    assert smol_tokenizer.decode(example.input_ids) == full and not example.truncated


def test_every_assistant_turn_of_a_multi_turn_conversation_is_trained(smol_tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "Seven."},
        {"role": "user", "content": "An even one?"},
        {"role": "assistant", "content": "Two."},
    ]
    example = tokenize_conversation(messages, smol_tokenizer, "chat", 512)
    trained = _trained_text(example, smol_tokenizer)
    assert trained == "Seven.<|im_end|>\nTwo.<|im_end|>\n"
    assert "prime" not in trained and "brief" not in trained


def test_alpaca_format_trains_the_response_and_eos(smol_tokenizer):
    messages = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    example = tokenize_conversation(messages, smol_tokenizer, "alpaca", 512)
    text = smol_tokenizer.decode(example.input_ids)
    assert text.startswith("Below is an instruction") and f"### Instruction:\n{QUESTION}\n\n### Response:\n" in text
    assert _trained_text(example, smol_tokenizer) == ANSWER + smol_tokenizer.eos_token


def test_long_rows_are_cut_and_rows_left_without_answer_tokens_are_dropped_and_counted(smol_tokenizer):
    short = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]
    long = [{"role": "user", "content": QUESTION * 20}, {"role": "assistant", "content": ANSWER}]
    examples, counts = training_examples([("short", short), ("long", long)], smol_tokenizer, "chat", 64)
    assert counts["rows"] == 2 and counts["truncated"] == 1 and counts["dropped_no_assistant_tokens"] == 1
    assert counts["examples"] == len(examples) == 1 and counts["loss_tokens"] > 0
    assert counts["tokens"] == len(examples[0].input_ids)


def test_a_row_without_an_assistant_turn_is_named(smol_tokenizer):
    with pytest.raises(ValueError, match="row mx-7: no assistant turn"):
        training_examples([("mx-7", [{"role": "user", "content": "hi"}])], smol_tokenizer, "chat", 64)


def test_a_chat_template_that_does_not_grow_by_prefixes_is_refused(smol_tokenizer):
    odd = copy.deepcopy(smol_tokenizer)
    odd.chat_template = "{% for m in messages|reverse %}{{ m['content'] }}\n{% endfor %}"
    messages = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]
    with pytest.raises(ValueError, match="row r1: the chat template does not render turn 1 as a prefix"):
        tokenize_conversation(messages, odd, "chat", 64, row="r1")
