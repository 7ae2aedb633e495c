"""Auditable benchmark decontamination: exact-text and word n-gram overlap against test sets.

`build_index` turns benchmark items into a table of 64-bit hashes (one exact hash of the
normalized text per item, plus word n-gram hashes). `ContaminationIndex.from_table` loads that
table into sorted numpy arrays, and `ContaminationIndex.find_matches` returns one audit row per
(checked row, benchmark item) overlap with the overlapping text span, so every flagged row can be
reviewed by a person instead of trusting an opaque n-gram count.

Hashes are deterministic across runs, machines and Python versions:
- exact: blake2b (8-byte digest) of `"exact" + 0x1f + normalize_text(text)`;
- word: blake2b (8-byte digest) of one token of `ngram_words(text)`;
- n-gram: the word hashes combined as a polynomial modulo 2**64 (seeded with n), passed
  through the splitmix64 finalizer. This is vectorized with numpy, so checking large tables
  does not hash every n-gram string in Python.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.common.text import normalize_text, words

_POLY = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_ASY_RE = re.compile(r"\[asy\].*?(?:\[/asy\]|$)", re.DOTALL | re.IGNORECASE)
_SPAN_CHARS = 300
_BATCH_WORDS = 2_000_000

INDEX_SCHEMA = pa.schema(
    [
        ("hash", pa.uint64()),
        ("kind", pa.string()),
        ("n", pa.int16()),
        ("benchmark", pa.string()),
        ("problem_id", pa.string()),
    ]
)

AUDIT_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("benchmark", pa.string()),
        ("benchmark_problem_id", pa.string()),
        ("match_kind", pa.string()),
        ("n", pa.int16()),
        ("matched_ngrams", pa.int64()),
        ("benchmark_ngrams", pa.int64()),
        ("span", pa.string()),
    ]
)


def _digest64(text: str) -> int:
    """Unsigned 64-bit integer from the 8-byte blake2b digest of `text` (UTF-8)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def exact_hash(text: str) -> int:
    """Exact-match hash of a question.

    Input: raw question text. Output: unsigned 64-bit int, equal for two texts whose
    `normalize_text` forms are equal (so whitespace and case changes do not matter).
    """
    return _digest64("exact\x1f" + normalize_text(text))


def ngram_words(text: str) -> list[str]:
    """Tokens used for n-grams: `words(text)` after removing Asymptote `[asy]...[/asy]` blocks.

    Diagram code is not problem text, and its shared preambles (axes, grids, labels) otherwise
    dominate the n-gram overlap between unrelated MATH problems. Exact hashes keep the code.
    """
    return words(_ASY_RE.sub(" ", text))


def _word_hashes(tokens: list[str]) -> np.ndarray:
    """uint64 hash of every token; each distinct token is hashed once."""
    if not tokens:
        return np.zeros(0, dtype=np.uint64)
    encoded = pa.array(tokens, type=pa.string()).dictionary_encode()
    vocab = np.fromiter(
        (_digest64(w) for w in encoded.dictionary.to_pylist()),
        dtype=np.uint64,
        count=len(encoded.dictionary),
    )
    return vocab[encoded.indices.to_numpy(zero_copy_only=False)]


