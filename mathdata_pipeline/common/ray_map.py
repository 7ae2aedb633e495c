"""Chunks of one step's work over a Ray cluster's workers, results back to the step as they finish.

`RayPool` starts `workers` Ray actors; each builds its model ONCE, on its own node, from
`build(**settings)` (a picklable callable and plain settings, never a pickled model), and then runs
`fn(model, chunk)` for every chunk sent to it. `RayPool.map` keeps one chunk in flight per actor
and yields `(tag, result)` in completion order, so the caller (the Dagster step) writes each
chunk's shard, cache rows or ledger entries as soon as it arrives: a worker lost mid-run costs only
the chunk it held. That chunk goes back to the queue for the other actors, at most `max_attempts`
times in all (a chunk that kills every worker it meets is not retried forever); then, or when no
actor is left, `RayMapError` says which chunk and why. An exception raised by `fn` itself is a bug
or bad input, not a lost worker: it is raised in the step as it was raised on the worker.

Ray is imported only when a pool is built, so the local path never imports it.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

_START_TIMEOUT_S = 900.0  # a large model loads for minutes on a GPU node
_CONNECT_TIMEOUT_S = 10.0


class RayMapError(RuntimeError):
    """The cluster cannot be reached, no worker started or is left, or a chunk lost its worker
    `max_attempts` times."""


@dataclass(frozen=True)
class RayCompute:
    """Where and how a stage's chunks run on Ray.

    Parameters: `address` for `ray.init` ("auto": this machine's cluster or $RAY_ADDRESS;
    "host:port" of the head; "ray://host:10001" through Ray Client); `workers`, the number of
    actors (0 = one per `gpus_per_worker` GPUs of the cluster, or one per node with CPUs when
    `gpus_per_worker` is 0); `gpus_per_worker` and `cpus_per_worker` reserved by each actor;
    `max_attempts`, how many workers one chunk may lose before the step fails.
    """

    address: str = "auto"
    workers: int = 0
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    max_attempts: int = 3


class ChunkWorker:
    """A Ray actor's body: the model built from `build(**settings)`, and `run(fn, chunk)`."""

    def __init__(self, build: Callable[..., Any], settings: dict):
        self._model = build(**settings)

    def ready(self) -> tuple[int, str]:
        """(this process's pid, the Ray node id it runs on)."""
        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()

    def run(self, fn: Callable[[Any, Any], Any], chunk: Any) -> Any:
        """`fn(model, chunk)`."""
        return fn(self._model, chunk)


@dataclass
class PoolWorker:
    """One actor: its handle, pid and node, whether it is alive, and the tags it finished."""

    actor: Any
    pid: int = 0
    node: str = ""
    alive: bool = True
    finished: list = field(default_factory=list)


