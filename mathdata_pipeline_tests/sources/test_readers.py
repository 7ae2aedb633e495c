"""Reading record files: formats, and bad input located by file, line and field."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mathdata_pipeline.sources.readers import InputError, read_records


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
