"""Reading record files (JSONL, JSON, Parquet, gzipped or not) and Hugging Face datasets.

Every record comes with a human-readable location ("line 12", "record 3", "row 40") so that a
problem in the data can be reported as file + location + field. Nothing here knows about the
problem schema; see `problems.py` for that.
"""

from __future__ import annotations

import errno
import gzip
import os
import re
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathdata_pipeline.common.json_records import RecordError, decode_value, loads_record

_WHITESPACE = re.compile(r"[ \t\n\r]*")


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


@dataclass(frozen=True)
class ReadLimits:
    """Size limits for reading a local file: `max_record_bytes` per record (a JSONL line, a JSON
    array element, the text of a Parquet row) and `max_file_bytes` for the whole file after
    decompression. Past either, reading stops with an InputError naming the limit."""

    max_record_bytes: int = 16 * 2**20
    max_file_bytes: int = 4 * 2**30


DEFAULT_LIMITS = ReadLimits()


def _suffixes(path: Path) -> list[str]:
    return [s.lower() for s in path.suffixes]


def _kind(path: Path) -> str:
    """The record format of `path` (.jsonl, .json or .parquet, optionally .gz); InputError if none."""
    suffixes = _suffixes(path)
    kind = suffixes[-2] if suffixes and suffixes[-1] == ".gz" and len(suffixes) > 1 else (suffixes or [""])[-1]
    if kind not in (".jsonl", ".json", ".parquet"):
        raise InputError(
            str(path),
            f"unsupported file type {''.join(suffixes) or '(none)'}; use .jsonl, .json or .parquet (optionally .gz)",
        )
    return kind


