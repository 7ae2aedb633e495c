"""MuggleMath query augmentation and the responses that give augmented questions an answer.

Plain functions around `mugglemath` (prompts, parser, dedup, vote, calculator check): requests
for every (seed, rewrite type, round), new problem rows from the replies, and the vote over
sampled responses of each new question.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from mathdata_pipeline.engines.base import Completion, Request, RequestError, SamplingParams, derive_seed
from mathdata_pipeline.methods.grading import extract_answer, normalize_answer
from mathdata_pipeline.methods.mugglemath import (check_calculator_annotations, dedup_by_equations, dedup_questions,
                                                  majority_answer, parse_numbered_questions)
from mathdata_pipeline.methods.mugglemath_prompts import rewrite_messages
from mathdata_pipeline.methods.problems import PROBLEM_SCHEMA
from mathdata_pipeline.methods.text import problem_id, stable_hash


@dataclass(frozen=True)
class RewriteJob:
    """One rewrite request: which seed, which type, which round."""

    parent_id: str
    rewrite_type: str
    round: int
    request: Request


def rewrite_jobs(seeds: pa.Table, *, types: Sequence[str], k: int, rounds: int, variant: str,
                 params: SamplingParams, salt: str) -> list[RewriteJob]:
    """A request for every (seed, enabled type, round); each has its own derived seed."""
    jobs = []
    for row in seeds.select(["problem_id", "question"]).to_pylist():
        for rewrite_type in types:
            for round_ in range(rounds):
                seeded = SamplingParams(params.temperature, params.top_p, params.max_tokens, params.stop,
                                        derive_seed(salt, row["problem_id"], rewrite_type, round_))
                request = Request.chat(rewrite_messages(row["question"], rewrite_type, k=k, variant=variant), seeded)
                jobs.append(RewriteJob(row["problem_id"], rewrite_type, round_, request))
    return jobs


def new_problems(seeds: pa.Table, jobs: Sequence[RewriteJob], results: Sequence[Completion | RequestError], *,
                 source: str, k: int, params_hash: str) -> tuple[pa.Table, dict[str, int]]:
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
        rows.append({"problem_id": problem_id(f"{source}/augmented", question), "source": source, "split": "train",
                     "question": question, "reference_answer": None, "reference_solution": None,
                     "level": parent_row["level"], "subject": parent_row["subject"], "license": parent_row["license"],
                     "origin": "augmented", "parent_problem_id": parent, "method": f"mugglemath:{rewrite_type}",
                     "method_params_hash": params_hash, "source_id": None, "source_record": None})
    return pa.Table.from_pylist(rows, schema=PROBLEM_SCHEMA), dict(counts)


def params_hash(config: dict) -> str:
    """Hash of a stage's configuration (stored in `method_params_hash`)."""
    return stable_hash("params", json.dumps(config, sort_keys=True))


def vote_columns(samples: pa.Table, *, check_annotations: bool, min_agreement: float) -> tuple[pa.Table, dict[str, int]]:
    """Add `majority_answer`, `agreement`, `annotation_ok` and `kept` to the response samples.

    Per question: answers are extracted from every response, the majority answer wins when its
    share of all responses reaches `min_agreement` (else `majority_answer` is null); a response is
    kept when it agrees with the winner, its GSM8K calculator annotations hold (when
    `check_annotations`; parsed, never evaluated as code) and its equation sequence is new.
    """
    rows = samples.to_pylist()
    by_question: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_question.setdefault(row["problem_id"], []).append(i)
    counts: Counter[str] = Counter()
    for indices in by_question.values():
        answers = [extract_answer(rows[i]["text"]) if rows[i]["text"] else None for i in indices]
        vote = majority_answer(answers, min_agreement=min_agreement)
        counts["questions_with_answer" if vote.answer is not None else "questions_without_agreement"] += 1
        candidates = []
        for i, answer in zip(indices, answers):
            row = rows[i]
            row["extracted_answer"] = answer
            row["majority_answer"], row["agreement"] = vote.answer, vote.agreement
            row["annotation_ok"] = check_calculator_annotations(row["text"]).ok if (check_annotations and row["text"]) else None
            agrees = vote.answer is not None and answer is not None and normalize_answer(answer) == normalize_answer(vote.answer)
            row["correct"] = agrees if row["text"] else None
            row["kept"] = False
            if agrees and row["annotation_ok"] is not False:
                candidates.append(i)
            elif agrees:
                counts["dropped_bad_annotation"] += 1
        unique = dedup_by_equations([rows[i]["text"] for i in candidates])
        counts["dropped_same_equations"] += len(candidates) - len(unique)
        for j in unique:
            rows[candidates[j]]["kept"] = True
    schema = samples.schema.append(pa.field("majority_answer", pa.string())).append(pa.field("agreement", pa.float32())) \
        .append(pa.field("annotation_ok", pa.bool_())).append(pa.field("kept", pa.bool_()))
    table = pa.Table.from_pylist(rows, schema=schema)
    counts["responses_kept"] = sum(r["kept"] for r in rows)
    return table, dict(counts)