def _ngram_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of every window of `n` consecutive words; element j covers words j .. j+n-1.

    Input: uint64 word hashes of one word sequence (length L). Output: uint64 array of length
    max(L - n + 1, 0). Windows that cross row boundaries must be dropped by the caller.
    """
    count = len(word_hashes) - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    h = np.full(count, n, dtype=np.uint64)
    for i in range(n):
        h = h * _POLY + word_hashes[i : i + count]
    h ^= h >> np.uint64(30)
    h *= _MIX1
    h ^= h >> np.uint64(27)
    h *= _MIX2
    h ^= h >> np.uint64(31)
    return h


def build_index(
    items: Iterable[tuple[str, str, str]],
    *,
    n: int = 13,
    short_n: int = 8,
    short_threshold: int | None = None,
) -> pa.Table:
    """Hash table of benchmark items to check training rows against.

    Inputs:
        items: iterable of (benchmark, problem_id, text), e.g. ("gsm8k_test", "17", question).
        n: word n-gram length for normal items (default 13).
        short_n: shorter n-gram length used for items with fewer than `short_threshold` words
            (from `ngram_words`), so short questions still get n-gram coverage (default 8).
            Items with fewer than `short_n` words get only the exact hash.
        short_threshold: word count below which `short_n` is used; default `2 * n`.

    Output: pyarrow table with INDEX_SCHEMA columns `hash` (uint64), `kind` ("exact" or
    "ngram"), `n` (int16, 0 for exact), `benchmark`, `problem_id`; one row per distinct
    (hash, item). Each item contributes one exact row plus its n-grams of a single length.
    The schema metadata holds `n`, `short_n` and `short_threshold` (see `index_parameters`).
    """
    if not 0 < short_n <= n:
        raise ValueError(f"need 0 < short_n <= n, got short_n={short_n}, n={n}")
    threshold = 2 * n if short_threshold is None else short_threshold
    hashes, kinds, ns, benchmarks, problem_ids = [], [], [], [], []
    for benchmark, pid, text in items:
        tokens = ngram_words(text)
        size = n if len(tokens) >= threshold else short_n
        grams = np.unique(_ngram_hashes(_word_hashes(tokens), size))
        hashes += [np.array([exact_hash(text)], dtype=np.uint64), grams]
        kinds += ["exact"] + ["ngram"] * len(grams)
        ns += [0] + [size] * len(grams)
        benchmarks += [benchmark] * (len(grams) + 1)
        problem_ids += [pid] * (len(grams) + 1)
    metadata = {"n": str(n), "short_n": str(short_n), "short_threshold": str(threshold)}
    columns = [np.concatenate(hashes) if hashes else [], kinds, ns, benchmarks, problem_ids]
    return pa.table(
        [pa.array(c, type=f.type) for c, f in zip(columns, INDEX_SCHEMA)],
        schema=INDEX_SCHEMA.with_metadata(metadata),
    )


def index_parameters(table: pa.Table) -> dict[str, int]:
    """The settings an index table was built with, read from its schema metadata.

    Input: a table from `build_index`. Output: {"n": ..., "short_n": ..., "short_threshold": ...}.
    """
    meta = table.schema.metadata or {}
    return {key: int(meta[key.encode()]) for key in ("n", "short_n", "short_threshold")}


def _item_frequency(hashes: np.ndarray, benchmarks: np.ndarray) -> np.ndarray:
    """Per entry, sorted by (hash, benchmark): how many entries of the most frequent benchmark
    share its hash, i.e. in how many items of a single benchmark this n-gram occurs."""
    if len(hashes) == 0:
        return np.zeros(0, dtype=np.int64)
    new_hash = np.r_[True, hashes[1:] != hashes[:-1]]
    new_pair = new_hash | np.r_[True, benchmarks[1:] != benchmarks[:-1]]
    pair_id = np.cumsum(new_pair) - 1
    pair_count = np.bincount(pair_id)[pair_id]
    hash_id = np.cumsum(new_hash) - 1
    hash_max = np.zeros(hash_id[-1] + 1, dtype=np.int64)
    np.maximum.at(hash_max, hash_id, pair_count)
    return hash_max[hash_id]


@dataclass
class ContaminationIndex:
    """In-memory lookup over an index table; build it with `ContaminationIndex.from_table`.

    Per hash length (0 = exact, else n) it keeps the index hashes as a sorted uint64 array with a
    parallel array of item codes, so a lookup is one vectorized `np.searchsorted` over the
    sorted n-grams of a batch of rows. Measured on 590k 13-grams of GSM8K+MATH train against
    the GSM8K/MATH/MATH-500 test index: 0.06 s, versus 0.09 s for a dict of Python ints
    (and 0.19 s with unsorted queries).
    """

    sorted_hashes: dict[int, np.ndarray]
    item_codes: dict[int, np.ndarray]
    items: list[tuple[str, str]]
    item_ngrams: np.ndarray
    item_sizes: np.ndarray
    parameters: dict[str, int]
    min_matches: int
    min_coverage: float
    min_short_coverage: float

    @classmethod
    def from_table(
        cls,
        table: pa.Table,
        *,
        max_item_frequency: int | None = 3,
        min_matches: int = 2,
        min_coverage: float = 0.1,
        min_short_coverage: float = 0.5,
    ) -> ContaminationIndex:
        """Load an index table (from `build_index`, possibly after a Parquet round trip).

        Exact matches are always reported. An n-gram match of a checked row with a benchmark
        item that has T distinct n-grams, M of which occur in the row, is reported when
        M >= min(min_matches, T) and M >= coverage * T. The defaults were chosen by reviewing
        MATH train vs MATH test matches, where single shared phrases are answer-format or
        problem-stem boilerplate ("where m and n are relatively prime positive integers find
        m n", "let f mathbb r to mathbb r be a function such that f") rather than leaks.

        Inputs:
            table: index table with INDEX_SCHEMA columns and parameter metadata.
            max_item_frequency: n-grams that occur in more than this many items of one
                benchmark are that benchmark's boilerplate and are ignored (default 3;
                None keeps all).
            min_matches: least number of distinct shared n-grams (default 2).
            min_coverage: least share of the item's n-grams for items indexed at `n`
                (default 0.1, i.e. roughly a tenth of the benchmark question is copied).
            min_short_coverage: least share for items indexed at `short_n` (default 0.5:
                short 8-grams such as "what is the smallest positive integer n" are generic,
                so at least half of a short question must be shared).
            Pass max_item_frequency=None, min_matches=1, min_coverage=0, min_short_coverage=0
            to report every single shared n-gram.
        Output: a ContaminationIndex.
        """
        keys = pc.binary_join_element_wise(table["benchmark"], table["problem_id"], "\x1f")
        encoded = keys.combine_chunks().dictionary_encode()
        codes = encoded.indices.to_numpy().astype(np.int64)
        benchmarks = table["benchmark"].combine_chunks().dictionary_encode().indices.to_numpy()
        hashes = table["hash"].to_numpy().astype(np.uint64)
        ns = table["n"].to_numpy().astype(np.int64)
        item_sizes = np.zeros(len(encoded.dictionary), dtype=np.int64)
        item_sizes[codes[ns > 0]] = ns[ns > 0]
        sorted_hashes, item_codes = {}, {}
        for size in np.unique(ns).tolist():
            mask = ns == size
            order = np.lexsort((benchmarks[mask], hashes[mask]))
            size_hashes, size_codes = hashes[mask][order], codes[mask][order]
            if size > 0 and max_item_frequency is not None:
                keep = _item_frequency(size_hashes, benchmarks[mask][order]) <= max_item_frequency
                size_hashes, size_codes = size_hashes[keep], size_codes[keep]
            sorted_hashes[size], item_codes[size] = size_hashes, size_codes
        return cls(
            sorted_hashes=sorted_hashes,
            item_codes=item_codes,
            items=[tuple(key.split("\x1f", 1)) for key in encoded.dictionary.to_pylist()],
            item_ngrams=np.bincount(codes[ns > 0], minlength=len(encoded.dictionary)),
            item_sizes=item_sizes,
            parameters=index_parameters(table),
            min_matches=min_matches,
            min_coverage=min_coverage,
            min_short_coverage=min_short_coverage,
        )

    def _lookup(self, size: int, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query positions, item codes) of every index entry of length `size` equal to a query."""
        table = self.sorted_hashes.get(size)
        if table is None or len(query) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        order = np.argsort(query)  # sorted queries make the binary searches cache-friendly
        sorted_query = query[order]
        left = np.searchsorted(table, sorted_query, side="left")
        counts = np.searchsorted(table, sorted_query, side="right") - left
        hit = np.flatnonzero(counts)
        reps = counts[hit]
        query_pos = np.repeat(order[hit], reps)
        offset_in_run = np.arange(len(query_pos)) - np.repeat(np.cumsum(reps) - reps, reps)
        return query_pos, self.item_codes[size][np.repeat(left[hit], reps) + offset_in_run]

    def _reported(self, code: int, matched: int) -> bool:
        """Whether `matched` shared n-grams with item `code` pass the thresholds of `from_table`."""
        total = int(self.item_ngrams[code])
        short = self.item_sizes[code] < self.parameters["n"]
        coverage = self.min_short_coverage if short else self.min_coverage
        return matched > 0 and matched >= min(self.min_matches, total) and matched >= coverage * total

    def find_matches(self, rows: Iterable[tuple[str, str]]) -> pa.Table:
        """Audit table of overlaps between checked rows and benchmark items.

        Input: rows, an iterable of (row_id, text).
        Output: pyarrow table (AUDIT_SCHEMA), one row per overlapping (checked row, benchmark
        item) pair that passes the thresholds of `from_table`, ordered by input row:
            row_id, benchmark, benchmark_problem_id;
            match_kind: "exact" when the normalized texts are equal, else "ngram";
            n: n-gram length of that benchmark item (0 if it only has an exact hash);
            matched_ngrams: distinct (non-boilerplate) item n-grams found in the row;
            benchmark_ngrams: distinct n-grams of the item (matched / benchmark = coverage);
            span: the row's words (`ngram_words`) from the first to the last matched n-gram
                (the whole row for exact matches), joined by spaces and cut to 300 characters.
        """
        tables, batch, batch_words = [], [], 0
        for row_id, text in rows:
            tokens = ngram_words(text)
            batch.append((row_id, text, tokens))
            batch_words += len(tokens)
            if batch_words >= _BATCH_WORDS:
                tables.append(self._match_batch(batch))
                batch, batch_words = [], 0
        tables.append(self._match_batch(batch))
        return pa.concat_tables(tables)

    def _match_batch(self, batch: list[tuple[str, str, list[str]]]) -> pa.Table:
        """`find_matches` for one batch of (row_id, text, tokens)."""
        lengths = np.array([len(tokens) for _, _, tokens in batch], dtype=np.int64)
        row_end = np.cumsum(lengths)
        row_start = row_end - lengths
        token_row = np.repeat(np.arange(len(batch)), lengths)
        word_hashes = _word_hashes([w for _, _, tokens in batch for w in tokens])

        # (row, item code) -> [matched n-gram hashes, first position, last position]
        pairs: dict[tuple[int, int], list] = {}
        for size in sorted(k for k in self.sorted_hashes if k > 0):
            grams = _ngram_hashes(word_hashes, size)
            starts = np.arange(len(grams))
            valid = np.flatnonzero(starts + size <= row_end[token_row[starts]])  # within one row
            query_pos, codes = self._lookup(size, grams[valid])
            positions = valid[query_pos]
            hits = zip(
                token_row[positions].tolist(),
                codes.tolist(),
                positions.tolist(),
                grams[positions].tolist(),
            )
            for row, code, pos, gram in hits:
                entry = pairs.setdefault((row, code), [set(), pos, pos])
                entry[0].add(gram)
                entry[1], entry[2] = min(entry[1], pos), max(entry[2], pos)

        exact = np.array([exact_hash(text) for _, text, _ in batch], dtype=np.uint64)
        exact_pairs = set(zip(*(a.tolist() for a in self._lookup(0, exact))))

        records = []
        for row, code in sorted(exact_pairs | pairs.keys()):
            grams, first, last = pairs.get((row, code), [(), 0, 0])
            is_exact = (row, code) in exact_pairs
            if not is_exact and not self._reported(code, len(grams)):
                continue
            row_id, _, tokens = batch[row]
            size = int(self.item_sizes[code])
            start = row_start[row]
            span = tokens if is_exact else tokens[first - start : last - start + size]
            benchmark, pid = self.items[code]
            kind = "exact" if is_exact else "ngram"
            total = int(self.item_ngrams[code])
            span_text = " ".join(span)[:_SPAN_CHARS]
            records.append((row_id, benchmark, pid, kind, size, len(grams), total, span_text))
        columns = list(zip(*records)) if records else [()] * len(AUDIT_SCHEMA)
        return pa.table([pa.array(c, type=f.type) for c, f in zip(columns, AUDIT_SCHEMA)], schema=AUDIT_SCHEMA)

    @staticmethod
    def summarize(audit: pa.Table, total_rows: int) -> dict:
        """Contamination summary of an audit table from `find_matches`.

        Inputs: audit table; total_rows, the number of rows that were checked.
        Output: dict with total_rows, contaminated_rows (distinct row_ids with any match),
        contaminated_share (contaminated_rows / total_rows, 0.0 for an empty check),
        exact_rows (distinct row_ids with an exact match), and by_benchmark (benchmark ->
        distinct contaminated row count, sorted by benchmark name).
        """
        contaminated = pc.count_distinct(audit["row_id"]).as_py()
        exact = audit.filter(pc.equal(audit["match_kind"], "exact"))
        per_benchmark = audit.group_by("benchmark").aggregate([("row_id", "count_distinct")])
        by_benchmark = dict(
            zip(per_benchmark["benchmark"].to_pylist(), per_benchmark["row_id_count_distinct"].to_pylist())
        )
        return {
            "total_rows": total_rows,
            "contaminated_rows": contaminated,
            "contaminated_share": contaminated / total_rows if total_rows else 0.0,
            "exact_rows": pc.count_distinct(exact["row_id"]).as_py(),
            "by_benchmark": dict(sorted(by_benchmark.items())),
        }
