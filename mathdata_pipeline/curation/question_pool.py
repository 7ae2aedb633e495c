"""Assembling the question pool: seeds, augmented and synthesized questions, one row per question."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.common.text import normalize_text
from mathdata_pipeline.decontamination.filter import drop_benchmark_overlap
from mathdata_pipeline.sources.problems import PROBLEM_SCHEMA


def pseudo_answers(responses: pa.Table) -> dict[str, str]:
    """Reference answers of augmented questions: the majority answer of each question whose vote
    passed its agreement threshold (`augmented_responses` rows carry `majority_answer`, null when
    the vote failed)."""
    found: dict[str, str] = {}
    for pid, answer in zip(responses.column("problem_id").to_pylist(), responses.column("majority_answer").to_pylist()):
        if answer is not None:
            found[pid] = answer
    return found


def build_question_pool(parts: dict[str, pa.Table], index_table: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """Union of the available question tables of one source, in the order seeds, augmented,
    synthesized; a question whose normalized text was seen before is dropped, and so is any question
    that overlaps a benchmark. Augmented questions take their reference answer from the majority
    vote in `augmented_responses` (null when the vote failed).

    Inputs: `parts` maps table names (seed_problems, augmented_questions, augmented_responses,
    synthesized_questions) to tables; `index_table` is the contamination index.
    Output: (PROBLEM_SCHEMA table, counts of dropped rows by reason).
    """
    tables = [
        parts[name].select(PROBLEM_SCHEMA.names).cast(PROBLEM_SCHEMA)
        for name in ("seed_problems", "augmented_questions", "synthesized_questions")
        if name in parts
    ]
    table = pa.concat_tables(tables) if tables else PROBLEM_SCHEMA.empty_table()
    if "augmented_responses" in parts:
        answers = pseudo_answers(parts["augmented_responses"])
        filled = [
            answers.get(pid, ref) if origin == "augmented" else ref
            for pid, ref, origin in zip(
                *(table.column(c).to_pylist() for c in ("problem_id", "reference_answer", "origin"))
            )
        ]
        table = table.set_column(
            table.schema.get_field_index("reference_answer"), "reference_answer", pa.array(filled, pa.string())
        )
    seen, keep, dropped = set(), [], {"dropped_duplicate_question": 0, "dropped_benchmark_overlap": 0}
    for i, question in enumerate(table.column("question").to_pylist()):
        key = normalize_text(question)
        if key in seen:
            dropped["dropped_duplicate_question"] += 1
            continue
        seen.add(key)
        keep.append(i)
    table, dropped["dropped_benchmark_overlap"] = drop_benchmark_overlap(
        table.take(pa.array(keep, pa.int64())), index_table
    )
    return table, dropped


def rows_of_source(table: pa.Table | None, source: str) -> pa.Table | None:
    """The rows of a ScaleQuest table (all shards) that belong to pool `source`: synthesized
    questions carry the pool they join in `source`; tables without that column (responses) are
    matched to the pool later and pass whole. None stays None."""
    if table is None or "source" not in table.column_names:
        return table
    return table.filter(pc.field("source") == source)
