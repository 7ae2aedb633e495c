"""Synthesized questions as problem rows: what `question_pool` needs, plus the generation record."""

from __future__ import annotations

import json

import pyarrow as pa

from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.scalequest.best_of_n import choose_responses
from mathdata_pipeline.sources.problems import PROBLEM_SCHEMA

SYNTH_EXTRA = [
    pa.field("shard", pa.string()),
    pa.field("generator", pa.string()),
    pa.field("seed", pa.int64()),
    pa.field("completion_tokens", pa.int32()),
]
SYNTHESIZED_SCHEMA = pa.schema(list(PROBLEM_SCHEMA) + SYNTH_EXTRA)


def question_id(generator: str, shard: str, index: int) -> str:
    """The id of the `index`-th sample of a shard: stable for (generator, shard, index)."""
    return "sq-" + stable_hash(generator, shard, str(index), length=16)


def question_rows(
    texts: list[str], seeds: list[int], tokens: list[int], *, generator: str, shard: str, source: str, params_hash: str
) -> pa.Table:
    """Raw synthesized questions of one shard (PROBLEM_SCHEMA plus shard, generator, seed,
    completion_tokens). Origin `synthesized`, method `scalequest`; `source` is the pool they join;
    the reference answer is filled in later by the solver's majority vote."""
    rows = [
        {
            "problem_id": question_id(generator, shard, i),
            "source": source,
            "split": "synthesized",
            "question": text,
            "reference_answer": None,
            "reference_solution": None,
            "level": None,
            "subject": None,
            "license": None,
            "origin": "synthesized",
            "parent_problem_id": None,
            "method": "scalequest",
            "method_params_hash": params_hash,
            "source_id": f"{shard}/{i}",
            "source_record": json.dumps({"shard": shard, "index": i, "seed": seed, "generator": generator}),
            "shard": shard,
            "generator": generator,
            "seed": seed,
            "completion_tokens": n,
        }
        for i, (text, seed, n) in enumerate(zip(texts, seeds, tokens, strict=True))
    ]
    return pa.Table.from_pylist(rows, schema=SYNTHESIZED_SCHEMA)


def kept_responses(
    samples: pa.Table, questions: dict[str, str], scorer=None, require_final_answer_marker: bool = True
) -> tuple[pa.Table, dict[str, int]]:
    """Mark one kept response per question (best of n, `best_of_n.choose_responses`).

    Inputs: the solver samples with the vote's `correct` column (in the winning group);
    {problem_id: question}; `scorer`, a RewardScorer (rule "reward") or None (rule "majority");
    `require_final_answer_marker` (the paper's response filter, default on).
    Output: (samples with `kept`, `reward` and `choice` columns, counts of kept questions and of
    questions without a choice by reason).
    """
    samples = samples.drop_columns([c for c in ("kept", "reward", "choice") if c in samples.column_names])
    rows = samples.to_pylist()
    by_question: dict[str, list[int]] = {}
    for i in sorted(range(len(rows)), key=lambda i: (rows[i]["problem_id"], rows[i]["sample_index"])):
        rows[i]["kept"], rows[i]["reward"], rows[i]["choice"] = False, None, None
        by_question.setdefault(rows[i]["problem_id"], []).append(i)
    ids = list(by_question)
    groups = [[(rows[i]["text"] or "", bool(rows[i]["correct"])) for i in by_question[pid]] for pid in ids]
    choices = choose_responses(
        groups,
        "reward" if scorer else "majority",
        questions=[questions[p] for p in ids],
        scorer=scorer,
        require_final_answer_marker=require_final_answer_marker,
    )
    counts: dict[str, int] = {"questions": len(ids), "kept": 0}
    for pid, choice in zip(ids, choices):
        if choice.index is None:
            key = "not_kept/" + choice.reason
            counts[key] = counts.get(key, 0) + 1
            continue
        row = rows[by_question[pid][choice.index]]
        row["kept"], row["reward"], row["choice"] = True, choice.reward, choice.reason
        counts["kept"] += 1
    schema = (
        samples.schema.append(pa.field("kept", pa.bool_()))
        .append(pa.field("reward", pa.float32()))
        .append(pa.field("choice", pa.string()))
    )
    return pa.Table.from_pylist(rows, schema=schema), counts
