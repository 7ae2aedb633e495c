"""Object storage (`s3://…` through fsspec/s3fs) with the table store's atomic-replace promise.

Files: a table is written in full to a local staging file first and then uploaded with one PUT
(s3fs uses a multipart upload above its block size, which S3 also completes in one step), so
readers see the previous object until the upload has finished, and a writer that fails or is
killed before that leaves the previous object untouched. (Writing through `fs.open("wb")`
directly is not safe: an exception inside the `with` block still closes the file, which uploads
what was written so far.)

Folders (model weights, feature shards, caches, mixture exports) cannot be swapped in one step on
object storage. They are published as a new version beside the old ones,
`<folder>/v-<time>-<hex>/…`, and then the pointer object `<folder>/CURRENT` (the version's name)
is replaced with one PUT: readers resolve the pointer and see the previous version or the new
one, never a mix. The version before the current one is kept for readers that resolved the
pointer just before it moved; older ones are deleted.

Work on a folder happens in a local working copy under the local cache folder (`cache_root`),
which remembers the version it was pulled at in `.mathdata-version`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from upath import UPath

POINTER = "CURRENT"
VERSION_PREFIX = "v-"
MARKER = ".mathdata-version"
LOCAL_PROTOCOLS = ("", "file", "local")


def is_local(path) -> bool:
    """Whether `path` (a str, Path or UPath) is on the local file system."""
    return getattr(path, "protocol", "") in LOCAL_PROTOCOLS


def cache_root(root: UPath) -> Path:
    """The local folder that holds working copies, staging files and ledgers for the object
    storage `root`: `$MATHDATA_CACHE_DIR/<protocol>/<bucket/prefix>` (default `./.mathdata_cache`)."""
    base = Path(os.environ.get("MATHDATA_CACHE_DIR") or ".mathdata_cache")
    name = root.path.strip("/") or "root"
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:8]  # two roots never share a folder
    return base / (root.protocol or "file") / f"{name.replace('/', '_')}-{digest}"


@contextmanager
def staged_upload(destination: UPath, staging_dir: Path | None = None) -> Iterator[Path]:
    """Yield a local file path to write; when the block ends without an exception the file is
    uploaded to the object `destination` in one PUT (the atomic replace), and it is removed in
    any case. `staging_dir` is where the staging file lives (default: the system's temp folder)."""
    if staging_dir is not None:
        staging_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=".mathdata-upload-", suffix=".tmp", dir=staging_dir)
    os.close(handle)
    staged = Path(name)
    try:
        yield staged
        destination.fs.put_file(str(staged), destination.path)
    finally:
        staged.unlink(missing_ok=True)


def current_version(remote: UPath) -> str | None:
    """The name of the published version of the folder `remote` (what `CURRENT` names), or None
    when none was ever published."""
    pointer = remote / POINTER
    remote.fs.invalidate_cache(remote.path)  # another process may have published since a listing
    if not pointer.exists():
        return None
    name = pointer.read_text().strip()
    if not name.startswith(VERSION_PREFIX) or "/" in name:
        raise ValueError(f"{pointer}: not a folder version name: {name!r}")
    return name


def current_url(remote: UPath) -> UPath | None:
    """Where the published content of the folder `remote` lives now (None: never published)."""
    version = current_version(remote)
    return remote / version if version else None


def pull(remote: UPath, local: Path) -> str | None:
    """Make `local` a working copy of the published version of `remote`. A working copy already
    at that version is kept as it is (it may hold newer, unpublished work such as the shards of
    a run that crashed); a copy at another version is replaced. Returns the version (None: never
    published; `local` is then left as it is)."""
    version = current_version(remote)
    marker = local / MARKER
    if version is None or (marker.is_file() and marker.read_text().strip() == version):
        return version
    staging = local.parent / f".{local.name}.pull-{uuid.uuid4().hex[:8]}"
    try:
        remote.fs.get((remote / version).path.rstrip("/") + "/", str(staging) + "/", recursive=True)
        staging.mkdir(parents=True, exist_ok=True)
        (staging / MARKER).write_text(version)
        shutil.rmtree(local, ignore_errors=True)
        os.rename(staging, local)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return version


def publish(local: Path, remote: UPath) -> str:
    """Upload the folder `local` as a new version of `remote`, point `CURRENT` at it (one PUT)
    and delete the versions older than the previous one. Returns the new version's name."""
    fs = remote.fs
    version = f"{VERSION_PREFIX}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    target = (remote / version).path
    for file in sorted(p for p in local.rglob("*") if p.is_file() and p.name != MARKER):
        fs.put_file(str(file), f"{target}/{file.relative_to(local).as_posix()}")
    fs.pipe_file((remote / POINTER).path, version.encode())
    (local / MARKER).write_text(version)
    _drop_old_versions(remote, keep={version})
    return version


def _drop_old_versions(remote: UPath, keep: set[str]) -> None:
    """Delete every version of `remote` except `keep` and the newest other one."""
    fs = remote.fs
    fs.invalidate_cache(remote.path)
    names = sorted(
        Path(p).name for p in fs.ls(remote.path, detail=False) if Path(p).name.startswith(VERSION_PREFIX)
    )
    older = [n for n in names if n not in keep]
    for name in older[:-1]:
        fs.rm((remote / name).path, recursive=True)
