"""ScaleQuest question synthesis: the user-turn prefix trick and the judge / solver prompts.

A chat model prompted with only the opening of a user turn (system turn + user header, no user
text, no assistant header) continues with a user *question* (METHODS.md §3.3). `QuestionPrefix`
holds that opening, the stop strings that end the question, and the end-of-turn text that closes
a user turn in QFT training texts. Prefixes come from a preset (`PREFIX_PRESETS`) or from any
Jinja chat template (`prefix_from_chat_template`).
"""

from __future__ import annotations

from dataclasses import dataclass

from mathdata_pipeline.engines.base import Message, Request, SamplingParams, derive_seed

_SENTINELS = ("QSENTINEL0x5eedA", "QSENTINEL0x5eedB", "QSENTINEL0x5eedC")
_BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class QuestionPrefix:
    """The raw prompt that makes a chat model write a question, and how that question ends.

    `prefix`: text sent as the raw prompt (system turn + user-turn header).
    `stop`: stop strings for generation (end-of-turn and start-of-turn markers).
    `end_of_turn`: what closes a user turn; a QFT training text is prefix + question + end_of_turn.
    """

    prefix: str
    stop: tuple[str, ...]
    end_of_turn: str

    def training_text(self, question: str) -> str:
        """QFT training text of one seed question: prefix + question + end_of_turn."""
        return self.prefix + question + self.end_of_turn


