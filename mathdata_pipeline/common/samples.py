"""Sample rows: one LLM response to one problem, with how it was made and how it graded.

Columns follow DESIGN.md ("sample"): sample_id, problem_id, model, template, temperature, top_p,
seed, text, finish_reason, prompt_tokens, completion_tokens, extracted_answer, correct, grader;
plus round, sample_index and error (the reason a request produced no text).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

from mathdata_pipeline.common.templates import SolveTemplate
from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.engines.base import Completion, Request, RequestError, SamplingParams, derive_seed
from mathdata_pipeline.engines.runner import GenerateFn

SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("model", pa.string()),
        pa.field("template", pa.string()),
        pa.field("temperature", pa.float32()),
        pa.field("top_p", pa.float32()),
        pa.field("max_tokens", pa.int32()),
        pa.field("seed", pa.int64()),
        pa.field("round", pa.int32()),
        pa.field("sample_index", pa.int32()),
        pa.field("text", pa.string()),
        pa.field("finish_reason", pa.string()),
        pa.field("prompt_tokens", pa.int32()),
        pa.field("completion_tokens", pa.int32()),
        pa.field("extracted_answer", pa.string()),
        pa.field("correct", pa.bool_()),
        pa.field("grader", pa.string()),
        pa.field("error", pa.string()),
    ]
)


@dataclass(frozen=True)
class SampleSpec:
    """One sample to draw: which problem, which attempt (index across all rounds), which round."""

    problem_id: str
    question: str
    sample_index: int
    round: int


def solve_request(template: SolveTemplate, spec: SampleSpec, params: SamplingParams, *, seed_salt: str = "") -> Request:
    """The request for one sample; its seed derives from (salt, problem, sample index), so the
    same attempt always has the same seed and a rerun hits the ledger."""
    seeded = SamplingParams(
        temperature=params.temperature,
        top_p=params.top_p,
        max_tokens=params.max_tokens,
        stop=tuple(params.stop) + template.stop,
        seed=derive_seed(seed_salt, spec.problem_id, spec.sample_index),
    )
    if template.kind == "chat":
        return Request.chat(template.messages(spec.question), seeded)
    return Request(prompt=template.prompt(spec.question), params=seeded)


def sample_id(problem_id: str, model: str, template: str, params: SamplingParams, sample_index: int) -> str:
    """Stable id of a sample: hash of problem, model, template, sampling parameters, sample index."""
    return stable_hash("sample", problem_id, model, template, repr(sorted(params.as_dict().items())), str(sample_index))


def sample_rows(
    specs: Sequence[SampleSpec],
    requests: Sequence[Request],
    results: Sequence[Completion | RequestError],
    *,
    model: str,
    template: str,
    extracted: Sequence[str | None],
    correct: Sequence[bool | None],
    grader: str,
) -> pa.Table:
    """Rows of SAMPLE_SCHEMA for drawn samples. `extracted` and `correct` are aligned with
    `specs` (None where a request failed or nothing was graded)."""
    rows = []
    for spec, request, result, answer, ok in zip(specs, requests, results, extracted, correct, strict=True):
        p = request.params
        done = isinstance(result, Completion)
        rows.append(
            {
                "sample_id": sample_id(spec.problem_id, model, template, p, spec.sample_index),
                "problem_id": spec.problem_id,
                "model": model,
                "template": template,
                "temperature": p.temperature,
                "top_p": p.top_p,
                "max_tokens": p.max_tokens,
                "seed": p.seed,
                "round": spec.round,
                "sample_index": spec.sample_index,
                "text": result.text if done else None,
                "finish_reason": result.finish_reason if done else None,
                "prompt_tokens": result.prompt_tokens if done else None,
                "completion_tokens": result.completion_tokens if done else None,
                "extracted_answer": answer,
                "correct": ok,
                "grader": grader if done else None,
                "error": None if done else f"{result.reason}: {result.message}",
            }
        )
    return pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)


GradeFn = Callable[[list[tuple[str, str, str | None]]], list]


def draw_samples(
    specs: Sequence[SampleSpec],
    *,
    template: SolveTemplate,
    params: SamplingParams,
    seed_salt: str,
    model: str,
    generate: GenerateFn,
    references: Mapping[str, str | None] | None = None,
    grade: GradeFn | None = None,
    grader: str = "mathdata-grader",
) -> pa.Table:
    """Draw one sample per spec and return its rows: requests (seeded by `seed_salt`, problem and
    sample index), generation through `generate` (the ledger-backed `llm` resource), and, when
    `grade` and `references` ({problem_id: reference answer}) are given, a verdict per completed
    sample (`grade` is `Grader.grade_many`). Without them `extracted_answer` and `correct` stay
    null and `grader` is left for a vote to fill. Output: SAMPLE_SCHEMA rows aligned with `specs`.
    """
    if not specs:
        return SAMPLE_SCHEMA.empty_table()
    requests = [solve_request(template, s, params, seed_salt=seed_salt) for s in specs]
    results = generate(requests, [f"{s.problem_id}#{s.sample_index}" for s in specs])
    extracted: list[str | None] = [None] * len(specs)
    correct: list[bool | None] = [None] * len(specs)
    if grade is not None and references is not None:
        done = [i for i, r in enumerate(results) if isinstance(r, Completion)]
        verdicts = grade(
            [(results[i].text, references[specs[i].problem_id] or "", results[i].finish_reason) for i in done]
        )
        for i, verdict in zip(done, verdicts):
            extracted[i], correct[i] = verdict.extracted, verdict.correct
    return sample_rows(
        specs,
        requests,
        results,
        model=model,
        template=template.name,
        extracted=extracted,
        correct=correct,
        grader=grader if grade is not None else "majority-vote",
    )
