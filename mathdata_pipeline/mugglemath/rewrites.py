"""MuggleMath query augmentation and the responses that give augmented questions an answer.

Plain functions around `mugglemath` (prompts, parser, dedup, vote, calculator check): requests
for every (seed, rewrite type, round), new problem rows from the replies, and the vote over
sampled responses of each new question.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from mathdata_pipeline.common.text import problem_id
from mathdata_pipeline.engines.base import Completion, Request, RequestError, SamplingParams, derive_seed
from mathdata_pipeline.mugglemath.dedup import dedup_questions
from mathdata_pipeline.mugglemath.parsing import parse_numbered_questions
from mathdata_pipeline.mugglemath.prompts import rewrite_messages
from mathdata_pipeline.sources.problems import PROBLEM_SCHEMA


@dataclass(frozen=True)
class RewriteJob:
    """One rewrite request: which seed, which type, which round."""

    parent_id: str
    rewrite_type: str
    round: int
    request: Request


def rewrite_jobs(
    seeds: pa.Table, *, types: Sequence[str], k: int, rounds: int, variant: str, params: SamplingParams, salt: str
) -> list[RewriteJob]:
    """A request for every (seed, enabled type, round); each has its own derived seed."""
    jobs = []
    for row in seeds.select(["problem_id", "question"]).to_pylist():
        for rewrite_type in types:
            for round_ in range(rounds):
                seeded = SamplingParams(
                    params.temperature,
                    params.top_p,
                    params.max_tokens,
                    params.stop,
                    derive_seed(salt, row["problem_id"], rewrite_type, round_),
                )
                request = Request.chat(rewrite_messages(row["question"], rewrite_type, k=k, variant=variant), seeded)
                jobs.append(RewriteJob(row["problem_id"], rewrite_type, round_, request))
    return jobs


def new_problems(
    seeds: pa.Table,
    jobs: Sequence[RewriteJob],
    results: Sequence[Completion | RequestError],
    *,
    source: str,
    k: int,
    params_hash: str,
) -> tuple[pa.Table, dict[str, int]]:
    """Parse every reply, deduplicate against the seeds and each other, and build problem rows
    (origin "augmented", parent_problem_id, method "mugglemath:<type>", no reference answer yet).
    Counts: generated questions, parse failures per type, duplicates dropped by reason."""
    seed_rows = {r["problem_id"]: r for r in seeds.to_pylist()}
    counts: Counter[str] = Counter()
    candidates: list[tuple[str, str, str]] = []
    for job, result in zip(jobs, results):
        if isinstance(result, RequestError):
            counts[f"request_errors/{job.rewrite_type}"] += 1
            continue
        parsed = parse_numbered_questions(result.text, expected=k, finish_reason=result.finish_reason)
        if parsed.failure:
            counts[f"parse_failures/{job.rewrite_type}"] += 1
        for question in parsed.questions:
            candidates.append((question, job.parent_id, job.rewrite_type))
    counts["questions_parsed"] = len(candidates)
    kept, dropped = dedup_questions([c[0] for c in candidates], seeds.column("question").to_pylist())
    for _, reason in dropped:
        counts[f"dropped_{reason}"] += 1
    rows = []
    for i in kept:
        question, parent, rewrite_type = candidates[i]
        parent_row = seed_rows[parent]
        rows.append(
            {
                "problem_id": problem_id(f"{source}/augmented", question),
                "source": source,
                "split": "train",
                "question": question,
                "reference_answer": None,
                "reference_solution": None,
                "level": parent_row["level"],
                "subject": parent_row["subject"],
                "license": parent_row["license"],
                "origin": "augmented",
                "parent_problem_id": parent,
                "method": f"mugglemath:{rewrite_type}",
                "method_params_hash": params_hash,
                "source_id": None,
                "source_record": None,
            }
        )
    return pa.Table.from_pylist(rows, schema=PROBLEM_SCHEMA), dict(counts)
