"""Prompt templates for solving a math question (METHODS.md §6.0 "PromptTemplate").

`raw` templates produce a prompt string whose stop strings keep the model from writing the next
turn; `chat` sends the question as a user message and lets the engine apply the model's own chat
template.

Each raw template reproduces its reference implementation character for character, so the token
ids a model sees equal the reference's (mathdata_pipeline_tests/common/test_templates.py checks it):

- `deepseekmath` and `alpaca` are DART-Math's `PromptTemplate`s (hkust-nlp/dart-math,
  `dart_math/utils.py`): `{query_prompt}{query}{prompt_after_query}{resp_prompt}{prompt_before_resp}`,
  right-stripped ("important for correct tokenization"), then stripped as a whole
  (`pipeline/gen.py`), so neither ends in a space or a newline. Its stop strings are the query and
  response prefixes, stripped.
- `qwen-boxed` is Qwen2.5-Math's chain-of-thought prompt (ChatML, the boxed instruction as the
  system turn), ending in the assistant header's newline.

The BOS token is not text in these templates: the reference hands the prompt string to vLLM, whose
tokenizer adds BOS where the model's tokenizer does (DeepSeekMath, Llama, Mistral), so the engine
that encodes the prompt must add it too (SmolLM2's tokenizer adds none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
_BOXED = BOXED_INSTRUCTION.replace("{}", "{{}}")
ALPACA_SYSTEM = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)


@dataclass(frozen=True)
class SolveTemplate:
    """How a question becomes a prompt: `kind` "raw" (format `text` with {question}) or "chat"
    (user message `text`), stop strings for raw prompts, and `strip`: whether the formatted raw
    prompt loses its leading and trailing whitespace (DART-Math's rule)."""

    name: str
    kind: str
    text: str
    stop: tuple[str, ...] = ()
    strip: bool = False

    def prompt(self, question: str) -> str:
        """The raw prompt for `question` (raw templates only)."""
        text = self.text.format(question=question)
        return text.strip() if self.strip else text

    def messages(self, question: str) -> list[dict[str, str]]:
        """The chat messages for `question` (chat templates only)."""
        return [{"role": "user", "content": self.text.format(question=question)}]


TEMPLATES: dict[str, SolveTemplate] = {
    # DART-Math's synthesis template (DeepSeekMath-7B-RL): "...\n\nAssistant:" without a trailing space.
    "deepseekmath": SolveTemplate(
        "deepseekmath",
        "raw",
        "User: {question}\n" + _BOXED + "\n\nAssistant:",
        stop=("User:", "Assistant:"),
        strip=True,
    ),
    # Qwen2.5-Math's chain-of-thought prompt: ChatML with the boxed instruction as the system turn.
    "qwen-boxed": SolveTemplate(
        "qwen-boxed",
        "raw",
        "<|im_start|>system\n" + _BOXED + "<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n",
        stop=("<|im_end|>", "<|im_start|>"),
    ),
    # Alpaca, the SFT (and on-policy sampling) format of DART-Math's models and of MuggleMath: "...### Response:".
    "alpaca": SolveTemplate(
        "alpaca",
        "raw",
        ALPACA_SYSTEM + "\n\n### Instruction:\n{question}\n\n### Response:",
        stop=("### Instruction:", "### Response:"),
        strip=True,
    ),
    # The engine's own chat template, with the boxed instruction after the question.
    "chat": SolveTemplate("chat", "chat", "{question}\n" + _BOXED),
}


TemplateName = Literal["deepseekmath", "qwen-boxed", "alpaca", "chat"]


def get_template(name: str) -> SolveTemplate:
    """The template called `name`; raises KeyError listing the known names."""
    if name not in TEMPLATES:
        raise KeyError(f"unknown prompt template {name!r}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]
