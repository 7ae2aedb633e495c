"""Sample rows: one LLM response to one problem, with how it was made and how it graded.

Columns follow DESIGN.md ("sample"): sample_id, problem_id, model, template, temperature, top_p,
seed, text, finish_reason, prompt_tokens, completion_tokens, extracted_answer, correct, grader;
plus round, sample_index, error (the reason a request produced no text) and attempt (0, or the
retry whose derived seed produced the row; `seed` is the seed actually used).

`SampleSink` writes sample rows of a long run with bounded memory: rows are spilled to sorted
Parquet part files as they come, then merged into one table in (query, sample index) order.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from mathdata_pipeline.common.templates import SolveTemplate
from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.engines.base import Completion, Request, RequestError, SamplingParams, derive_seed, retry_seed
from mathdata_pipeline.engines.runner import GenerateFn
from mathdata_pipeline.storage.objects import staged_upload

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
        pa.field("attempt", pa.int32()),
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


def sample_row(
    spec: SampleSpec,
    request: Request,
    result: Completion | RequestError,
    *,
    model: str,
    template: str,
    extracted: str | None,
    correct: bool | None,
    grader: str,
) -> dict:
    """One row of SAMPLE_SCHEMA as a dict: the sample, how it was made (the seed actually used,
    the attempt) and its verdict (`extracted`, `correct`; None where nothing was graded)."""
    p = request.params
    done = isinstance(result, Completion)
    return {
        "sample_id": sample_id(spec.problem_id, model, template, p, spec.sample_index),
        "problem_id": spec.problem_id,
        "model": model,
        "template": template,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "max_tokens": p.max_tokens,
        "seed": retry_seed(p.seed, result.attempt),
        "round": spec.round,
        "sample_index": spec.sample_index,
        "text": result.text if done else None,
        "finish_reason": result.finish_reason if done else None,
        "prompt_tokens": result.prompt_tokens if done else None,
        "completion_tokens": result.completion_tokens if done else None,
        "extracted_answer": extracted,
        "correct": correct,
        "grader": grader if done else None,
        "error": None if done else f"{result.reason}: {result.message}",
        "attempt": result.attempt,
    }


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
    rows = [
        sample_row(spec, request, result, model=model, template=template, extracted=answer, correct=ok, grader=grader)
        for spec, request, result, answer, ok in zip(specs, requests, results, extracted, correct, strict=True)
    ]
    return pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)


GradeFn = Callable[[list[tuple[str, str, str | None, str]]], list]  # (response, reference, finish_reason, question)


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
            [
                (results[i].text, references[specs[i].problem_id] or "", results[i].finish_reason, specs[i].question)
                for i in done
            ]
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


_ORDER = "_order"  # query position << 32 | sample index: the sort key of the part files


class SampleSink:
    """Sample rows of a long run with bounded memory.

    `append` buffers rows and spills them, sorted, to Parquet part files under `folder` once the
    buffered text passes `spill_bytes`; `write` merges the parts into one Parquet file ordered by
    (query position, sample index), a range of queries at a time (at most `rows_per_range` rows
    in memory, unless one query alone has more), so the output is the same however the rows
    arrived. `close` removes the part files. Inputs: the folder (created), the row schema, and
    the number of queries.
    """

    def __init__(
        self,
        folder: Path | str,
        schema: pa.Schema,
        n_queries: int,
        *,
        spill_bytes: int = 32 << 20,
        rows_per_range: int = 32_768,
    ):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.schema, self.spill_bytes, self.rows_per_range = schema, spill_bytes, rows_per_range
        self.counts = np.zeros(n_queries, dtype=np.int64)
        self._rows: list[dict] = []
        self._keys: list[int] = []
        self._bytes = 0
        self._parts: list[Path] = []

    @property
    def rows(self) -> int:
        """Rows appended so far."""
        return int(self.counts.sum())

    def append(self, query: int, sample_index: int, row: dict) -> None:
        """Add one row of query position `query`."""
        self._rows.append(row)
        self._keys.append((query << 32) | sample_index)
        self.counts[query] += 1
        self._bytes += len(row.get("text") or "") + 256
        if self._bytes >= self.spill_bytes:
            self._spill()

    def _spill(self) -> None:
        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        table = table.append_column(_ORDER, pa.array(self._keys, pa.int64())).sort_by(_ORDER)
        part = self.folder / f"part-{len(self._parts):05d}.parquet"
        pq.write_table(table, part, row_group_size=256, compression="zstd")
        self._parts.append(part)
        self._rows, self._keys, self._bytes = [], [], 0

    def write(self, destination, transform: Callable[[pa.Table, np.ndarray], pa.Table] | None = None) -> pa.Schema:
        """Write every row to `destination` (a local path or a `UPath`; replaced atomically when
        local) in (query, sample index) order. `transform(table, query_positions)` may add
        columns to each range before it is written. Returns the written schema."""
        self._spill()
        ranges = _query_ranges(self.counts, self.rows_per_range)
        dataset = pads.dataset([str(p) for p in self._parts], format="parquet") if self._parts else None

        def tables():
            for low, high in ranges:
                order = pc.field(_ORDER)
                table = dataset.to_table(filter=(order >= low << 32) & (order < high << 32)).sort_by(_ORDER)
                queries = (table.column(_ORDER).to_numpy() >> 32).astype(np.int64)
                table = table.drop_columns([_ORDER])
                yield transform(table, queries) if transform else table

        empty = self.schema.empty_table()
        schema = (transform(empty, np.zeros(0, np.int64)) if transform else empty).schema
        _write_atomically(destination, schema, tables())
        return schema

    def close(self) -> None:
        """Remove the part files and their folder."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self._parts, self._rows, self._keys = [], [], []

    def __enter__(self) -> SampleSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _query_ranges(counts: np.ndarray, rows_per_range: int) -> list[tuple[int, int]]:
    """Consecutive query ranges [low, high) with at most `rows_per_range` rows each (a single
    query with more rows is a range of its own); queries without rows are skipped."""
    ranges: list[tuple[int, int]] = []
    low, total = -1, 0
    nonzero = np.flatnonzero(counts).tolist()
    for query in nonzero:
        if low >= 0 and total + counts[query] > rows_per_range:
            ranges.append((low, query))  # the queries in between have no rows
            low, total = -1, 0
        if low < 0:
            low = query
        total += int(counts[query])
    if low >= 0:
        ranges.append((low, nonzero[-1] + 1))
    return ranges


def _write_atomically(destination, schema: pa.Schema, tables) -> None:
    """Parquet tables one after another into `destination`: a local file is written under a hidden
    temporary name and renamed over the old one; anything else (object storage) is one upload."""
    protocol = getattr(destination, "protocol", "")
    if protocol in ("", "file", "local"):
        path = Path(getattr(destination, "path", destination))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        try:
            with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
                for table in tables:
                    writer.write_table(table, row_group_size=4096)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return
    with staged_upload(destination) as staged, pq.ParquetWriter(staged, schema, compression="zstd") as writer:
        for table in tables:
            writer.write_table(table, row_group_size=4096)
