"""Question filters as recorded steps (ScaleQuest step 4, METHODS.md §3.3 and §6.3).

Each filter takes a pyarrow table of questions and returns a `StepResult`: the kept rows and the
rejected rows, the latter with the step name and a human-readable reason per row, so every
dropped question can be audited. Steps: language, solvability (judge verdicts), difficulty
sampling, near-duplicates within a shard and across shards (embeddings + FAISS) and benchmark
contamination.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.decontamination.index import ContaminationIndex
from mathdata_pipeline.scalequest.best_of_n import (
    SequenceScorer,
)

_NEAR_DUPLICATE_BATCH = 4096
_COSINE_TOLERANCE = 1e-6  # float32 rounding: identical unit vectors can have an inner product of 0.9999999
# Unicode blocks allowed by language_filter(allowed="latin") beyond ASCII and Latin-1:
# Greek, general punctuation, super/subscripts, letterlike symbols, number forms, arrows,
# mathematical operators, miscellaneous technical (floor/ceiling), geometric shapes,
# miscellaneous mathematical symbols-A and supplemental mathematical operators.
_LATIN_MATH_RANGES = (
    (0x0370, 0x03FF),
    (0x2000, 0x206F),
    (0x2070, 0x209F),
    (0x2100, 0x214F),
    (0x2150, 0x218F),
    (0x2190, 0x21FF),
    (0x2200, 0x22FF),
    (0x2300, 0x23FF),
    (0x25A0, 0x25FF),
    (0x27C0, 0x27EF),
    (0x2A00, 0x2AFF),
)

# Verdict-like statements; parse_verdict takes the one that ends last in the text.
_VERDICT_PATTERNS = [
    re.compile(p, re.IGNORECASE | re.MULTILINE)
    for p in (
        r"verdict\s*(?:is)?\W{0,6}(yes|no)\b",  # Verdict: No / **Verdict:** Yes
        r"\\boxed\s*\{\s*(?:\\text(?:bf)?\s*\{\s*)?(yes|no)\b",  # \boxed{No} / \boxed{\text{Yes}}
        r"\*\*\s*(yes|no)\s*[.!]?\s*\*\*",  # **No**
        r"\b(?:answer|conclusion|decision)\s*(?:is|:)\W{0,6}(yes|no)\b",  # the answer is yes / Conclusion: no
        r"\b(?:therefore|thus|hence|so)\s*,?\s*(yes|no)\s*[.!]?\s*$",  # Therefore, yes.
        r"^[\s*_\"'>#-]*(yes|no)[\s.!*_\"']*$",  # a line that is only "No."
    )
]


@dataclass(frozen=True)
class StepResult:
    """Outcome of one filter step.

    `step`: the step name; `kept`: rows that passed (input columns plus any step columns);
    `rejected`: rows that failed, with two more string columns `filter_step` and `reason`.
    """

    step: str
    kept: pa.Table
    rejected: pa.Table

    @property
    def n_in(self) -> int:
        """Rows that entered the step."""
        return self.kept.num_rows + self.rejected.num_rows

    @property
    def n_out(self) -> int:
        """Rows that passed the step."""
        return self.kept.num_rows


def apply_mask(
    table: pa.Table, keep: Sequence[bool] | np.ndarray, reasons: Sequence[str | None], step: str
) -> StepResult:
    """Split `table` into kept and rejected rows.

    Inputs: the table; `keep`, one bool per row; `reasons`, one string per row (only read for
    rejected rows, which must have a non-empty reason); the step name.
    Output: `StepResult` whose rejected table carries `filter_step` (= step) and `reason`.
    Row order is preserved on both sides.
    """
    mask = np.asarray(keep, dtype=bool)
    if mask.shape != (table.num_rows,) or len(reasons) != table.num_rows:
        raise ValueError(f"step {step}: {table.num_rows} rows but {mask.size} keep flags and {len(reasons)} reasons")
    rejected_rows = np.flatnonzero(~mask)
    for row in rejected_rows.tolist():
        if not reasons[row]:
            raise ValueError(f"step {step}: row {row} is rejected without a reason")
    rejected = table.filter(pa.array(~mask, pa.bool_()))
    rejected = rejected.append_column("filter_step", pa.array([step] * len(rejected_rows), pa.string()))
    rejected = rejected.append_column("reason", pa.array([reasons[row] for row in rejected_rows.tolist()], pa.string()))
    return StepResult(step=step, kept=table.filter(pa.array(mask, pa.bool_())), rejected=rejected)


def _column(table: pa.Table, name: str) -> list:
    """The values of column `name`; ValueError naming the field when it is missing."""
    if name not in table.column_names:
        raise ValueError(f"field '{name}' is not in the table (columns: {', '.join(table.column_names)})")
    return table.column(name).to_pylist()


def _texts(table: pa.Table, name: str) -> list[str]:
    """The strings of column `name`; ValueError naming the row and field of a null value."""
    values = _column(table, name)
    for row, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(f"row {row}, field '{name}': expected text, got {value!r}")
    return values


def _with_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    """`table` with column `name` set to `values` (replaced when it exists)."""
    if name in table.column_names:
        return table.set_column(table.schema.get_field_index(name), name, values)
    return table.append_column(name, values)


def _is_latin_or_math(char: str) -> bool:
    """ASCII, Latin-1, or one of the math-related blocks in `_LATIN_MATH_RANGES`."""
    code = ord(char)
    return code <= 0xFF or any(low <= code <= high for low, high in _LATIN_MATH_RANGES)


def language_filter(table: pa.Table, column: str = "question", allowed: str = "ascii") -> StepResult:
    """Keep rows whose text is non-empty and written in the allowed characters (step "language").

    `allowed`: "ascii" (every character <= U+007F, the paper's filter; it also drops Unicode math
    symbols), "latin" (ASCII, Latin-1, Greek and the common math/punctuation blocks), or
    "regex:<pattern>" (the whole text must match the Python regex). Empty or whitespace-only
    texts are rejected in every mode. Reasons name the first offending character and its
    position, e.g. "non-ascii character 'é' at 12".
    """
    if allowed == "ascii":

        def problem(text: str) -> str | None:
            bad = next(((i, c) for i, c in enumerate(text) if ord(c) > 127), None)
            return None if bad is None else f"non-ascii character {bad[1]!r} at {bad[0]}"
    elif allowed == "latin":

        def problem(text: str) -> str | None:
            bad = next(((i, c) for i, c in enumerate(text) if not _is_latin_or_math(c)), None)
            return None if bad is None else f"character {bad[1]!r} (U+{ord(bad[1]):04X}) outside latin/math at {bad[0]}"
    elif allowed.startswith("regex:"):
        pattern = re.compile(allowed[len("regex:") :])

        def problem(text: str) -> str | None:
            return None if pattern.fullmatch(text) else f"does not match regex {pattern.pattern!r}"
    else:
        raise ValueError(f"allowed must be 'ascii', 'latin' or 'regex:<pattern>', got {allowed!r}")
    reasons = ["empty text" if not text.strip() else problem(text) for text in _texts(table, column)]
    return apply_mask(table, [reason is None for reason in reasons], reasons, "language")


def parse_verdict(judgement: str) -> str | None:
    """The judge's final yes/no verdict: "yes", "no", or None when it states none.

    Looks for verdict-like statements ("Verdict: No", "**Yes**", "\\boxed{No}", "the answer is
    yes", "Therefore, no.", a line that is only "No.") and returns the one that ends last in
    the text, so a judgement that says "yes" early but concludes "No" is a no.
    """
    last: tuple[int, str] | None = None
    for pattern in _VERDICT_PATTERNS:
        for match in pattern.finditer(judgement):
            if last is None or match.end() > last[0]:
                last = (match.end(), match.group(1).lower())
    return None if last is None else last[1]


def reference_verdict(judgement: str) -> bool:
    """The paper's rule: True when "yes" occurs anywhere in the lower-cased judgement."""
    return "yes" in judgement.lower()


def solvability_filter(table: pa.Table, judgements: Sequence[str], reference_behaviour: bool = False) -> StepResult:
    """Keep rows whose judge verdict is yes (step "solvability").

    Inputs: the table; `judgements`, the judge's raw output per row; `reference_behaviour`:
    False parses the final verdict (`parse_verdict`), True uses the paper's substring rule
    (`reference_verdict`). Output: `StepResult`; kept and rejected rows both get `judge_output`
    (the raw text) and `judge_verdict` ("yes", "no" or null when no verdict was found).
    """
    if len(judgements) != table.num_rows:
        raise ValueError(f"{len(judgements)} judgements for {table.num_rows} rows")
    verdicts, reasons = [], []
    for row, judgement in enumerate(judgements):
        if not isinstance(judgement, str):
            raise ValueError(f"row {row}, field 'judge_output': expected text, got {judgement!r}")
        if reference_behaviour:
            verdict = "yes" if reference_verdict(judgement) else "no"
            reasons.append(None if verdict == "yes" else "no 'yes' in judge output (reference rule)")
        else:
            verdict = parse_verdict(judgement)
            reasons.append({"yes": None, "no": "judge verdict No"}.get(verdict, "no verdict in judge output"))
        verdicts.append(verdict)
    table = _with_column(table, "judge_output", pa.array(list(judgements), pa.string()))
    table = _with_column(table, "judge_verdict", pa.array(verdicts, pa.string()))
    return apply_mask(table, [v == "yes" for v in verdicts], reasons, "solvability")


def difficulty_sampling(
    table: pa.Table,
    difficulty: np.ndarray,
    rule: str = "drop_easy_fraction",
    fraction: float = 0.2,
    threshold: float = 0.0,
    seed: int = 0,
    id_column: str = "question_id",
) -> StepResult:
    """Reshape the difficulty distribution (step "difficulty"); higher difficulty = harder.

    Rules: "none" keeps every row; "drop_easy_fraction" drops round(fraction * rows) of the
    easiest rows, ties in difficulty broken by `stable_hash(seed, row id)` so the same seed
    always drops the same rows; "min_difficulty" drops rows with difficulty < `threshold`.
    Output: `StepResult`; kept and rejected rows both get a float64 `difficulty` column.
    """
    scores = np.asarray(difficulty, dtype=np.float64)
    if scores.shape != (table.num_rows,):
        raise ValueError(f"{scores.size} difficulty values for {table.num_rows} rows")
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise ValueError(f"row {int(bad[0])}, field 'difficulty': not a finite number ({scores[bad[0]]})")
    keep = np.ones(table.num_rows, dtype=bool)
    reasons: list[str | None] = [None] * table.num_rows
    if rule == "drop_easy_fraction":
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        ids = _column(table, id_column)
        tiebreak = [stable_hash("difficulty_sampling", str(seed), str(i)) for i in ids]
        easiest = sorted(range(table.num_rows), key=lambda r: (scores[r], tiebreak[r]))
        for row in easiest[: math.floor(fraction * table.num_rows + 0.5)]:
            keep[row] = False
            reasons[row] = f"among the easiest {fraction:.0%} (difficulty {scores[row]:.4g})"
    elif rule == "min_difficulty":
        for row in np.flatnonzero(scores < threshold).tolist():
            keep[row] = False
            reasons[row] = f"difficulty {scores[row]:.4g} < threshold {threshold:.4g}"
    elif rule != "none":
        raise ValueError(f"rule must be 'none', 'drop_easy_fraction' or 'min_difficulty', got {rule!r}")
    table = _with_column(table, "difficulty", pa.array(scores, pa.float64()))
    return apply_mask(table, keep, reasons, "difficulty")


def difficulty_scores_from_model(
    questions: Sequence[str],
    model_path: str,
    *,
    batch_tokens: int = 16384,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
) -> np.ndarray:
    """One difficulty score per question from a one-scalar model (a Hugging Face
    sequence-classification model with num_labels=1, or custom code behind `trust_remote_code`):
    the raw logit, no activation, like the paper's `function_to_apply="none"`.

    `batch_tokens`, `device` and `dtype` as in `SequenceScorer` ("auto": CUDA in bfloat16, else
    CPU float32). Output: float64 array aligned with `questions`. Raises ValueError naming the
    row of a question that is not text.
    """
    for row, question in enumerate(questions):
        if not isinstance(question, str):
            raise ValueError(f"row {row}, field 'question': expected text, got {question!r}")
    scorer = SequenceScorer(
        model_path, batch_tokens=batch_tokens, device=device, dtype=dtype, trust_remote_code=trust_remote_code
    )
    return scorer.score_texts(questions)


def near_duplicate_filter(
    table: pa.Table, embeddings: np.ndarray, threshold: float = 0.95, id_column: str = "question_id"
) -> StepResult:
    """Drop rows that are near-duplicates of an earlier kept row (step "near_duplicate").

    Inputs: the table; `embeddings`, L2-normalised float32 rows aligned with the table;
    `threshold`, the least cosine similarity that makes two rows duplicates. Rows are visited in
    table order; a row is kept unless an earlier *kept* row has cosine >= threshold with it, so
    the first row of every group survives. Neighbours come from a FAISS `IndexFlatIP`
    range search (exact inner products, compared with a 1e-6 tolerance for float32 rounding),
    in batches of 4096 queries.
    Reason: "near-duplicate of <id of the most similar earlier kept row> (cosine 0.97)".
    """
    import faiss

    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != table.num_rows:
        raise ValueError(f"embeddings of shape {vectors.shape} for {table.num_rows} rows")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    norms = np.linalg.norm(vectors, axis=1)
    off = np.flatnonzero(np.abs(norms - 1.0) > 1e-3)
    if off.size:
        raise ValueError(f"row {int(off[0])}, field 'embedding': not L2-normalised (norm {norms[off[0]]:.4f})")
    ids = _column(table, id_column)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    keep = np.ones(table.num_rows, dtype=bool)
    reasons: list[str | None] = [None] * table.num_rows
    for start in range(0, table.num_rows, _NEAR_DUPLICATE_BATCH):
        lims, sims, neighbours = index.range_search(
            vectors[start : start + _NEAR_DUPLICATE_BATCH], threshold - _COSINE_TOLERANCE
        )
        for offset in range(len(lims) - 1):
            row = start + offset
            found = slice(lims[offset], lims[offset + 1])
            earlier = [(float(s), int(j)) for s, j in zip(sims[found], neighbours[found]) if j < row and keep[j]]
            if earlier:
                cosine, j = max(earlier, key=lambda pair: (pair[0], -pair[1]))
                keep[row] = False
                reasons[row] = f"near-duplicate of {ids[j]} (cosine {cosine:.2f})"
    return apply_mask(table, keep, reasons, "near_duplicate")


def cross_shard_filter(
    table: pa.Table,
    embeddings: np.ndarray,
    earlier_ids: Sequence[str],
    earlier_embeddings: np.ndarray,
    threshold: float = 0.95,
    id_column: str = "question_id",
) -> StepResult:
    """Drop rows that are near-duplicates of a question kept by an earlier shard (step
    "cross_shard_duplicate").

    Inputs: the table and its L2-normalised embeddings (aligned rows); the ids and embeddings of
    every question the earlier shards kept (same embedder; none is fine); the least cosine that makes
    two questions duplicates. The earlier questions go into one FAISS `IndexFlatIP` (exact inner
    products), searched for each row's nearest neighbour. Reason: "near-duplicate of <id> from an
    earlier shard (cosine 0.97)".
    """
    import faiss

    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != table.num_rows:
        raise ValueError(f"embeddings of shape {vectors.shape} for {table.num_rows} rows")
    reasons: list[str | None] = [None] * table.num_rows
    if len(earlier_ids) and table.num_rows:
        earlier = np.ascontiguousarray(earlier_embeddings, dtype=np.float32).reshape(len(earlier_ids), -1)
        if earlier.shape[1] != vectors.shape[1]:
            raise ValueError(
                f"earlier shards' embeddings have {earlier.shape[1]} dimensions, this shard's {vectors.shape[1]}"
            )
        index = faiss.IndexFlatIP(earlier.shape[1])
        index.add(earlier)
        sims, neighbours = index.search(vectors, 1)
        for row in range(table.num_rows):
            if sims[row, 0] >= threshold - _COSINE_TOLERANCE:
                reasons[row] = (
                    f"near-duplicate of {earlier_ids[int(neighbours[row, 0])]} from an earlier shard "
                    f"(cosine {float(sims[row, 0]):.2f})"
                )
    return apply_mask(table, [r is None for r in reasons], reasons, "cross_shard_duplicate")


def contamination_filter(
    table: pa.Table, index: ContaminationIndex, id_column: str = "question_id", text_column: str = "question"
) -> StepResult:
    """Drop rows that overlap a benchmark question (step "contamination").

    Uses `ContaminationIndex.find_matches` (exact normalized text or word n-grams). Row ids must
    be unique. Reason: "benchmark overlap: <benchmark>/<problem id> (exact)" or "(13-gram)",
    plus "and N more" when a row overlaps several benchmark items.
    """
    ids = _column(table, id_column)
    seen: set = set()
    for row, row_id in enumerate(ids):
        if row_id is None or row_id in seen:
            raise ValueError(f"row {row}, field '{id_column}': ids must be unique and non-null, got {row_id!r}")
        seen.add(row_id)
    audit = index.find_matches(zip((str(i) for i in ids), _texts(table, text_column)))
    matches: dict[str, list[str]] = {}
    for match in audit.to_pylist():
        kind = "exact" if match["match_kind"] == "exact" else f"{match['n']}-gram"
        matches.setdefault(match["row_id"], []).append(f"{match['benchmark']}/{match['benchmark_problem_id']} ({kind})")
    reasons = []
    for row_id in ids:
        found = matches.get(str(row_id))
        more = f" and {len(found) - 1} more" if found and len(found) > 1 else ""
        reasons.append(f"benchmark overlap: {found[0]}{more}" if found else None)
    return apply_mask(table, [reason is None for reason in reasons], reasons, "contamination")
