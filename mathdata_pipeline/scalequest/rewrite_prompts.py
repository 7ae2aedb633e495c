"""ScaleQuest QPO data: the two question-rewrite prompts, their output parser, and preference pairs.

In ScaleQuest's question preference optimisation (METHODS.md §3.3 Step 2) an optimizer LLM
(GPT-4o-mini in the paper, any chat model here) rewrites each question the QFT generator wrote; the
rewrite becomes the preferred ("chosen") question and the original the "rejected" one for DPO.
Before a pair is kept, a judge checks the chosen side (`judge_pairs`): the rewrite must be a
solvable math problem and no easier than the original, the two properties QPO is meant to teach
(the paper measures both before and after optimisation, Fig. 4); failures are counted by reason.

Two rewrite prompts exist, named here by what they ask for:
- "difficulty": an Evol-style "make it harder" prompt. The model lists ways to make the problem
  more complex, makes a plan, rewrites the problem adding at most 10 to 20 words, and writes the
  result after `#Finally Rewritten Problem#:`.
- "solvability": the model checks that the text is a math question, solves it, checks that it can
  be solved from what is given, then rewrites it as a multi-step problem with one numeric answer that
  restates every piece of information it needs, and writes the result after `FINAL QUESTION:`.

The repository's file `question_optim/prompts.py` appears to swap the two names (its
"solvability_optimization_prompt" is the Evol-style one). This module names each prompt by its
content, as above. The wording below is this project's own, following the paper's description.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mathdata_pipeline.common.text import normalize_text
from mathdata_pipeline.engines.base import Completion, Request, SamplingParams
from mathdata_pipeline.engines.runner import GenerateFn
from mathdata_pipeline.scalequest.filters import parse_verdict, reference_verdict
from mathdata_pipeline.scalequest.prefix import (
    QuestionPrefix,
    clean_question,
    comparison_messages,
    judge_messages,
    synthesis_requests,
)

Message = dict[str, str]

REWRITE_KINDS: tuple[str, ...] = ("difficulty", "solvability")

_DIFFICULTY_PROMPT = """You are an expert at writing challenging math problems. Rewrite the problem below \
into a harder version that an advanced student would still find well posed.

Work in four steps:
Step 1 #Methods List#: list several ways to make the problem more complex, for example another \
constraint, an extra quantity to track, one more reasoning step, or a less direct question.
Step 2 #Plan#: choose methods from the list and plan how to apply them to this problem.
Step 3 #Rewritten Problem#: write the new problem following the plan. Add no more than 10 to 20 \
words to the original, keep it self-contained and solvable, and do not give the answer.
Step 4 #Finally Rewritten Problem#: review the rewritten problem, fix anything unclear or \
unreasonable, and write only the final problem.

Answer in this format:
Step 1 #Methods List#:
Step 2 #Plan#:
Step 3 #Rewritten Problem#:
Step 4 #Finally Rewritten Problem#:

#Problem#:
{question}"""

_SOLVABILITY_PROMPT = """You are a careful math teacher who checks and improves practice questions.

Question:
{question}

Go through these steps:
1. Decide whether the text is a math question. If it is not, turn it into a closely related one.
2. Try to solve it, showing your reasoning.
3. Check whether it can be solved from the information given: look for missing quantities, \
contradictions, ambiguous wording, or more than one possible answer.
4. Rewrite the question so that it is clearly solvable, needs several reasoning steps, and has \
exactly one numeric answer. State every piece of information needed to solve it inside the \
question itself, and do not include the answer or any hints.

