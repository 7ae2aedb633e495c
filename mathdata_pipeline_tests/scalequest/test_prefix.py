"""ScaleQuest prefix trick: prefixes from real chat templates, synthesis requests, generation
through the real llama.cpp engine, question cleaning and the judge / solver prompts."""

from __future__ import annotations

import pytest

from mathdata_pipeline.engines.base import Request, SamplingParams, derive_seed
from mathdata_pipeline.engines.local import LocalEngine
from mathdata_pipeline.scalequest.prefix import (
    PREFIX_PRESETS,
    QuestionPrefix,
    clean_question,
    judge_messages,
    prefix_from_chat_template,
    resolve_prefix,
    response_messages,
    synthesis_requests,
)

SMOLLM2_PREFIX = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\n"
)
# The chat templates published with Qwen2-Math-7B-Instruct and deepseek-math-7b-rl.
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
DEEPSEEK_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ 'User: ' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}"
    "{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


@pytest.fixture(scope="module")
def engine():
    with LocalEngine(n_ctx=512) as local:
        yield local


def test_prefix_from_the_real_smollm2_gguf_template(engine):
    template = engine._llm.metadata["tokenizer.chat_template"]
    prefix = prefix_from_chat_template(template)
    assert prefix.prefix == SMOLLM2_PREFIX
    assert prefix.end_of_turn == "<|im_end|>"
    assert prefix.stop == ("<|im_start|>", "<|im_end|>")
    assert prefix.training_text("What is 2+3?") == SMOLLM2_PREFIX + "What is 2+3?<|im_end|>"
    # the prefix is exactly what the engine renders before the user text
    rendered = engine.render(Request.chat([{"role": "user", "content": "Q"}], SamplingParams()))
    assert rendered.startswith(prefix.prefix + "Q" + prefix.end_of_turn)


def test_qwen2_template_gives_the_qwen2_math_preset():
    assert prefix_from_chat_template(QWEN2_TEMPLATE, eos_token="<|endoftext|>") == PREFIX_PRESETS["qwen2-math"]


def test_deepseek_template_matches_the_preset_prefix_and_turn_end():
    derived = prefix_from_chat_template(
        DEEPSEEK_TEMPLATE, bos_token="<｜begin▁of▁sentence｜>", eos_token="<｜end▁of▁sentence｜>"
    )
    preset = PREFIX_PRESETS["deepseekmath"]
    assert (derived.prefix, derived.end_of_turn) == (preset.prefix, preset.end_of_turn)
    # the turn end is only whitespace, so the headers become the stops
    assert derived.stop == ("User:", "Assistant:", "<｜end▁of▁sentence｜>")
    assert preset.training_text("Find x.") == "<｜begin▁of▁sentence｜>User: Find x.\n\n<｜end▁of▁sentence｜>"


def test_system_message_goes_into_the_prefix():
    prefix = prefix_from_chat_template(QWEN2_TEMPLATE, system="Write hard problems.")
    assert prefix.prefix == "<|im_start|>system\nWrite hard problems.<|im_end|>\n<|im_start|>user\n"


def test_resolve_prefix_puts_prefix_system_into_the_auto_prefix_and_refuses_it_with_a_preset():
    steered = resolve_prefix("auto", QWEN2_TEMPLATE, "Write one math word problem.")
    assert steered.prefix == "<|im_start|>system\nWrite one math word problem.<|im_end|>\n<|im_start|>user\n"
    assert resolve_prefix("auto", QWEN2_TEMPLATE) == resolve_prefix("auto", QWEN2_TEMPLATE, "")
    assert resolve_prefix("auto", QWEN2_TEMPLATE).prefix.startswith("<|im_start|>system\nYou are a helpful")
    with pytest.raises(ValueError, match="prefix_system needs prefix 'auto'"):
        resolve_prefix("qwen2-math", None, "Write one math word problem.")


def test_template_that_repeats_the_message_is_refused():
    template = "{% for m in messages %}{{ m['content'] }} {{ m['content'] }}{% endfor %}"
    with pytest.raises(ValueError, match="expected once"):
        prefix_from_chat_template(template)


def test_synthesis_requests_share_the_prompt_and_never_the_seed():
    prefix = PREFIX_PRESETS["qwen2-math"]
    first = synthesis_requests(prefix, 5, generator_id="qwen-qgen", shard="0")
    second = synthesis_requests(prefix, 5, generator_id="qwen-qgen", shard="1")
    assert all(r.prompt == prefix.prefix and r.messages is None for r in first)
    assert {(r.params.temperature, r.params.top_p, r.params.max_tokens, r.params.stop) for r in first} == {
        (1.0, 0.99, 1024, prefix.stop)
    }
    seeds = [r.params.seed for r in first]
    assert seeds == [derive_seed("scalequest", "qwen-qgen", "0", i) for i in range(5)]
    assert len(set(seeds)) == 5 and not set(seeds) & {r.params.seed for r in second}
    assert synthesis_requests(prefix, 0, generator_id="g", shard="0") == []
    with pytest.raises(ValueError, match="count"):
        synthesis_requests(prefix, -1, generator_id="g", shard="0")


def test_real_engine_writes_distinct_questions_and_repeats_a_seed(engine):
    prefix = prefix_from_chat_template(engine._llm.metadata["tokenizer.chat_template"])
    requests = synthesis_requests(prefix, 3, generator_id="smollm2", shard="test", max_tokens=48)
    texts = [result.text for _, result in engine.generate(requests)]
    questions = [clean_question(text, prefix) for text in texts]
    assert all(questions) and len(set(questions)) == 3
    again = [result.text for _, result in engine.generate([requests[1], requests[0]])]
    assert again == [texts[1], texts[0]]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("  What is 2+2?  ", "What is 2+2?"),
        ("What is 2+2?<|im_end|>\n<|im_start|>assistant\n4", "What is 2+2?"),
        ("Find x.\n<|im_start|>user\nAnother", "Find x."),
        ("<|im_end|>", ""),
        ("   \n ", ""),
    ],
)
def test_clean_question_cuts_at_turn_markers(raw, expected):
    assert clean_question(raw, PREFIX_PRESETS["qwen2-math"]) == expected


def test_clean_question_uses_the_stripped_end_of_turn():
    prefix = QuestionPrefix(prefix="User: ", stop=(), end_of_turn="\n\n</s>")
    assert clean_question("Find y.</s>User: more", prefix) == "Find y."


def test_judge_and_response_prompts():
    judge = judge_messages("What is 3 + 4?")
    assert [m["role"] for m in judge] == ["user"]
    text = judge[0]["content"]
    assert "What is 3 + 4?" in text and "math teacher" in text
    assert "Verdict: Yes" in text and "Verdict: No" in text and "step by step" in text
    assert response_messages("What is 3 + 4?") == [
        {
            "role": "user",
            "content": ("What is 3 + 4?\nPlease reason step by step, and put your final answer within \\boxed{}."),
        }
    ]
