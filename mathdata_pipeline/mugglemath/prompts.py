"""MuggleMath query-augmentation prompts: five rewrite types, GSM8K and MATH variants, and AugMATH.

MuggleMath (arXiv 2310.05506) asks a strong LLM to turn each seed question into harder or
different new questions in five ways. Here each rewrite type is its own short chat request that
asks for `k` new questions as a numbered list (parsed by
`mugglemath.parse_numbered_questions`), with one worked demonstration of that type, so a whole
prompt stays well under a 2k-token context even with a long seed question.

The wording is written for this project, in the spirit of the original prompts ("act as a math
teacher", one demonstration per type, answers not generated in this call).

AugMATH (the ACL version's MATH augmentation, `augmath_messages`) differs: the model gets a seed
question *with its solution* and proposes `k` variations, each a `QuestionN:` with a worked
`SolutionN:` ending in `\\boxed{}` and `##endN`, in one request per seed; the enabled rewrite types
are listed as the ways it may vary the problem. The new solution's answer then seeds the vote on
the new question (`responses.solution_ballots`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

Message = dict[str, str]


class RewriteType(enum.Enum):
    """MuggleMath's five query rewrites (an Enum so the Dagster launchpad offers exactly these)."""

    change_numbers = "change_numbers"
    fractions_percentages = "fractions_percentages"
    combine_concepts = "combine_concepts"
    add_condition = "add_condition"
    increase_complexity = "increase_complexity"


REWRITE_TYPES: tuple[str, ...] = tuple(t.value for t in RewriteType)
PROMPT_VARIANTS: tuple[str, ...] = ("gsm8k", "math")
AUGMATH = "augmath"


@dataclass(frozen=True)
class _Variant:
    """Everything that differs between the GSM8K and the MATH prompts."""

    system: str
    requirements: str
    demo_seed: str
    instructions: dict[str, str]
    demos: dict[str, str]


_GSM8K = _Variant(
    system=(
        "You are a math teacher who writes new practice word problems for grade-school "
        "students. You write only questions: never answers, solutions or explanations."
    ),
    requirements=(
        "Each new question must be a complete word problem that can be solved on its own and has one numeric answer."
    ),
    demo_seed=("A baker makes 24 muffins a day and sells them for $2 each. How much money does she make in 5 days?"),
    instructions={
        "change_numbers": (
            "Change some of the specific numbers so that a different calculation is needed. "
            "Keep the story and keep the numbers realistic."
        ),
        "fractions_percentages": (
            "Introduce a fraction or a percentage, for example a part of a quantity, a discount or a growth rate."
        ),
        "combine_concepts": (
            "Combine the question with another math concept (such as rates, ratios, averages, "
            "area or unit conversion) so that solving it needs both."
        ),
        "add_condition": (
            'Add a conditional statement (an "if ..." that changes a quantity) that the solver must take into account.'
        ),
        "increase_complexity": (
            "Make the question more complex: add quantities or steps so that it takes longer reasoning to solve."
        ),
    },
    demos={
        "change_numbers": (
            "A baker makes 36 muffins a day and sells them for $3 each. How much money does she make in 7 days?"
        ),
        "fractions_percentages": (
            "A baker makes 24 muffins a day and sells 3/4 of them for $2 each. How much money does she make in 5 days?"
        ),
        "combine_concepts": (
            "A baker makes 24 muffins a day and sells them for $2 each. The ingredients for "
            "each muffin cost her $0.50. What is her profit over 5 days?"
        ),
        "add_condition": (
            "A baker makes 24 muffins a day and sells them for $2 each. If it rains, she sells "
            "only half of them. It rains on 2 of the next 5 days. How much money does she make "
            "in those 5 days?"
        ),
        "increase_complexity": (
            "A baker makes 24 muffins on each weekday and 30 on each weekend day. She sells "
            "them for $2 each on weekdays and $3 each on weekends. How much money does she make "
            "in one week?"
        ),
    },
)

_MATH = _Variant(
    system=(
        "You are a mathematics teacher who writes new competition-style practice problems. "
        "You write only problems, with math in LaTeX ($...$) as in the original: never "
        "answers, solutions or explanations."
    ),
    requirements=(
        "Each new problem must be well posed, solvable on its own, have one final answer, and "
        "keep LaTeX notation for all mathematics."
    ),
    demo_seed="What is the sum of the roots of $x^2 - 5x + 6 = 0$?",
    instructions={
        "change_numbers": (
            "Change some of the specific numbers or constants so that a different computation is needed."
        ),
        "fractions_percentages": ("Introduce fractions, percentages or ratios into the problem."),
        "combine_concepts": (
            "Combine the problem with another area of mathematics (such as geometry, number "
            "theory, counting or probability) so that solving it needs both."
        ),
        "add_condition": (
            "Add a conditional statement or a constraint (for example on a variable or a "
            "case) that the solver must take into account."
        ),
        "increase_complexity": (
            "Make the problem more complex: more steps, a more general setting or an extra quantity to compute."
        ),
    },
    demos={
        "change_numbers": "What is the sum of the roots of $x^2 - 9x + 14 = 0$?",
        "fractions_percentages": ("What is the sum of the roots of $\\frac{1}{2}x^2 - 5x + 6 = 0$?"),
        "combine_concepts": (
            "The roots of $x^2 - 5x + 6 = 0$ are the side lengths of a rectangle. What is the length of its diagonal?"
        ),
        "add_condition": (
            "Let $k$ be a positive integer. If $x^2 - kx + 6 = 0$ has two distinct integer "
            "roots, what is the largest possible sum of the roots?"
        ),
        "increase_complexity": ("If $r$ and $s$ are the roots of $x^2 - 5x + 6 = 0$, what is $r^3 + s^3$?"),
    },
)

