"""Prompt templates for solving a math question (METHODS.md §6.0 "PromptTemplate").

`raw` templates produce a prompt string whose stop strings keep the model from writing the next
turn; `chat` sends the question as a user message and lets the engine apply the model's own chat
template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class SolveTemplate:
    """How a question becomes a prompt: `kind` "raw" (format `text` with {question}) or "chat"
    (user message `text`), plus stop strings for raw prompts."""

    name: str
    kind: str
    text: str
    stop: tuple[str, ...] = ()

    def prompt(self, question: str) -> str:
        """The raw prompt for `question` (raw templates only)."""
        return self.text.format(question=question)

    def messages(self, question: str) -> list[dict[str, str]]:
        """The chat messages for `question` (chat templates only)."""
        return [{"role": "user", "content": self.text.format(question=question)}]


TEMPLATES: dict[str, SolveTemplate] = {
    # DART-Math's synthesis template (DeepSeekMath-7B-RL), stop at the next turn.
    "deepseekmath": SolveTemplate(
        "deepseekmath",
        "raw",
        "User: {question}\n" + BOXED_INSTRUCTION.replace("{}", "{{}}") + "\n\nAssistant: ",
        stop=("User:", "\n\nUser"),
    ),
    # Qwen2.5-Math style: ChatML with the boxed instruction in the system turn.
    "qwen-boxed": SolveTemplate(
        "qwen-boxed",
        "raw",
        "<|im_start|>system\n" + BOXED_INSTRUCTION.replace("{}", "{{}}") + "<|im_end|>\n"
        "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n",
        stop=("<|im_end|>", "<|im_start|>"),
    ),
    # Alpaca, the SFT format of DART-Math and MuggleMath.
    "alpaca": SolveTemplate(
        "alpaca",
        "raw",
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n{question}\n\n### Response:\n",
        stop=("### Instruction", "\n\n### "),
    ),
    # The engine's own chat template, with the boxed instruction after the question.
    "chat": SolveTemplate("chat", "chat", "{question}\n" + BOXED_INSTRUCTION.replace("{}", "{{}}")),
}


TemplateName = Literal["deepseekmath", "qwen-boxed", "alpaca", "chat"]


def get_template(name: str) -> SolveTemplate:
    """The template called `name`; raises KeyError listing the known names."""
    if name not in TEMPLATES:
        raise KeyError(f"unknown prompt template {name!r}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]