PREFIX_PRESETS: dict[str, QuestionPrefix] = {
    "qwen2-math": QuestionPrefix(
        prefix="<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
        stop=("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
        end_of_turn="<|im_end|>",
    ),
    "deepseekmath": QuestionPrefix(
        prefix="<｜begin▁of▁sentence｜>User: ",
        stop=("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
        end_of_turn="\n\n<｜end▁of▁sentence｜>",
    ),
}


def _template_renderer(template_source: str, bos_token: str, eos_token: str):
    """A function (messages) -> rendered text, from a Jinja chat template in a sandbox
    (the same environment settings as engines/local.py)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:
        raise ValueError(f"chat template refused the conversation: {message}")

    env.globals["raise_exception"] = raise_exception
    template = env.from_string(template_source)
    return lambda messages: template.render(
        messages=messages, add_generation_prompt=False, bos_token=bos_token, eos_token=eos_token
    )


def _split_at(text: str, sentinel: str) -> tuple[str, str]:
    """(text before, text after) the single occurrence of `sentinel`; ValueError otherwise."""
    if text.count(sentinel) != 1:
        raise ValueError(f"chat template rendered the message text {text.count(sentinel)} times, expected once")
    before, after = text.split(sentinel)
    return before, after


def _common_prefix(a: str, b: str) -> str:
    """Longest common leading substring of `a` and `b`."""
    size = 0
    while size < min(len(a), len(b)) and a[size] == b[size]:
        size += 1
    return a[:size]


def prefix_from_chat_template(
    template_source: str, *, system: str | None = None, bos_token: str = "", eos_token: str = ""
) -> QuestionPrefix:
    """Derive the question prefix from any Jinja chat template.

    Inputs: `template_source`, the template text (GGUF `tokenizer.chat_template` metadata or a
    tokenizer's `chat_template`); `system`, a system message to include (None: whatever the
    template adds by itself when there is none); `bos_token` / `eos_token`, the values the
    template sees for those variables ("" by default, as the local engine renders: a tokenizer
    adds BOS itself).
    Output: `QuestionPrefix`. Three conversations with sentinel texts are rendered: [user],
    [user, assistant] and [user, assistant, user]. The prefix is the text before the first
    user sentinel; the user-turn end is what [user] and [user, assistant] share after it; the
    user and assistant headers are what follows each turn end. `end_of_turn` is the user-turn
    end without trailing whitespace (`<|im_end|>`), or, when that end is only whitespace (as in
    DeepSeek's "\\n\\n"), the whitespace followed by `eos_token`. `stop` holds the start-of-turn
    marker shared by the user and assistant headers (`<|im_start|>`; both stripped headers when
    they share nothing), the stripped user-turn end and `eos_token`.
    Raises ValueError when the template does not render each sentinel exactly once.
    """
    render = _template_renderer(template_source, bos_token, eos_token)
    first, reply, second = _SENTINELS
    opening = [{"role": "system", "content": system}] if system is not None else []
    user_only = render(opening + [{"role": "user", "content": first}])
    with_reply = render(opening + [{"role": "user", "content": first}, {"role": "assistant", "content": reply}])
    with_next = render(
        opening
        + [
            {"role": "user", "content": first},
            {"role": "assistant", "content": reply},
            {"role": "user", "content": second},
        ]
    )
    prefix, after_user = _split_at(user_only, first)
    _, between = _split_at(with_reply, first)
    before_reply, after_reply = _split_at(between, reply)
    _, between_next = _split_at(with_next, reply)
    before_next, _ = _split_at(between_next, second)

    user_end = _common_prefix(after_user, before_reply)
    assistant_header = before_reply[len(user_end) :]
    assistant_end = _common_prefix(after_reply, before_next)
    user_header = before_next[len(assistant_end) :]

    end_of_turn = user_end.rstrip() if user_end.strip() else user_end + eos_token
    marker = _common_prefix(user_header, assistant_header).strip()
    headers = [marker] if marker else [user_header.strip(), assistant_header.strip()]
    stop = tuple(dict.fromkeys(s for s in [*headers, user_end.strip(), eos_token] if s))
    return QuestionPrefix(prefix=prefix, stop=stop, end_of_turn=end_of_turn)


def resolve_prefix(name: str, chat_template: str | None, system: str = "") -> QuestionPrefix:
    """The prefix called `name`: a preset of `PREFIX_PRESETS`, or "auto" = derived from the engine's
    `chat_template` (ValueError when the engine does not expose one: name a preset instead).
    `system`: with "auto", a system message the prefix opens with ("" = whatever the template adds
    by itself); a preset has its own, so a `system` with a preset is a ValueError."""
    if name != "auto":
        if name not in PREFIX_PRESETS:
            raise ValueError(f"unknown prefix {name!r}; use 'auto' or one of {', '.join(PREFIX_PRESETS)}")
        if system:
            raise ValueError(f"prefix_system needs prefix 'auto'; the preset {name!r} has its own system turn")
        return PREFIX_PRESETS[name]
    if not chat_template:
        raise ValueError(
            "prefix 'auto' needs an engine that exposes its chat template (local or vllm); name a preset instead"
        )
    return prefix_from_chat_template(chat_template, system=system or None)


def synthesis_requests(
    prefix: QuestionPrefix,
    count: int,
    *,
    generator_id: str,
    shard: str,
    temperature: float = 1.0,
    top_p: float = 0.99,
    max_tokens: int = 1024,
) -> list[Request]:
    """`count` identical raw-prompt requests for question synthesis, each with its own seed.

    Inputs: the prefix; how many questions; `generator_id` and `shard` (the seed of request i is
    `derive_seed("scalequest", generator_id, shard, i)`, so shards and generators never share
    seeds); sampling settings (paper defaults: temperature 1.0, top_p 0.99, 1024 tokens).
    Output: list of `Request(prompt=prefix.prefix)` with `prefix.stop` as stop strings.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return [
        Request(
            prompt=prefix.prefix,
            params=SamplingParams(
                temperature=temperature,
                top_p=top_p,
                max_tokens=max_tokens,
                stop=prefix.stop,
                seed=derive_seed("scalequest", generator_id, shard, i),
            ),
        )
        for i in range(count)
    ]


def clean_question(text: str, prefix: QuestionPrefix) -> str:
    """The question in a generated text: cut at the first stop string or end-of-turn text
    (engines that ignore stop strings leave them in), then strip whitespace. "" when nothing
    is left."""
    cut = len(text)
    for marker in (*prefix.stop, prefix.end_of_turn.strip()):
        if marker and marker in text:
            cut = min(cut, text.index(marker))
    return text[:cut].strip()


def judge_messages(question: str) -> list[Message]:
    """Chat messages asking a judge model whether `question` is a solvable math problem.

    Output: one user message; the judge is told to reason step by step and to end with a final
    line "Verdict: Yes" or "Verdict: No" (parse it with `filters.parse_verdict`).
    """
    content = (
        "You are a professional math teacher reviewing a problem written for your students.\n\n"
        f"Problem:\n{question}\n\n"
        "Decide two things:\n"
        "1. Is this a math problem?\n"
        "2. Can it be solved from the conditions it gives? Check that no needed information is missing "
        "and that the conditions do not contradict each other. You may try to solve it to find out.\n\n"
        'Reason step by step. Then finish with one final line that is exactly "Verdict: Yes" if it is a '
        'solvable math problem, or exactly "Verdict: No" otherwise.'
    )
    return [{"role": "user", "content": content}]


def comparison_messages(original: str, rewrite: str) -> list[Message]:
    """Chat messages asking a judge whether `rewrite` is at least as hard to solve as `original`.

    Output: one user message ending in the instruction to finish with "Verdict: Yes" (the rewrite
    is as hard or harder) or "Verdict: No" (it is easier); parse it with `filters.parse_verdict`.
    """
    content = (
        "You are a professional math teacher comparing two versions of a problem.\n\n"
        f"Original problem:\n{original}\n\n"
        f"Rewritten problem:\n{rewrite}\n\n"
        "Is the rewritten problem at least as difficult to solve as the original one: does it need at "
        "least as many reasoning steps and as much mathematics? Reason briefly. Then finish with one final "
        'line that is exactly "Verdict: Yes" if it is as difficult or harder, or exactly "Verdict: No" if it '
        "is easier."
    )
    return [{"role": "user", "content": content}]


def response_messages(question: str) -> list[Message]:
    """Chat messages asking a solver for a step-by-step solution ending in \\boxed{} (the
    paper's response prompt: the question, a newline, the boxed instruction)."""
    return [{"role": "user", "content": f"{question}\n{_BOXED_INSTRUCTION}"}]