class RayPool:
    """`compute.workers` actors running `build(**settings)` on the Ray cluster of `compute`
    (see module doc). Joins the Ray connection this process already has, else opens one and
    closes it in `close`. Use as a context manager, or call `close`.
    Raises RayMapError when the cluster cannot be reached or an actor does not start."""

    def __init__(self, build: Callable[..., Any], settings: dict, compute: RayCompute):
        import ray

        if compute.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {compute.max_attempts}")
        self.compute = compute
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            check_reachable(compute.address)
            try:
                ray.init(address=compute.address, logging_level="WARNING", log_to_driver=False)
            except (ConnectionError, RuntimeError, TimeoutError) as exc:
                raise RayMapError(f"cannot reach the Ray cluster at {compute.address!r}: {exc}") from exc
        count = compute.workers or workers_for(ray.nodes(), compute.gpus_per_worker)
        actor = ray.remote(ChunkWorker).options(
            num_cpus=compute.cpus_per_worker,
            num_gpus=compute.gpus_per_worker,
            max_restarts=0,
            scheduling_strategy="SPREAD",
        )
        self.workers = [PoolWorker(actor.remote(build, settings)) for _ in range(count)]
        try:
            ready = ray.get([w.actor.ready.remote() for w in self.workers], timeout=_START_TIMEOUT_S)
        except Exception as exc:
            self.close()
            raise RayMapError(f"{count} Ray worker(s) building {_name(build)} did not start: {exc}") from exc
        for worker, (pid, node) in zip(self.workers, ready, strict=True):
            worker.pid, worker.node = pid, node
        self.sent: dict[Hashable, int] = {}  # how often each tag was sent to a worker
        self.build_name = _name(build)

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def describe(self) -> str:
        """Where the chunks ran, for metadata: "ray: N workers, chunks per worker [a, b, ...]"."""
        return f"ray: {len(self.workers)} workers, chunks per worker {[len(w.finished) for w in self.workers]}"

    def live(self) -> list[PoolWorker]:
        """The workers not known to be dead."""
        return [w for w in self.workers if w.alive]

    def call(self, fn: Callable[[Any, Any], Any], argument: Any = None) -> Any:
        """`fn(model, argument)` on one live worker (e.g. a settings key); a worker that died is
        skipped for the next. Raises RayMapError when none is left."""
        return next(self.map(fn, [("call", argument)]))[1]

    def map(
        self, fn: Callable[[Any, Any], Any], chunks: Iterable[tuple[Hashable, Any]]
    ) -> Iterator[tuple[Hashable, Any]]:
        """`(tag, fn(model, chunk))` for each `(tag, chunk)`, in completion order (see module doc).
        Stopping the iteration early leaves the chunks in flight to finish unread."""
        import ray

        backlog: deque[tuple[Hashable, Any, int]] = deque((tag, chunk, 0) for tag, chunk in chunks)
        flight: dict[Any, tuple[Hashable, Any, int, PoolWorker]] = {}
        while backlog or flight:
            busy = {id(holder) for *_, holder in flight.values()}
            for worker in self.live():
                if backlog and id(worker) not in busy:
                    tag, chunk, attempt = backlog.popleft()
                    flight[worker.actor.run.remote(fn, chunk)] = (tag, chunk, attempt + 1, worker)
                    self.sent[tag] = self.sent.get(tag, 0) + 1
            if not flight:
                raise RayMapError(f"every Ray worker building {self.build_name} has died; {len(backlog)} chunk(s) left")
            (ref,), _ = ray.wait(list(flight), num_returns=1)
            tag, chunk, attempt, worker = flight.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                raise exc.as_instanceof_cause() from None
            except ray.exceptions.RayActorError as exc:
                worker.alive = False
                if attempt >= self.compute.max_attempts:
                    raise RayMapError(f"chunk {tag!r} lost its Ray worker {attempt} times; last: {exc}") from exc
                backlog.appendleft((tag, chunk, attempt))
                continue
            worker.finished.append(tag)
            yield tag, result

    def close(self) -> None:
        """Stop the actors (and the Ray connection this pool opened)."""
        import ray

        for worker in getattr(self, "workers", []):
            try:
                ray.kill(worker.actor)
            except Exception:  # noqa: BLE001 - an actor already dead needs no kill
                pass
        if self._owns_connection and ray.is_initialized():
            ray.shutdown()


def workers_for(nodes: list[dict], gpus_per_worker: float) -> int:
    """One worker (actor) per `gpus_per_worker` GPUs of the live nodes (`ray.nodes()`), or one per
    live node with CPUs when `gpus_per_worker` is 0 (at least one)."""
    alive = [n for n in nodes if n.get("Alive")]
    if gpus_per_worker > 0:
        return max(1, sum(int(n["Resources"].get("GPU", 0) // gpus_per_worker) for n in alive))
    return max(1, sum(1 for n in alive if n["Resources"].get("CPU", 0) > 0))


def _name(build: Callable[..., Any]) -> str:
    return getattr(build, "__qualname__", repr(build))


def check_reachable(address: str, error: type[Exception] = RayMapError) -> None:
    """Fail fast with `error` ("cannot reach the Ray cluster at ...") when `address` names a
    host:port (or ray://host:port) that refuses connections: `ray.init` itself waits minutes for a
    head that is not there. "auto" and other forms are left to Ray."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise error(f"cannot reach the Ray cluster at {address!r}: {exc}") from exc
