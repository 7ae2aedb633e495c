"""The services the scale-out tests start themselves, on 127.0.0.1 with free ports: a PostgreSQL 15
server, an S3-compatible server (moto's server mode), a local Ray cluster (`local_ray_cluster`) and a
Dagster UI server (`dagster_ui_server`). The first two die with the test process: the
PostgreSQL server is a child that gets SIGQUIT (immediate shutdown) when pytest exits, however it
exits, and the S3 server is a thread of the pytest process. They fail, never skip, when they
cannot start."""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

POSTGRES_BIN = Path(os.environ.get("MATHDATA_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
POSTGRES_USER = "mathdata"
POSTGRES_DB = "dagster"
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_user() -> dict:
    """PostgreSQL refuses to run as root: as root, its processes run as `nobody`."""
    return {"user": "nobody", "group": "nogroup"} if os.geteuid() == 0 else {}


def _die_with_parent() -> None:
    """In the child, after the user switch: get SIGQUIT when the parent (pytest) exits."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT, 0, 0, 0)


def _wait_until_accepting(port: int, process: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    """Wait until the server accepts connections; fail with its log when it exits or times out."""
    import psycopg2

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg2.connect(host="127.0.0.1", port=port, user=POSTGRES_USER, dbname="postgres").close()
            return
        except psycopg2.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {log.read_text()[-3000:]}") from None
            time.sleep(0.2)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[SimpleNamespace]:
    """A throwaway PostgreSQL server (trust auth, database `dagster`) on 127.0.0.1, stopped and
    deleted after the session. Yields the connection as the DAGSTER_PG_* variables that
    docker/dagster.yaml reads, and the server log."""
    assert (POSTGRES_BIN / "initdb").is_file(), (
        f"PostgreSQL 15 binaries not found under {POSTGRES_BIN} (apt-get install postgresql-15, or set MATHDATA_POSTGRES_BIN)"
    )
    root = Path(tempfile.mkdtemp(prefix="mathdata-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "nobody", "nogroup")
    data, port, log = root / "data", free_port(), root / "server.log"
    initdb = [str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", POSTGRES_USER, "--auth=trust", "-E", "UTF8"]
    done = subprocess.run(initdb, capture_output=True, text=True, timeout=120, **_server_user())
    assert done.returncode == 0, f"initdb failed: {done.stdout}{done.stderr}"
    command = [str(POSTGRES_BIN / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(root)]
    command += ["-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"]
    with open(log, "wb") as sink:
        server = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, **_server_user()
        )
    try:
        _wait_until_accepting(port, server, log)
        _create_database(port)
        yield SimpleNamespace(
            env={
                "DAGSTER_PG_HOST": "127.0.0.1",
                "DAGSTER_PG_PORT": str(port),
                "DAGSTER_PG_USER": POSTGRES_USER,
                "DAGSTER_PG_PASSWORD": "unused-with-trust-auth",
                "DAGSTER_PG_DB": POSTGRES_DB,
            },
            log=log,
        )
    finally:
        server.send_signal(signal.SIGINT)  # fast shutdown: disconnect clients, then stop
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(root, ignore_errors=True)


def _create_database(port: int) -> None:
    """Create the database POSTGRES_DB."""
    import psycopg2

    connection = psycopg2.connect(host="127.0.0.1", port=port, user=POSTGRES_USER, dbname="postgres")
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {POSTGRES_DB}")
    finally:
        connection.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SimpleNamespace]:
    """moto's S3-compatible server on 127.0.0.1, in a thread of this process. Yields its `url`
    and `env`: the AWS_* variables (endpoint, dummy credentials, region) that s3fs and botocore
    read, for this process and for the processes the tests start."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        yield SimpleNamespace(
            url=url,
            env={
                "AWS_ENDPOINT_URL": url,
                "AWS_ACCESS_KEY_ID": "mathdata-test",
                "AWS_SECRET_ACCESS_KEY": "mathdata-test",
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        )
    finally:
        server.stop()


@pytest.fixture
def s3_storage(s3_server, monkeypatch, tmp_path) -> str:
    """A fresh bucket on the S3 server with the AWS_* variables set for this test: yields the
    storage root `s3://<bucket>/tables` (set it as MATHDATA_STORAGE or a TableStore root). The
    local cache folder of object storage (ledgers, working copies) is a temporary folder."""
    import fsspec

    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MATHDATA_CACHE_DIR", str(tmp_path / "mathdata-cache"))
    bucket = f"mathdata-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("s3", endpoint_url=s3_server.url, skip_instance_cache=True)
    fs.mkdir(bucket)
    return f"s3://{bucket}/tables"


RAY_OBJECT_STORE = 80 * 2**20  # the smallest Ray accepts: the tests pass only small values


@contextmanager
def local_ray_cluster(workers: int = 2, cpus_per_worker: int = 1, gpus_per_worker: int = 0):
    """A Ray head without CPUs (so no task or actor lands on it) and `workers` worker nodes on
    this machine, each with `cpus_per_worker` CPUs (and `gpus_per_worker` GPUs); every Ray process
    is stopped when the block ends. Yields `ray.cluster_utils.Cluster` (`.address` for `ray.init`)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "object_store_memory": RAY_OBJECT_STORE},
    )
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, object_store_memory=RAY_OBJECT_STORE)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


@contextmanager
def dagster_ui_server(command: list[str], *, cwd: Path, env: dict, log: Path) -> Iterator[str]:
    """Run a Dagster UI server (`dagster dev` or `dagster-webserver`: `command` without host and
    port) on a free loopback port, in its own process group, writing to `log`; wait until it answers
    `/server_info` (failing with the log's tail if it exits, or after 180 s). Yields its base URL;
    the whole process group is stopped when the block ends."""
    import urllib.request

    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, "-h", "127.0.0.1", "-p", str(port)],
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{base}/server_info", timeout=2).close()
                break
            except OSError:
                assert process.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"{command[0]} did not answer /server_info in 180 s"
                time.sleep(1)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
