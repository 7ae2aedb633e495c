"""Math answer grading: extraction, normalization and equivalence checks (no Dagster import).

Public API:

- `extract_answer(text, *, fallback_last_number=True, boxes="all")` -> raw final answer or None;
  `extract_with_step(...)` -> (answer, step), the step one of `STEPS` (boxed, boxes, hashes,
  marker, math_span, last_number).
- `reference_answer_from_solution(solution, style)` -> reference answer of a GSM8K ("gsm8k")
  or MATH ("boxed") solution.
- `normalize_answer(answer)` / `clean_answer(answer)` -> canonical / cleaned answer strings.
- `grade(response, reference, *, finish_reason=None, ...)` -> `GradeResult`, in-process.
- `Grader(timeout_s=5.0, workers=2, ...)` -> context manager whose `grade_many(items)` runs
  symbolic checks in worker processes with a hard per-item time limit.
- `Tolerance(rel=1e-9, abs=1e-8)` for the numeric check.

math-verify (and sympy) is imported on the first symbolic check, so importing this package
for extraction only is cheap.
"""

from .extract import STEPS, extract_answer, extract_with_step, final_boxes, last_boxed, reference_answer_from_solution
from .grader import TRUNCATED_FINISH_REASONS, Grader, GradeResult, grade
from .normalize import clean_answer, normalize_answer, strip_thousands
from .numeric import Tolerance

__all__ = [
    "STEPS",
    "TRUNCATED_FINISH_REASONS",
    "GradeResult",
    "Grader",
    "Tolerance",
    "clean_answer",
    "extract_answer",
    "extract_with_step",
    "final_boxes",
    "grade",
    "last_boxed",
    "normalize_answer",
    "reference_answer_from_solution",
    "strip_thousands",
]
