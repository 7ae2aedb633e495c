"""MuggleMath query augmentation and the responses that give augmented questions an answer.

Plain functions around `mugglemath` (prompts, parsers, dedup): requests for every (seed, rewrite
type, round) — or, for AugMATH, every (seed, round) — and new problem rows from the replies. Each
round runs on its own engine profile (the paper's three rounds use GPT-3.5, GPT-4 and GPT-3.5 on
the same seeds); the round and the model that wrote a question are kept in its `source_record`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

from mathdata_pipeline.common.text import problem_id
from mathdata_pipeline.engines.base import Completion, Request, RequestError, SamplingParams, derive_seed
from mathdata_pipeline.mugglemath.dedup import dedup_questions
from mathdata_pipeline.mugglemath.parsing import parse_numbered_questions, parse_question_solution_pairs
from mathdata_pipeline.mugglemath.prompts import AUGMATH, augmath_messages, rewrite_messages
from mathdata_pipeline.sources.problems import PROBLEM_SCHEMA


@dataclass(frozen=True)
class RewriteJob:
    """One rewrite request: which seed, which type ("augmath" for an AugMATH request), which round."""

    parent_id: str
    rewrite_type: str
    round: int
    request: Request


def rewrite_jobs(
    seeds: pa.Table, *, types: Sequence[str], k: int, rounds: int, variant: str, params: SamplingParams, salt: str
) -> tuple[list[RewriteJob], dict[str, int]]:
    """The requests of `rounds` rounds over `seeds`, each with its own derived seed.

    Variants "gsm8k" and "math" ask for `k` new questions per (seed, enabled type, round);
    "augmath" asks for `k` question–solution variations per (seed, round), listing the enabled types,
    and skips (and counts as `skipped_no_solution`) seeds without a reference solution.
    Output: (jobs in round-major order, counts).
    """
    jobs, counts = [], Counter()
    rows = seeds.select(["problem_id", "question", "reference_solution"]).to_pylist()
    for round_ in range(rounds):
        for row in rows:
            if variant == AUGMATH:
                if not row["reference_solution"]:
                    counts["skipped_no_solution"] += round_ == 0
                    continue
                messages = augmath_messages(row["question"], row["reference_solution"], types=types, k=k)
                jobs.append(_job(row["problem_id"], AUGMATH, round_, messages, params, salt))
                continue
            for rewrite_type in types:
                messages = rewrite_messages(row["question"], rewrite_type, k=k, variant=variant)
                jobs.append(_job(row["problem_id"], rewrite_type, round_, messages, params, salt))
    return jobs, dict(counts)


def _job(parent: str, rewrite_type: str, round_: int, messages, params: SamplingParams, salt: str) -> RewriteJob:
    seeded = SamplingParams(
        params.temperature,
        params.top_p,
        params.max_tokens,
        params.stop,
        derive_seed(salt, parent, rewrite_type, round_),
    )
    return RewriteJob(parent, rewrite_type, round_, Request.chat(messages, seeded))


def new_problems(
    seeds: pa.Table,
    jobs: Sequence[RewriteJob],
    results: Sequence[Completion | RequestError],
    *,
    source: str,
    k: int,
    params_hash: str,
    models: Mapping[int, str],
) -> tuple[pa.Table, dict[str, int]]:
    """Parse every reply, deduplicate against the seeds and each other (earlier rounds first), and
    build problem rows: origin "augmented", parent_problem_id, method "mugglemath:<type>", no
    reference answer yet; an AugMATH row carries the new solution as `reference_solution`.
    `models` maps each round to the model id that wrote it; `source_record` is JSON with the
    round, model, rewrite type and the request's seed, temperature, top_p and max_tokens.
    Counts: questions parsed, request errors and parse failures per type, duplicates dropped by
    reason, questions per round."""
    seed_rows = {r["problem_id"]: r for r in seeds.to_pylist()}
    counts: Counter[str] = Counter()
    candidates: list[tuple[str, str | None, RewriteJob]] = []
    for job, result in zip(jobs, results, strict=True):
        if isinstance(result, RequestError):
            counts[f"request_errors/{job.rewrite_type}"] += 1
            continue
        if job.rewrite_type == AUGMATH:
            pairs = parse_question_solution_pairs(result.text, expected=k, finish_reason=result.finish_reason)
            failure, found = pairs.failure, pairs.pairs
        else:
            parsed = parse_numbered_questions(result.text, expected=k, finish_reason=result.finish_reason)
            failure, found = parsed.failure, [(q, None) for q in parsed.questions]
        if failure:
            counts[f"parse_failures/{job.rewrite_type}"] += 1
        candidates += [(question, solution, job) for question, solution in found]
    counts["questions_parsed"] = len(candidates)
    kept, dropped = dedup_questions([c[0] for c in candidates], seeds.column("question").to_pylist())
    for _, reason in dropped:
        counts[f"dropped_{reason}"] += 1
    rows = []
    for i in kept:
        question, solution, job = candidates[i]
        parent_row = seed_rows[job.parent_id]
        counts[f"questions/round_{job.round}"] += 1
        p = job.request.params
        record = {"round": job.round, "model": models[job.round], "rewrite_type": job.rewrite_type, "seed": p.seed}
        record.update(temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens)
        rows.append(
            {
                "problem_id": problem_id(f"{source}/augmented", question),
                "source": source,
                "split": "train",
                "question": question,
                "reference_answer": None,
                "reference_solution": solution,
                "level": parent_row["level"],
                "subject": parent_row["subject"],
                "license": parent_row["license"],
                "origin": "augmented",
                "parent_problem_id": job.parent_id,
                "method": f"mugglemath:{job.rewrite_type}",
                "method_params_hash": params_hash,
                "source_id": None,
                "source_record": json.dumps(record),
            }
        )
    return pa.Table.from_pylist(rows, schema=PROBLEM_SCHEMA), dict(counts)
