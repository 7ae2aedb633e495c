"""Tables and folders on object storage (a real S3-compatible server on 127.0.0.1, moto's server
mode): the same reads and writes as on local disk, and the atomic-replace promise under faults."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from upath import UPath

from mathdata_pipeline.common.paths import REPO_ROOT
from mathdata_pipeline.common.samples import SampleSink
from mathdata_pipeline.storage import objects
from mathdata_pipeline.storage import resources as store_module
from mathdata_pipeline.storage.resources import TableStore


def test_tables_round_trip_on_s3(s3_storage):
    store = TableStore(root=s3_storage)
    assert not store.is_local()
    store.write(pa.table({"x": [1, 2]}), "seed_problems", "gsm8k")
    store.write(pa.table({"x": [3]}), "seed_problems", "math")
    assert store.exists("seed_problems", "gsm8k") and not store.exists("seed_problems", "nope")
    assert store.read("seed_problems", "math").column("x").to_pylist() == [3]
    assert store.read_all("seed_problems").column("x").to_pylist() == [1, 2, 3]
    assert store.read_if_exists("general_pool") is None and store.read_all_if_exists("general_pool") is None
    assert str(store.path_for("seed_problems", "gsm8k")) == f"{s3_storage}/seed_problems/gsm8k.parquet"
    # nothing but the two tables under the asset's prefix: no temporary objects
    fs = UPath(s3_storage).fs
    assert sorted(fs.ls(f"{UPath(s3_storage).path}/seed_problems", detail=False, refresh=True)) == [
        f"{UPath(s3_storage).path}/seed_problems/gsm8k.parquet",
        f"{UPath(s3_storage).path}/seed_problems/math.parquet",
    ]


def _fault_half_write_then_fail(table, where, **kwargs):
    """FAULT INJECTED: writes the start of a Parquet file to `where`, then fails like a writer
    that dies midway."""
    data = b"PAR1" + b"\0" * 1024
    if hasattr(where, "write"):
        where.write(data)
    else:
        with open(where, "wb") as handle:
            handle.write(data)
    raise OSError("fault injected: the writer failed midway")


def test_a_failed_write_leaves_the_previous_table(s3_storage, monkeypatch):
    store = TableStore(root=s3_storage)
    store.write(pa.table({"x": [1, 2, 3]}), "general_pool")
    with monkeypatch.context() as patch, pytest.raises(OSError, match="fault injected"):
        patch.setattr(store_module.pq, "write_table", _fault_half_write_then_fail)
        store.write(pa.table({"x": [9]}), "general_pool")
    assert store.read("general_pool").column("x").to_pylist() == [1, 2, 3]
    assert not list((store.cache_dir() / "_staging").glob("*")), "the staging file was not removed"


def test_a_writer_killed_after_its_staging_write_leaves_the_previous_table(s3_storage, tmp_path):
    store = TableStore(root=s3_storage)
    store.write(pa.table({"x": [1, 2, 3]}), "general_pool")
    # FAULT INJECTED: a writer process that is killed (SIGKILL) when its upload starts, after the
    # whole new table is in its local staging file
    script = textwrap.dedent(
        f"""
        import os, signal
        import pyarrow as pa, s3fs
        from mathdata_pipeline.storage.resources import TableStore

        async def killed_during_upload(self, lpath, rpath, **kwargs):
            assert os.path.getsize(lpath) > 0
            os.kill(os.getpid(), signal.SIGKILL)

        s3fs.S3FileSystem._put_file = killed_during_upload
        TableStore(root={s3_storage!r}).write(pa.table({{"x": list(range(1000))}}), "general_pool")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=dict(os.environ), timeout=120)
    assert done.returncode == -9
    assert store.read("general_pool").column("x").to_pylist() == [1, 2, 3]


def test_sample_sink_uploads_whole_or_not_at_all(s3_storage, tmp_path):
    schema = pa.schema([("value", pa.string())])
    destination = UPath(s3_storage) / "rejection_samples" / "gsm8k.parquet"
    with SampleSink(tmp_path / "parts", schema, 2) as sink:
        sink.append(1, 0, {"value": "b"})
        sink.append(0, 0, {"value": "a"})
        sink.write(destination)

    def failing(table, queries):
        raise OSError("fault injected: the transform failed midway")

    with SampleSink(tmp_path / "parts2", schema, 2) as sink:
        sink.append(0, 0, {"value": "z"})
        with pytest.raises(OSError, match="fault injected"):
            sink.write(destination, transform=failing)
    with destination.open("rb") as handle:
        assert pq.read_table(handle).column("value").to_pylist() == ["a", "b"]


