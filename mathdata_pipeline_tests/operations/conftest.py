"""Fixtures for the scale-out tests: a real PostgreSQL 15 server on 127.0.0.1 and free ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

POSTGRES_BIN = Path(os.environ.get("MATHDATA_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
POSTGRES_USER = "mathdata"
POSTGRES_DB = "dagster"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run `command` as `nobody`."""
    return ["runuser", "-u", "nobody", "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str], what: str) -> None:
    """Run one PostgreSQL tool; fail naming `what` with its output when it fails."""
    done = subprocess.run(_as_server_user(command), capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"PostgreSQL {what} failed ({done.returncode}): {done.stdout}{done.stderr}")


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server (trust auth, database `dagster`) on 127.0.0.1, stopped and
    deleted after the session. It fails, never skips, when the server cannot start. Yields the
    connection as the DAGSTER_PG_* variables that docker/dagster.yaml reads."""
    assert (POSTGRES_BIN / "initdb").is_file(), (
        f"PostgreSQL 15 binaries not found under {POSTGRES_BIN} (apt-get install postgresql-15, or set MATHDATA_POSTGRES_BIN)"
    )
    root = Path(tempfile.mkdtemp(prefix="mathdata-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "nobody", "nogroup")
    data, port = root / "data", free_port()
    _run([str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", POSTGRES_USER, "--auth=trust", "-E", "UTF8"], "initdb")
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off"
    _run(
        [str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-o", options, "-w", "start"],
        "start",
    )
    try:
        _run(
            [str(POSTGRES_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", POSTGRES_USER, POSTGRES_DB],
            "createdb",
        )
        yield SimpleNamespace(
            env={
                "DAGSTER_PG_HOST": "127.0.0.1",
                "DAGSTER_PG_PORT": str(port),
                "DAGSTER_PG_USER": POSTGRES_USER,
                "DAGSTER_PG_PASSWORD": "unused-with-trust-auth",
                "DAGSTER_PG_DB": POSTGRES_DB,
            },
            log=root / "server.log",
        )
    finally:
        _run([str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], "stop")
        shutil.rmtree(root, ignore_errors=True)
