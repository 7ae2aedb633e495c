"""The table store: Parquet tables under `MATHDATA_STORAGE`, one place per asset and partition.

Layout: `<root>/<asset_key>/<partition>.parquet` for a partitioned asset and
`<root>/<asset_key>/data.parquet` otherwise, so `pyarrow.dataset.dataset(<root>/<asset_key>)`
reads every partition. Writes are atomic: a local file is written under a hidden temporary name
and renamed over the old one (a reader sees the old table or the new one, never half of one);
on object storage the table is written to a local staging file and uploaded in one PUT
(`storage/objects.py`). A local write holds a lock on its temp file, so the next write of the
same table can tell the temp files of killed writes (unlocked) from those of a write still
running, and removes the former. Folders that are not tables go through `folder`: the folder
itself on local storage, a local working copy published as a new version on object storage.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import dagster as dg
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pydantic import Field
from upath import UPath

from mathdata_pipeline.storage import objects
from mathdata_pipeline.storage.layout import table_path

# A temp file touched this recently may belong to a write that has not locked it yet.
_TEMP_GRACE_S = 30.0


class TableStore(dg.ConfigurableResource):
    """Reads and writes the pipeline's Parquet tables.

    `root` is a local path or an fsspec URL (`s3://bucket/prefix`, `gs://…`); empty means the
    `MATHDATA_STORAGE` environment variable at run time, else `./storage`.
    """

    root: str = Field(
        default="", description="Local path or object-storage URL; empty = $MATHDATA_STORAGE or ./storage"
    )

    def root_path(self) -> UPath:
        """The resolved storage root. On object storage directory listings are not cached, so a
        table or version another process wrote is seen at once."""
        root = self.root or os.environ.get("MATHDATA_STORAGE") or "storage"
        return UPath(root) if objects.is_local(UPath(root)) else UPath(root, use_listings_cache=False)

    def is_local(self) -> bool:
        """Whether the root is a local folder (not object storage)."""
        return objects.is_local(self.root_path())

    def cache_dir(self) -> Path:
        """The local folder for work that stays on this machine: the root itself when it is
        local, else `objects.cache_root` (working copies of folders, upload staging files)."""
        return Path(self.root_path().path) if self.is_local() else objects.cache_root(self.root_path())

    @contextmanager
    def folder(self, *parts: str, mode: Literal["write", "update"]) -> Iterator[Path]:
        """A local folder to write `<root>/<parts…>` (model weights, feature shards, caches,
        exports). Local root: the folder itself, nothing else happens. Object storage: a working
        copy under `cache_dir()` (`update` first pulls the published version, `write` starts from
        what is there), published as a new version when the block ends without an exception; a
        failed block publishes nothing. See `storage/objects.py` for the versions and the pointer."""
        if self.is_local():
            yield Path(self.root_path().path).joinpath(*parts)
            return
        remote, local = self.root_path().joinpath(*parts), self.cache_dir().joinpath(*parts)
        if mode == "update":
            objects.pull(remote, local)
        local.mkdir(parents=True, exist_ok=True)
        yield local
        objects.publish(local, remote)

    def fetch_folder(self, *parts: str) -> Path:
        """A local folder to read `<root>/<parts…>`: the folder itself on a local root, else a
        working copy of its published version under `cache_dir()` (pulled when out of date)."""
        if self.is_local():
            return Path(self.root_path().path).joinpath(*parts)
        local = self.cache_dir().joinpath(*parts)
        objects.pull(self.root_path().joinpath(*parts), local)
        return local

    def folder_url(self, *parts: str) -> str:
        """Where readers find the folder `<root>/<parts…>`: the folder itself on local storage,
        its published version on object storage (`<folder>/v-…`; empty when never published)."""
        if self.is_local():
            return str(Path(self.root_path().path).joinpath(*parts))
        return str(objects.current_url(self.root_path().joinpath(*parts)) or "")

    def local_dir(self, *parts: str, purpose: str) -> Path:
        """A local folder under the root for files that are not tables (model weights, feature
        shards, caches, exports): `<root>/<parts…>`. Raises ValueError naming `purpose` when the
        root is object storage."""
        if not self.is_local():
            raise ValueError(f"{purpose} writes local files and needs a local MATHDATA_STORAGE, not {self.root_path()}")
        return Path(self.root_path().path).joinpath(*parts)

    def path_for(self, asset_key: str, partition: str | None = None) -> UPath:
        """Where the table of `asset_key` (slash-separated) and `partition` lives."""
        return table_path(self.root_path(), asset_key, partition)

    def write(self, table: pa.Table, asset_key: str, partition: str | None = None) -> UPath:
        """Atomically replace the table of (asset_key, partition) with `table`; returns its path."""
        path = self.path_for(asset_key, partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.is_local():
            remove_stale_temp_files(Path(path.path))
            tmp = Path(path.parent.path) / f".{path.name}.{uuid.uuid4().hex}.tmp"
            try:
                with open(tmp, "xb") as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX)
                    pq.write_table(table, handle, compression="zstd")
                    handle.flush()
                    os.replace(tmp, path.path)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            with objects.staged_upload(path, self.cache_dir() / "_staging") as staged:
                pq.write_table(table, staged, compression="zstd")
        return path

    def exists(self, asset_key: str, partition: str | None = None) -> bool:
        """Whether a table was written for (asset_key, partition)."""
        return self.path_for(asset_key, partition).exists()

    def read(self, asset_key: str, partition: str | None = None, columns: list[str] | None = None) -> pa.Table:
        """Read one table (one partition, or the unpartitioned table). Raises FileNotFoundError
        with the asset name when it was never materialized."""
        path = self.path_for(asset_key, partition)
        if not path.exists():
            what = f"{asset_key}[{partition}]" if partition is not None else asset_key
            raise FileNotFoundError(f"table {what} not found at {path}; materialize it first")
        with path.open("rb") as fh:
            return pq.read_table(fh, columns=columns)

    def read_if_exists(
        self, asset_key: str, partition: str | None = None, columns: list[str] | None = None
    ) -> pa.Table | None:
        """`read`, or None when the table was never materialized."""
        return self.read(asset_key, partition, columns) if self.exists(asset_key, partition) else None

    def read_all(self, asset_key: str, columns: list[str] | None = None) -> pa.Table:
        """Read every partition of `asset_key` as one table (files in name order)."""
        directory = self.root_path().joinpath(*asset_key.split("/"))
        if not directory.exists():
            raise FileNotFoundError(f"no tables for {asset_key} under {directory}; materialize it first")
        dataset = pads.dataset(directory.path, format="parquet", filesystem=directory.fs)
        files = sorted(dataset.files)
        return pads.dataset(files, format="parquet", filesystem=directory.fs).to_table(columns=columns)

    def read_all_if_exists(self, asset_key: str, columns: list[str] | None = None) -> pa.Table | None:
        """`read_all`, or None when no partition was ever materialized."""
        if not self.root_path().joinpath(*asset_key.split("/")).exists():
            return None
        return self.read_all(asset_key, columns)


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Remove the temp files that killed writes of the table at `path` left behind
    (`.<name>.parquet.<uuid>.tmp` beside it): those no live writer holds locked and that were not
    touched in the last 30 seconds. Returns the removed paths."""
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime < _TEMP_GRACE_S:
                continue
            with open(tmp, "rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                tmp.unlink()
        except (BlockingIOError, FileNotFoundError):
            continue  # a live writer holds it, or it is gone already
        removed.append(tmp)
    return removed