def test_folders_publish_versions_behind_a_pointer(s3_storage):
    store = TableStore(root=s3_storage)
    assert store.folder_url("gradient_features") == ""
    with store.folder("gradient_features", mode="update") as folder:
        (folder / "shard-0.npy").write_bytes(b"one")
    first = store.folder_url("gradient_features")
    assert first.startswith(f"{s3_storage}/gradient_features/v-")
    assert UPath(first).joinpath("shard-0.npy").read_bytes() == b"one"

    with store.folder("gradient_features", mode="update") as folder:  # a working copy of the first version
        assert (folder / "shard-0.npy").read_bytes() == b"one"
        (folder / "shard-1.npy").write_bytes(b"two")
    second = store.folder_url("gradient_features")
    assert second != first and UPath(second).joinpath("shard-1.npy").read_bytes() == b"two"

    with pytest.raises(RuntimeError), store.folder("gradient_features", mode="update") as folder:
        (folder / "shard-2.npy").write_bytes(b"three")
        raise RuntimeError("the asset failed")
    assert store.folder_url("gradient_features") == second  # a failed block publishes nothing

    fetched = store.fetch_folder("gradient_features")
    assert sorted(p.name for p in fetched.iterdir() if p.name != objects.MARKER) == [
        "shard-0.npy",
        "shard-1.npy",
        "shard-2.npy",  # the local working copy keeps unpublished work for a rerun
    ]


def test_a_publish_killed_before_its_pointer_leaves_the_previous_version(s3_storage, tmp_path, monkeypatch):
    remote = UPath(s3_storage) / "mixture" / "spec_export"
    first_dir = tmp_path / "first"
    first_dir.mkdir()
    (first_dir / "manifest.json").write_text("{}")
    (first_dir / "mixture.jsonl").write_text('{"row": 1}\n')
    first = objects.publish(first_dir, remote)

    second_dir = tmp_path / "second"
    (second_dir / "hf_dataset").mkdir(parents=True)
    (second_dir / "hf_dataset" / "data.arrow").write_bytes(b"new")
    (second_dir / "mixture.jsonl").write_text('{"row": 2}\n')

    def pointer_write_fails(path, value, **kwargs):  # FAULT INJECTED: dies before the pointer moves
        raise OSError("fault injected: killed before the pointer write")

    with monkeypatch.context() as patch, pytest.raises(OSError, match="fault injected"):
        patch.setattr(remote.fs, "pipe_file", pointer_write_fails)
        objects.publish(second_dir, remote)
    assert objects.current_version(remote) == first
    assert (objects.current_url(remote) / "mixture.jsonl").read_text() == '{"row": 1}\n'
    pulled = tmp_path / "pulled"
    assert objects.pull(remote, pulled) == first
    assert sorted(p.name for p in pulled.iterdir()) == sorted([objects.MARKER, "manifest.json", "mixture.jsonl"])


def test_old_versions_are_dropped_but_the_previous_one_stays(s3_storage, tmp_path):
    remote = UPath(s3_storage) / "sft_model" / "spec"
    (tmp_path / "model").mkdir()
    versions = []
    for text in ("a", "b", "c"):
        (tmp_path / "model" / "weights.bin").write_text(text)
        versions.append(objects.publish(tmp_path / "model", remote))
    remote.fs.invalidate_cache()
    left = sorted(p.name for p in remote.iterdir() if p.name.startswith(objects.VERSION_PREFIX))
    assert left == versions[1:]


def test_ledgers_stay_on_local_disk_with_object_storage(s3_storage, monkeypatch, tmp_path):
    from mathdata_pipeline.engines.resources import default_ledger_dir

    monkeypatch.setenv("MATHDATA_STORAGE", s3_storage)
    monkeypatch.delenv("MATHDATA_LEDGER_DIR", raising=False)
    assert default_ledger_dir() == tmp_path / "mathdata-cache" / "_ledger"
