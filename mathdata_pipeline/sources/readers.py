"""Reading record files (JSONL, JSON, Parquet, gzipped or not) and Hugging Face datasets.

Every record comes with a human-readable location ("line 12", "record 3", "row 40") so that a
problem in the data can be reported as file + location + field. Nothing here knows about the
problem schema; see `problems.py` for that.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Bad input data, located precisely: file (or dataset id), line/record/row and field."""

    def __init__(self, source: str, message: str, *, where: str | None = None, field: str | None = None):
        self.source, self.where, self.field, self.message = source, where, field, message
        parts = [source]
        if where:
            parts.append(where)
        if field:
            parts.append(f"field '{field}'")
        super().__init__(": ".join(parts) + f": {message}")


@dataclass(frozen=True)
class Record:
    """One input record: its 1-based location label and its JSON-like content."""

    where: str
    data: dict[str, Any]


def _suffixes(path: Path) -> list[str]:
    return [s.lower() for s in path.suffixes]


def read_records(path: Path | str) -> Iterator[Record]:
    """Yield the records of a local file, each with its location.

    Input: a path ending in .jsonl, .json or .parquet, optionally followed by .gz.
    Output: `Record`s in file order. Raises `InputError` naming the file and the line (JSONL),
    record index (JSON) or row (Parquet) for: malformed JSON, a line that is not an object,
    non-UTF-8 bytes, a truncated or corrupt gzip stream, an empty file, an unknown extension.
    JSONL lines are split on "\\n" only (never `str.splitlines`, which would break records that
    contain U+2028); blank lines are skipped.
    """
    path = Path(path)
    suffixes = _suffixes(path)
    kind = suffixes[-2] if suffixes and suffixes[-1] == ".gz" and len(suffixes) > 1 else (suffixes or [""])[-1]
    if kind not in (".jsonl", ".json", ".parquet"):
        raise InputError(
            str(path),
            f"unsupported file type {''.join(suffixes) or '(none)'}; use .jsonl, .json or .parquet (optionally .gz)",
        )
    if not path.exists():
        raise InputError(str(path), "file not found")
    if kind == ".parquet":
        yield from _read_parquet(path)
        return
    if kind == ".jsonl":
        yield from _read_jsonl(path)
    else:
        yield from _read_json(path)


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _read_jsonl(path: Path) -> Iterator[Record]:
    count, line_no = 0, 0
    try:
        with _open_binary(path) as fh:
            for line_no, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                yield Record(f"line {line_no}", _parse_object(path, f"line {line_no}", raw))
                count += 1
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise InputError(str(path), f"truncated or corrupt gzip stream after line {line_no} ({exc})") from exc
    if count == 0:
        raise InputError(str(path), "file is empty (no records)")


def _parse_object(path: Path, where: str, raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(str(path), f"not valid UTF-8 (byte {exc.start} of the line)", where=where) from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(str(path), f"malformed JSON ({exc.msg} at column {exc.colno})", where=where) from exc
    if not isinstance(value, dict):
        raise InputError(str(path), f"expected a JSON object, got {type(value).__name__}", where=where)
    return value


def _read_json(path: Path) -> Iterator[Record]:
    try:
        with _open_binary(path) as fh:
            raw = fh.read()
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise InputError(str(path), f"truncated or corrupt gzip stream ({exc})") from exc
    if not raw.strip():
        raise InputError(str(path), "file is empty (no records)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(str(path), "not valid UTF-8", where=f"line {line}") from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            str(path), f"malformed JSON ({exc.msg} at column {exc.colno})", where=f"line {exc.lineno}"
        ) from exc
    if isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), list):
        value = next(iter(value.values()))
    if not isinstance(value, list):
        raise InputError(str(path), f"expected a JSON array of objects, got {type(value).__name__}")
    if not value:
        raise InputError(str(path), "file is empty (no records)")
    for index, item in enumerate(value, start=1):
        where = f"record {index}"
        if not isinstance(item, dict):
            raise InputError(str(path), f"expected a JSON object, got {type(item).__name__}", where=where)
        yield Record(where, item)


def _read_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for damaged files
        raise InputError(str(path), f"unreadable Parquet ({exc})") from exc
    if table.num_rows == 0:
        raise InputError(str(path), "file is empty (no records)")
    for index, row in enumerate(table.to_pylist(), start=1):
        yield Record(f"row {index}", row)


def read_hf_dataset(
    dataset_id: str,
    *,
    config: str | None = None,
    split: str = "train",
    data_dir: str | None = None,
    revision: str | None = None,
) -> Iterator[Record]:
    """Yield the rows of a Hugging Face dataset as `Record`s located by row number.

    Input: the dataset id and optional config name, split, data_dir and revision. Needs the
    `datasets` package and access to the hub (or its local cache). Errors from the hub are
    re-raised as `InputError` naming the dataset id.
    """
    label = f"hf://{dataset_id}" + (f"/{config}" if config else "") + f"[{split}]"
    try:
        import datasets

        ds = datasets.load_dataset(dataset_id, name=config, split=split, data_dir=data_dir, revision=revision)
    except Exception as exc:
        raise InputError(label, f"could not load from the Hugging Face hub ({type(exc).__name__}: {exc})") from exc
    if len(ds) == 0:
        raise InputError(label, "dataset split is empty (no records)")
    for index, row in enumerate(ds, start=1):
        yield Record(f"row {index}", dict(row))
