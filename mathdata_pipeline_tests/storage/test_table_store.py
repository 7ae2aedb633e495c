"""The Parquet table store: layout, atomic replacement, statistics."""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from mathdata_pipeline.common.table_stats import column_stats, markdown_column_stats, markdown_preview
from mathdata_pipeline.storage.resources import TableStore


def test_layout_one_file_per_partition_readable_with_pyarrow_dataset(tmp_path):
    store = TableStore(root=str(tmp_path))
    store.write(pa.table({"x": [1, 2]}), "seed_problems", "gsm8k")
    store.write(pa.table({"x": [3]}), "seed_problems", "math")
    store.write(pa.table({"y": ["a"]}), "general_pool")
    assert sorted(p.name for p in (tmp_path / "seed_problems").iterdir()) == ["gsm8k.parquet", "math.parquet"]
    assert (tmp_path / "general_pool" / "data.parquet").exists()
    assert pads.dataset(tmp_path / "seed_problems").to_table().num_rows == 3
    assert store.read_all("seed_problems").column("x").to_pylist() == [1, 2, 3]
    assert store.read("seed_problems", "math").num_rows == 1


def test_storage_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MATHDATA_STORAGE", str(tmp_path / "env-root"))
    path = TableStore().write(pa.table({"x": [1]}), "t")
    assert str(path).startswith(str(tmp_path / "env-root"))


def test_failed_write_keeps_the_previous_table_and_no_temp_files(tmp_path, monkeypatch):
    store = TableStore(root=str(tmp_path))
    store.write(pa.table({"x": [1, 2, 3]}), "t", "p")

    def failing_write_table(table, where, **kwargs):  # fault injection: dies after writing some bytes
        where.write(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", failing_write_table)
    with pytest.raises(OSError, match="disk full"):
        store.write(pa.table({"x": [9]}), "t", "p")
    monkeypatch.undo()
    assert store.read("t", "p").column("x").to_pylist() == [1, 2, 3]
    assert [p.name for p in (tmp_path / "t").iterdir()] == ["p.parquet"]


def test_missing_table_names_the_asset(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"seed_problems\[math\] not found"):
        TableStore(root=str(tmp_path)).read("seed_problems", "math")


def test_preview_and_column_stats():
    table = pa.table(
        {"q": ["a|b", None, "long " * 30], "level": pa.array([1, 5, None], pa.int8()), "ok": [True, False, True]}
    )
    preview = markdown_preview(table, rows=2)
    assert preview.splitlines()[0] == "| q | level | ok |" and "a\\|b" in preview and len(preview.splitlines()) == 4
    stats = column_stats(table)
    assert stats["q"]["nulls"] == 1 and stats["q"]["distinct"] == 2 and stats["q"]["max_length"] == 150
    assert stats["level"] == {"nulls": 1, "min": 1, "max": 5, "mean": 3.0}
    assert stats["ok"]["true"] == 2
    assert "| level | int8 |" in markdown_column_stats(table)


def _stale_temp(folder, table_name: str, age_s: float = 3600.0):
    """A temp file exactly as a killed write leaves it, last modified `age_s` ago."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{table_name}.{uuid.uuid4().hex}.tmp"
    tmp.write_bytes(b"PAR1 half a table")
    os.utime(tmp, (time.time() - age_s, time.time() - age_s))
    return tmp


def test_next_write_removes_stale_temp_files_of_its_table_only(tmp_path):
    store = TableStore(root=str(tmp_path))
    stale = _stale_temp(tmp_path / "t", "p.parquet")
    other = _stale_temp(tmp_path / "t", "q.parquet")
    store.write(pa.table({"x": [1]}), "t", "p")
    assert not stale.exists(), "a killed write's temp file survived the next write of its table"
    assert other.exists()  # another table's temp file waits for that table's next write


def test_temp_file_of_a_live_writer_is_kept(tmp_path):
    store = TableStore(root=str(tmp_path))
    live = _stale_temp(tmp_path / "t", "p.parquet")
    with open(live, "rb") as handle:  # a concurrent writer holds its temp file locked while it writes
        fcntl.flock(handle, fcntl.LOCK_EX)
        store.write(pa.table({"x": [1]}), "t", "p")
        assert live.exists()


@pytest.mark.parametrize("partition", ["..", "../../escape", "a/b", "nul\x00byte", "my spec", "é" * 80])
def test_no_partition_key_reaches_outside_its_asset_folder(tmp_path, partition):
    store = TableStore(root=str(tmp_path / "root"))
    path = Path(store.write(pa.table({"x": [1]}), "t", partition).path)
    assert path.parent == tmp_path / "root" / "t"
    assert store.read("t", partition).num_rows == 1