_VARIANTS = {"gsm8k": _GSM8K, "math": _MATH}


def rewrite_messages(question: str, rewrite_type: str, *, k: int = 3, variant: str = "gsm8k") -> list[Message]:
    """Chat messages asking for `k` new questions of one rewrite type from one seed question.

    Inputs: `question`, the seed question text (kept verbatim, LaTeX included);
    `rewrite_type`, one of `REWRITE_TYPES`; `k` (>= 1), how many new questions to ask for;
    `variant`, `"gsm8k"` (word problems) or `"math"` (competition problems in LaTeX).
    Output: `[{"role": "system", ...}, {"role": "user", ...}]`. The user message holds the
    instruction for the type, one demonstration rewrite, the seed and the output format: a
    numbered list `1. ...`, `2. ...` of questions without answers. Raises ValueError for an
    unknown type or variant, or `k < 1`.
    """
    if variant not in _VARIANTS:
        raise ValueError(f"unknown prompt variant {variant!r}; expected one of {PROMPT_VARIANTS}")
    if rewrite_type not in REWRITE_TYPES:
        raise ValueError(f"unknown rewrite type {rewrite_type!r}; expected one of {REWRITE_TYPES}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    spec = _VARIANTS[variant]
    noun = "question" if k == 1 else "questions"
    user = (
        f"Write {k} new {noun} based on the seed question below. "
        f"{spec.instructions[rewrite_type]} {spec.requirements}\n\n"
        f"Example of this kind of rewrite:\n"
        f"Seed: {spec.demo_seed}\n"
        f"New: {spec.demos[rewrite_type]}\n\n"
        f"Seed question:\n{question.strip()}\n\n"
        f"Reply with exactly {k} new {noun} as a numbered list (1. ...), one question per "
        f"item, and do not answer them."
    )
    return [{"role": "system", "content": spec.system}, {"role": "user", "content": user}]


def rewrite_prompts(
    question: str, *, types: Iterable[str] = REWRITE_TYPES, k: int = 3, variant: str = "gsm8k"
) -> dict[str, list[Message]]:
    """One chat request per enabled rewrite type for one seed question.

    Inputs: `question`, the seed; `types`, the enabled rewrite types (any subset of
    `REWRITE_TYPES`, in any order; this is how a caller switches types on and off); `k` and
    `variant` as in `rewrite_messages`. Output: `{rewrite_type: messages}` in `REWRITE_TYPES`
    order. Raises ValueError for an unknown type name.
    """
    enabled = set(types)
    unknown = enabled.difference(REWRITE_TYPES)
    if unknown:
        raise ValueError(f"unknown rewrite types {sorted(unknown)}; expected {REWRITE_TYPES}")
    return {name: rewrite_messages(question, name, k=k, variant=variant) for name in REWRITE_TYPES if name in enabled}


_AUGMATH_SYSTEM = (
    "You are a mathematics teacher who writes new competition-style practice problems, each with a complete "
    "worked solution. Write all mathematics in LaTeX ($...$)."
)
_AUGMATH_DEMO = (
    "Problem: What is the sum of the roots of $x^2 - 5x + 6 = 0$?\n"
    "Solution: By Vieta's formulas the sum of the roots is $5$, so the answer is $\\boxed{5}$.\n"
    "Question1: If $r$ and $s$ are the roots of $x^2 - 5x + 6 = 0$, what is $r^2 + s^2$?\n"
    "Solution1: $r + s = 5$ and $rs = 6$, so $r^2 + s^2 = (r+s)^2 - 2rs = 25 - 12 = 13$. "
    "The answer is $\\boxed{13}$. ##end1"
)


def augmath_messages(
    question: str, solution: str, *, types: Iterable[str] = REWRITE_TYPES, k: int = 5
) -> list[Message]:
    """AugMATH: chat messages asking for `k` variations of a seed problem, each with its solution.

    Inputs: `question` and `solution`, the seed problem and its worked solution (kept verbatim);
    `types`, the enabled rewrite types (any non-empty subset of `REWRITE_TYPES`), listed as the
    ways to vary the problem; `k` (>= 1). Output: `[system, user]` messages asking for the format
    `Question1: ...` / `Solution1: ... \\boxed{answer} ##end1`, ..., parsed by
    `parsing.parse_question_solution_pairs`. Raises ValueError for an unknown or empty type list,
    an empty solution or `k < 1`.
    """
    enabled = [name for name in REWRITE_TYPES if name in set(types)]
    unknown = set(types).difference(REWRITE_TYPES)
    if unknown or not enabled:
        raise ValueError(f"AugMATH needs known rewrite types from {REWRITE_TYPES}, got {sorted(set(types))}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not solution or not solution.strip():
        raise ValueError("AugMATH needs the seed's solution")
    ways = "\n".join(f"- {_MATH.instructions[name]}" for name in enabled)
    user = (
        f"Propose {k} variations of the problem below for training students, each with a complete solution. "
        f"Ways to vary it:\n{ways}\n{_MATH.requirements} End every solution with its final answer in "
        f"\\boxed{{}} and the marker ##endN.\n\n"
        f"Example:\n{_AUGMATH_DEMO}\n\n"
        f"Problem: {question.strip()}\nSolution: {solution.strip()}\n\n"
        f"Write exactly {k} variations, Question1/Solution1 to Question{k}/Solution{k}, in the format of the example."
    )
    return [{"role": "system", "content": _AUGMATH_SYSTEM}, {"role": "user", "content": user}]
