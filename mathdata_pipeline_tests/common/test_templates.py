"""The token ids a model sees for each prompt template equal the ids of the reference
implementation's prompt for the same question.

The references are rebuilt here from their documented formats, independently of templates.py:
DART-Math's `PromptTemplate` (`dart_math/utils.py`: query prompt + query + text after the query +
response prompt, right-stripped, then the whole input stripped in `pipeline/gen.py`), Qwen2.5-Math's
`qwen25-math-cot` prompt, and the model's own chat template. The reference hands the string to
vLLM, which encodes it with the model's Hugging Face tokenizer and its default special tokens (BOS
where that tokenizer adds one); the pipeline side is what the llama.cpp engine actually feeds the
embedded SmolLM2: `engine.tokenize(engine.render(request))`.
"""

from __future__ import annotations

import pytest

from mathdata_pipeline.common.samples import SampleSpec, solve_request
from mathdata_pipeline.common.templates import TEMPLATES, get_template
from mathdata_pipeline.engines.base import SamplingParams
from mathdata_pipeline.engines.local import LocalEngine, embedded_gguf_path

QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Let $f(x) = \\frac{x^2}{2}$.  Find $f(3)$.\n",  # MATH-style: LaTeX, double space, trailing newline
]
BOXED = "Please reason step by step, and put your final answer within \\boxed{}."


def dart_math_prompt(query_prompt, query, prompt_after_query, resp_prompt, prompt_before_resp="", sys_prompt=""):
    """DART-Math's `make_full_prompt` for a 0-shot query, then `.strip()` as `pipeline/gen.py` does."""
    prefix = f"{query_prompt}{query}{prompt_after_query}{resp_prompt}{prompt_before_resp}".rstrip()
    return (sys_prompt + prefix).strip()


REFERENCES = {
    "deepseekmath": lambda q: dart_math_prompt("User: ", q, "\n" + BOXED + "\n\n", "Assistant: "),
    "alpaca": lambda q: dart_math_prompt(
        "### Instruction:\n",
        q,
        "\n\n",
        "### Response:\n",
        sys_prompt="Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n",
    ),
    "qwen-boxed": lambda q: (
        f"<|im_start|>system\n{BOXED}<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
    ),
}


@pytest.fixture(scope="module")
def tokenizers():
    """(the embedded model's Hugging Face tokenizer, the llama.cpp engine that serves it)."""
    from transformers import AutoTokenizer

    gguf = embedded_gguf_path()
    reference = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    engine = LocalEngine(n_ctx=512, n_threads=1)
    yield reference, engine
    engine.close()


def pipeline_ids(engine: LocalEngine, name: str, question: str) -> list[int]:
    request = solve_request(get_template(name), SampleSpec("p", question, 0, 0), SamplingParams(max_tokens=8))
    return engine.tokenize(engine.render(request))


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("question", QUESTIONS)
def test_raw_template_ids_equal_the_reference(tokenizers, name, question):
    reference, engine = tokenizers
    expected = reference(REFERENCES[name](question))["input_ids"]  # default special tokens, as vLLM encodes
    assert pipeline_ids(engine, name, question) == expected


@pytest.mark.parametrize("question", QUESTIONS)
def test_chat_template_ids_equal_the_models_chat_template(tokenizers, question):
    reference, engine = tokenizers
    messages = [{"role": "user", "content": f"{question}\n{BOXED}"}]
    encoded = reference.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    expected = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
    assert pipeline_ids(engine, "chat", question) == list(expected)


def test_every_template_is_checked_and_dart_prompts_end_without_whitespace():
    assert set(TEMPLATES) == {*REFERENCES, "chat"}
    for name in ("deepseekmath", "alpaca"):
        prompt = get_template(name).prompt(QUESTIONS[1])
        assert prompt == prompt.strip() and prompt.endswith(("Assistant:", "### Response:"))
    assert get_template("deepseekmath").stop == ("User:", "Assistant:")
    assert get_template("alpaca").stop == ("### Instruction:", "### Response:")
