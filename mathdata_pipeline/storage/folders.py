"""Replacing a whole local folder at once (mixture exports): the new content is written into a
staging folder beside the target and swapped in whole, so a reader sees the old folder or the new
one, never a mix of both."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@contextmanager
def replaced_folder(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside `target` (`.<name>.tmp-<hex>`); when the block ends
    without an exception, the staging folder becomes `target` in one step and the previous content
    is deleted. On an exception `target` is untouched and the staging folder removed.

    Writers of folders under the same parent take turns (an exclusive lock on the parent folder),
    so what a killed writer left (`.<name>.tmp-*`, `.<name>.old-*`) is removed on entry.
    """
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for leftover in [*parent.glob(f".{target.name}.tmp-*"), *parent.glob(f".{target.name}.old-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        staging = parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        try:
            yield staging
            _swap_in(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # after a swap: the previous content
    finally:
        os.close(lock)


def _swap_in(staging: Path, target: Path) -> None:
    """Make `staging` the folder at `target`. With an existing target the two are exchanged
    atomically (Linux renameat2 RENAME_EXCHANGE) and `staging` then holds the old content; where
    that is unavailable the old folder is renamed aside first (for a moment there is no folder
    at `target`, but never a mixed one)."""
    if not target.exists():
        os.rename(staging, target)
        return
    if _exchange(staging, target):
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
    os.rename(target, old)
    os.rename(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths; False where the system or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))