def _check_regular_file(path: Path) -> None:
    """InputError unless `path` is a readable regular file: names a missing file, a broken
    symbolic link, a symbolic-link loop, a directory or another kind of file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            raise InputError(str(path), f"broken symbolic link (to {os.readlink(path)})") from None
        raise InputError(str(path), "file not found") from None
    except OSError as exc:
        problem = "symbolic link loop" if exc.errno == errno.ELOOP else f"cannot open ({exc.strerror})"
        raise InputError(str(path), problem) from exc
    if stat.S_ISDIR(mode):
        raise InputError(str(path), "is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise InputError(str(path), "is not a regular file")


def read_records(path: Path | str, limits: ReadLimits = DEFAULT_LIMITS) -> Iterator[Record]:
    """Yield the records of a local file, each with its location.

    Input: a path ending in .jsonl, .json or .parquet, optionally followed by .gz; the size limits.
    Output: `Record`s in file order. Raises `InputError` naming the file and the line (JSONL),
    record index (JSON) or row (Parquet), and the field where one is at fault, for: malformed
    JSON, nesting too deep to parse, an integer too long to convert, a line that is not an
    object, non-UTF-8 bytes, a record or file past `limits`, a truncated or corrupt gzip stream,
    an empty file, an unknown extension, a path that is missing, a directory or a link loop.
    JSONL lines are split on "\\n" only (never `str.splitlines`, which would break records that
    contain U+2028); blank lines are skipped.
    """
    path = Path(path)
    kind = _kind(path)
    _check_regular_file(path)
    if kind == ".parquet":
        yield from _read_parquet(path, limits)
    elif kind == ".jsonl":
        yield from _read_jsonl(path, limits)
    else:
        text, complete = _read_json_text(path, limits.max_file_bytes)
        if not complete:
            raise _too_big(path, "file after decompression", limits.max_file_bytes)
        yield from _json_records(path, text, limits)


def first_record(path: Path | str, limits: ReadLimits = DEFAULT_LIMITS) -> Record:
    """The first record of a local file, reading no more than needed for it (a JSONL line, the
    first element of a JSON array from a prefix of the file, the first Parquet batch): a sample
    for field detection. Raises InputError as `read_records` does."""
    path = Path(path)
    kind = _kind(path)
    _check_regular_file(path)
    if kind == ".parquet":
        return next(_read_parquet(path, limits, batch_size=1))
    if kind == ".jsonl":
        return next(_read_jsonl(path, limits))
    cap = min(limits.max_file_bytes, limits.max_record_bytes + 2**16)
    text, complete = _read_json_text(path, cap)
    try:
        return next(_json_records(path, text, limits))
    except InputError as exc:
        if complete or "malformed JSON" not in exc.message:
            raise
        raise InputError(
            str(path), f"the first record is not complete within {cap} bytes (max_record_bytes)", where="record 1"
        ) from exc


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _too_big(path: Path, what: str, limit: int, where: str | None = None) -> InputError:
    return InputError(str(path), f"{what} is larger than {limit} bytes (limit {_LIMIT_NAMES[what]})", where=where)


_LIMIT_NAMES = {"record": "max_record_bytes", "file after decompression": "max_file_bytes"}


def _read_jsonl(path: Path, limits: ReadLimits) -> Iterator[Record]:
    count, line_no, total = 0, 0, 0
    try:
        with _open_binary(path) as fh:
            while raw := fh.readline(limits.max_record_bytes + 2):
                line_no += 1
                total += len(raw)
                if total > limits.max_file_bytes:
                    raise _too_big(path, "file after decompression", limits.max_file_bytes, f"line {line_no}")
                if len(raw.rstrip(b"\r\n")) > limits.max_record_bytes:
                    raise _too_big(path, "record", limits.max_record_bytes, f"line {line_no}")
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
        value = loads_record(text)
    except RecordError as exc:
        raise InputError(str(path), exc.message, where=where, field=exc.field) from exc
    if not isinstance(value, dict):
        raise InputError(str(path), f"expected a JSON object, got {type(value).__name__}", where=where)
    return value


def _read_json_text(path: Path, max_bytes: int) -> tuple[str, bool]:
    """(decoded text, complete) of a JSON file: at most `max_bytes` of it, `complete` False when
    the file goes on past them (the text is then cut there, a split character dropped)."""
    try:
        with _open_binary(path) as fh:
            raw = fh.read(max_bytes + 1)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise InputError(str(path), f"truncated or corrupt gzip stream ({exc})") from exc
    if len(raw) > max_bytes:
        return raw[:max_bytes].decode("utf-8", errors="ignore"), False
    if not raw.strip():
        raise InputError(str(path), "file is empty (no records)")
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(str(path), "not valid UTF-8", where=f"line {line}") from exc


# A JSON file is an array of objects, or an object whose only key holds that array.
_WRAPPED_ARRAY = re.compile(r'\s*\{\s*"(?:[^"\\]|\\.)*"\s*:\s*\[')
_ARRAY = re.compile(r"\s*\[")
_SEPARATOR = re.compile(r"\s*(,|\])\s*")


def _json_records(path: Path, text: str, limits: ReadLimits) -> Iterator[Record]:
    """The objects of a JSON array (or of the one array inside a one-key object), decoded one by
    one so each is located and held to `limits.max_record_bytes`."""
    opening = _ARRAY.match(text) or _WRAPPED_ARRAY.match(text)
    if opening is None:
        try:
            value = loads_record(text)
        except RecordError as exc:
            raise InputError(str(path), exc.message, where=f"line {exc.line}", field=exc.field) from exc
        raise InputError(str(path), f"expected a JSON array of objects, got {type(value).__name__}")
    position, index = _WHITESPACE.match(text, opening.end()).end(), 0
    while position < len(text) and text[position] != "]":
        index += 1
        where = f"record {index}"
        try:
            item, end = decode_value(text, position)
        except RecordError as exc:
            raise InputError(str(path), exc.message, where=f"{where}, line {exc.line}", field=exc.field) from exc
        if len(text[position:end].encode("utf-8")) > limits.max_record_bytes:
            raise _too_big(path, "record", limits.max_record_bytes, where)
        if not isinstance(item, dict):
            raise InputError(str(path), f"expected a JSON object, got {type(item).__name__}", where=where)
        yield Record(where, item)
        separator = _SEPARATOR.match(text, end)
        if separator is None:
            line = text.count("\n", 0, end) + 1
            raise InputError(str(path), "malformed JSON (expected ',' or ']' after a record)", where=f"line {line}")
        position = separator.end() if separator.group(1) == "," else separator.start(1)
    if index == 0:
        raise InputError(str(path), "file is empty (no records)")
    closing = (r"\]\s*\}\s*" if opening.re is _WRAPPED_ARRAY else r"\]\s*") + r"\Z"
    if not re.compile(closing).match(text, position):
        line = text.count("\n", 0, position) + 1
        raise InputError(str(path), "malformed JSON (unexpected data after the array of records)", where=f"line {line}")


def _read_parquet(path: Path, limits: ReadLimits, batch_size: int = 4096) -> Iterator[Record]:
    """Rows of a Parquet file in batches; the file's decoded size (its metadata's uncompressed size
    up front, then the decoded batches) and the text of each row (its string and binary columns)
    are held to `limits`."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        size = sum(parquet.metadata.row_group(i).total_byte_size for i in range(parquet.num_row_groups))
        if size > limits.max_file_bytes:
            raise _too_big(path, "file after decompression", limits.max_file_bytes)
        if parquet.metadata.num_rows == 0:
            raise InputError(str(path), "file is empty (no records)")
        row = decoded = 0
        for batch in parquet.iter_batches(batch_size=batch_size):
            decoded += batch.nbytes
            if decoded > limits.max_file_bytes:
                raise _too_big(path, "file after decompression", limits.max_file_bytes, f"row {row + 1}")
            sizes = _row_text_sizes(batch)
            for offset, data in enumerate(batch.to_pylist()):
                row += 1
                if sizes[offset] > limits.max_record_bytes:
                    raise _too_big(path, "record", limits.max_record_bytes, f"row {row}")
                yield Record(f"row {row}", data)
    except InputError:
        raise
    except Exception as exc:  # pyarrow raises several unrelated types for damaged files
        raise InputError(str(path), f"unreadable Parquet ({exc})") from exc


def _row_text_sizes(batch) -> list[int]:
    """Bytes of text per row of a record batch: the sum over its string and binary columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total = pa.array([0] * batch.num_rows, pa.int64())
    for column in batch.columns:
        kind = column.type
        if (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_binary(kind)
            or (pa.types.is_large_binary(kind))
        ):
            total = pc.add(total, pc.fill_null(pc.binary_length(column), 0).cast(pa.int64()))
    return total.to_pylist()


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