End your reply with the rewritten question on its own, after the line "FINAL QUESTION:"."""

_PROMPTS = {"difficulty": _DIFFICULTY_PROMPT, "solvability": _SOLVABILITY_PROMPT}

# Markdown decoration models put around the markers: bold/italic stars or underscores, headings.
_DECORATION = r"[ \t*_#>]*"
_MARKERS = {
    # "#Finally Rewritten Problem#:" often follows "Step 4" on the same line, so it is not anchored.
    "difficulty": re.compile(r"#?\s*Finally\s+Rewritten\s+Problem\s*#?" + _DECORATION + r":?[ \t*_]*", re.IGNORECASE),
    # Upper-case "FINAL QUESTION" anywhere; other casings only at the start of a line, so prose such as
    # "the final question asks" is not taken.
    "solvability": re.compile(
        r"(?:^" + _DECORATION + r"(?i:final\s+question)|FINAL\s+QUESTION)[ \t*_#]*:?[ \t*_]*", re.MULTILINE
    ),
}

DROP_REASONS: tuple[str, ...] = ("parse_failed", "empty", "unchanged")
JUDGE_DROP_REASONS: tuple[str, ...] = ("judge_unsolvable", "judge_easier")


def _check_kind(kind: str) -> None:
    if kind not in _PROMPTS:
        raise ValueError(f"unknown rewrite kind {kind!r}; expected one of {REWRITE_KINDS}")


def rewrite_messages(question: str, kind: str) -> list[Message]:
    """Chat messages asking an optimizer LLM to rewrite `question`.

    `kind` is "difficulty" (Evol-style, answer after `#Finally Rewritten Problem#:`) or
    "solvability" (check, solve, make solvable; answer after `FINAL QUESTION:`). Output: a single
    user message. Raises ValueError for an unknown kind or an empty question.
    """
    _check_kind(kind)
    if not question.strip():
        raise ValueError("question is empty")
    return [{"role": "user", "content": _PROMPTS[kind].format(question=question.strip())}]


def parse_rewrite(text: str, kind: str) -> str | None:
    """The rewritten question in an optimizer reply, or None.

    Takes the text after the last `kind` marker (`#Finally Rewritten Problem#:` for "difficulty",
    `FINAL QUESTION:` for "solvability"; in another casing it must start a line), tolerant of
    Markdown around the marker (`**FINAL QUESTION:**`, `### FINAL QUESTION`,
    `**#Finally Rewritten Problem#:**`, a missing colon). Surrounding whitespace and bold/italic
    stars around the question are removed. Returns None when the marker is missing or
    nothing follows it.
    """
    _check_kind(kind)
    matches = list(_MARKERS[kind].finditer(text))
    if not matches:
        return None
    rewritten = text[matches[-1].end() :].strip().strip("*").strip()
    return rewritten or None


def preference_pairs(
    originals: Sequence[str], rewrites: Sequence[str | None]
) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Build DPO pairs (chosen, rejected) = (rewritten question, original question).

    Inputs: `originals`, the generated questions; `rewrites`, for each the parsed rewrite
    (`parse_rewrite` output; None when parsing failed), in the same order. A row is dropped when the
    rewrite is None ("parse_failed"), blank ("empty"), or equal to the original after
    `normalize_text` ("unchanged"). Output: the pairs in input order and the drop count for every
    reason in DROP_REASONS (zeros included). Raises ValueError when the lengths differ or an
    original question is empty (naming the row).
    """
    if len(originals) != len(rewrites):
        raise ValueError(f"{len(originals)} originals but {len(rewrites)} rewrites")
    pairs: list[tuple[str, str]] = []
    dropped = dict.fromkeys(DROP_REASONS, 0)
    for row, (original, rewrite) in enumerate(zip(originals, rewrites)):
        if not original or not original.strip():
            raise ValueError(f"row {row}: original question is empty")
        if rewrite is None:
            dropped["parse_failed"] += 1
        elif not rewrite.strip():
            dropped["empty"] += 1
        elif normalize_text(rewrite) == normalize_text(original):
            dropped["unchanged"] += 1
        else:
            pairs.append((rewrite.strip(), original.strip()))
    return pairs, dropped


def judge_pairs(
    pairs: Sequence[tuple[str, str]], judge: GenerateFn, *, max_tokens: int, any_yes: bool = False
) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Keep the (chosen, rejected) pairs whose chosen rewrite the judge finds solvable
    (`prefix.judge_messages`) and no easier than the original (`prefix.comparison_messages`).

    Inputs: the pairs; `judge`, bound to the judge's engine profile (greedy, seed 0); the judge's
    token cap; `any_yes`, the paper's rule (any "yes" in the text passes) instead of the final
    verdict (`filters.parse_verdict`; no verdict fails). Output: (kept pairs in order, counts:
    `judged`, `judge_unsolvable`, `judge_easier`; a pair that fails both counts as unsolvable).
    """
    greedy = SamplingParams(temperature=0.0, max_tokens=max_tokens, seed=0)
    requests = [Request.chat(judge_messages(chosen), greedy) for chosen, _ in pairs]
    requests += [Request.chat(comparison_messages(rejected, chosen), greedy) for chosen, rejected in pairs]
    results = judge(requests, None)

    def yes(result) -> bool:
        text = result.text if isinstance(result, Completion) else ""
        return reference_verdict(text) if any_yes else parse_verdict(text) == "yes"

    counts = {"judged": len(pairs), **dict.fromkeys(JUDGE_DROP_REASONS, 0)}
    kept = []
    for i, pair in enumerate(pairs):
        if not yes(results[i]):
            counts["judge_unsolvable"] += 1
        elif not yes(results[len(pairs) + i]):
            counts["judge_easier"] += 1
        else:
            kept.append(pair)
    return kept, counts


def qpo_preference_data(
    prefix: QuestionPrefix,
    *,
    questions: int,
    question_max_tokens: int,
    rewrite_kind: str,
    rewrite_max_tokens: int,
    generate_questions: GenerateFn,
    rewrite: GenerateFn,
    judge: GenerateFn | None = None,
    judge_max_tokens: int = 2048,
    judge_any_yes: bool = False,
) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """QPO's training pairs (METHODS.md §3.3 Step 2): the QFT model writes `questions` questions
    (`generate_questions`, bound to the QFT model), the optimizer LLM rewrites each one greedily
    for `rewrite_kind` ("solvability" or "difficulty"; `rewrite`, bound to the optimizer's
    profile), and every rewrite that parses becomes (chosen = rewrite, rejected = original); with
    a `judge`, only the pairs that pass `judge_pairs` are kept.
    Output: (pairs, counts of dropped rewrites by reason, plus `judged` when a judge ran)."""
    requests = synthesis_requests(prefix, questions, generator_id="qft", shard="qpo", max_tokens=question_max_tokens)
    originals = [
        clean_question(r.text, prefix) if isinstance(r, Completion) else "" for r in generate_questions(requests, None)
    ]
    originals = [q for q in originals if q]
    greedy = SamplingParams(temperature=0.0, max_tokens=rewrite_max_tokens, seed=0)
    rewrites = rewrite([Request.chat(rewrite_messages(q, rewrite_kind), greedy) for q in originals], None)
    pairs, dropped = preference_pairs(
        originals, [parse_rewrite(r.text, rewrite_kind) if isinstance(r, Completion) else None for r in rewrites]
    )
    if judge is None or not pairs:
        return pairs, dropped
    pairs, judged = judge_pairs(pairs, judge, max_tokens=judge_max_tokens, any_yes=judge_any_yes)
    return pairs, {**dropped, **judged}
