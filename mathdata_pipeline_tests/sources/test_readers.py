"""Reading record files: formats, and bad input located by file, line and field."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mathdata_pipeline.sources.readers import InputError, ReadLimits, first_record, read_records


def _jsonl(path, lines: list[bytes], *, gz: bool = False):
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_jsonl_json_parquet_and_gzip_read_the_same_records(tmp_path):
    records = [{"question": "1+1?", "answer": "2"}, {"question": "line\u2028separator", "answer": "3"}]
    _jsonl(tmp_path / "a.jsonl", [json.dumps(r).encode() for r in records])
    _jsonl(tmp_path / "a.jsonl.gz", [json.dumps(r, ensure_ascii=False).encode() for r in records], gz=True)
    (tmp_path / "a.json").write_text(json.dumps(records))
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "a.parquet")
    for name in ("a.jsonl", "a.jsonl.gz", "a.json", "a.parquet"):
        got = list(read_records(tmp_path / name))
        assert [r.data for r in got] == records, name
    assert [r.where for r in read_records(tmp_path / "a.jsonl")] == ["line 1", "line 2"]


def test_u2028_inside_a_record_does_not_split_it(tmp_path):
    _jsonl(tmp_path / "u.jsonl", ['{"q": "a\u2028b\u0085c"}'.encode("utf-8")])
    (record,) = list(read_records(tmp_path / "u.jsonl"))
    assert record.data["q"] == "a\u2028b\u0085c"


@pytest.mark.parametrize(
    "lines, message, where",
    [
        ([b'{"q": 1}', b'{"q": '], "malformed JSON", "line 2"),
        ([b'{"q": 1}', b"[1, 2]"], "expected a JSON object, got list", "line 2"),
        ([b'{"q": 1}', b'{"q": "caf\xe9"}'], "not valid UTF-8", "line 2"),
    ],
)
def test_bad_lines_are_named(tmp_path, lines, message, where):
    path = _jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(InputError) as err:
        list(read_records(path))
    assert message in str(err.value) and where in str(err.value) and str(path) in str(err.value)


def test_empty_and_truncated_gzip(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        list(read_records(empty))
    whole = gzip.compress(b"".join(json.dumps({"i": i, "pad": "x" * 50}).encode() + b"\n" for i in range(2000)))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match=r"truncated or corrupt gzip stream after line \d+"):
        list(read_records(cut))


def test_json_array_errors_name_the_record(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"q": 1}, "oops"]))
    with pytest.raises(InputError, match="record 2"):
        list(read_records(path))
    path.write_text('[{"q": 1},\n {"q": }]')
    with pytest.raises(InputError, match="line 2"):
        list(read_records(path))


def test_unsupported_extension_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="unsupported file type"):
        list(read_records(tmp_path / "a.csv"))
    with pytest.raises(InputError, match="file not found"):
        list(read_records(tmp_path / "missing.jsonl"))


DEEP = '{"question": "q", "deep": ' + "[" * 50_000 + "]" * 50_000 + "}"
LONG_INT = '{"question": "q", "answer": ' + "9" * 5000 + "}"


@pytest.mark.parametrize(
    ("line", "field", "message"), [(DEEP, "deep", "nested too deeply"), (LONG_INT, "answer", "5000 digits")]
)
def test_recursion_and_integer_limits_name_file_line_and_field(tmp_path, line, field, message):
    path = _jsonl(tmp_path / "bad.jsonl", [b'{"question": "ok"}', line.encode()])
    with pytest.raises(InputError) as err:
        list(read_records(path))
    assert f"{path}: line 2: field '{field}': " in str(err.value) and message in str(err.value)
    array = tmp_path / "bad.json"
    array.write_text(f'[{{"question": "ok"}},\n {line}]')
    with pytest.raises(InputError) as err:
        list(read_records(array))
    assert f"{array}: record 2, line 2: field '{field}': " in str(err.value) and message in str(err.value)


def test_directory_link_loop_and_broken_link_are_named_as_such(tmp_path):
    folder = tmp_path / "dir.jsonl"
    folder.mkdir()
    with pytest.raises(InputError, match="is a directory"):
        list(read_records(folder))
    loop = tmp_path / "loop.jsonl.gz"
    loop.symlink_to(loop)
    with pytest.raises(InputError, match="symbolic link loop"):
        list(read_records(loop))
    broken = tmp_path / "broken.parquet"
    broken.symlink_to(tmp_path / "nowhere.parquet")
    with pytest.raises(InputError, match="broken symbolic link"):
        list(read_records(broken))


def test_a_record_past_the_size_limit_stops_reading_at_its_line(tmp_path):
    limits = ReadLimits(max_record_bytes=64 * 1024)
    bomb = _jsonl(
        tmp_path / "bomb.jsonl.gz", [b'{"question": "ok"}', b'{"question": "' + b"x" * 2**20 + b'"}'], gz=True
    )
    with pytest.raises(InputError) as err:
        list(read_records(bomb, limits))
    assert f"{bomb}: line 2: record is larger than 65536 bytes (limit max_record_bytes)" == str(err.value)
    array = tmp_path / "big.json"
    array.write_text(json.dumps([{"question": "ok"}, {"question": "x" * 2**20}]))
    with pytest.raises(InputError, match="record 2: record is larger than 65536 bytes"):
        list(read_records(array, limits))


def test_a_file_past_the_decompressed_size_limit_is_refused(tmp_path):
    limits = ReadLimits(max_file_bytes=100_000)
    rows = [{"question": f"q{i}", "pad": "y" * 100} for i in range(2000)]
    _jsonl(tmp_path / "a.jsonl.gz", [json.dumps(r).encode() for r in rows], gz=True)
    (tmp_path / "a.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet", compression="zstd")
    for name in ("a.jsonl.gz", "a.json", "a.parquet"):
        with pytest.raises(
            InputError, match=r"file after decompression is larger than 100000 bytes \(limit max_file_bytes\)"
        ):
            list(read_records(tmp_path / name, limits))


def test_field_detection_reads_a_sample_not_the_whole_file(tmp_path):
    limits = ReadLimits(max_record_bytes=4096, max_file_bytes=200_000)
    rows = [{"question": "first"}] + [{"question": "x" * 3000}] * 200  # ~600 kB: past the file limit
    (tmp_path / "a.json").write_text(json.dumps(rows))
    _jsonl(tmp_path / "a.jsonl", [json.dumps(rows[0]).encode(), b"not json at all"])
    table = pa.Table.from_pylist([{"question": "first"}, {"question": "x" * 10_000}])
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=1)  # the second row group breaks the row limit
    for name in ("a.json", "a.jsonl", "a.parquet"):
        assert first_record(tmp_path / name, limits).data == {"question": "first"}, name
        with pytest.raises(InputError):
            list(read_records(tmp_path / name, limits))
