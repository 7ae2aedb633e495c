"""Data-parallel replicas of an in-process engine: one worker process per replica (for vLLM, one per
visible GPU, each pinned with CUDA_VISIBLE_DEVICES), fed through one stream with least-loaded
dispatch. A replica that dies mid-run is dropped and the requests it was working on go to the
others, so nothing is lost. Every replica loads the same model, so results do not depend on which
replica ran a request (each request carries its own seed).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from mathdata_pipeline.engines.base import (
    Engine,
    EngineInfo,
    EngineStream,
    EngineUnavailable,
    Request,
    RequestError,
    Result,
    TokenScore,
    drain,
    score_through_many,
)

_START_TIMEOUT_S = 900.0  # loading a 7B model on a GPU takes minutes


def _serve(data: Connection, control: Connection, settings: dict, env: dict[str, str]) -> None:
    """A replica worker: build the engine, then serve generation on `data` (streamed) and
    rendering / scoring on `control` (one call at a time) until told to stop."""
    os.environ.update(env)
    from mathdata_pipeline.engines.factory import build_engine

    try:
        engine = build_engine(settings)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        control.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    control.send(("ready", engine.info, engine.capacity, engine.chat_template()))
    stream = engine.stream()
    with engine:
        while True:
            for connection in wait([data, control], timeout=0 if stream.pending else None):
                kind, *payload = connection.recv()
                if kind == "stop":
                    stream.close()
                    return
                if kind == "reset":  # the parent closed its stream: drop what is still queued
                    stream.close()
                    stream = engine.stream()
                elif kind == "generate":
                    stream.submit(*payload)
                elif kind == "render":
                    control.send(engine.render(payload[0]))
                elif kind == "score_many":
                    control.send(engine.score_many(payload[0]))
            if stream.pending:
                data.send(stream.next_result())


@dataclass
class _Replica:
    process: multiprocessing.Process
    data: Connection
    control: Connection
    capacity: int = 1
    working: dict[Hashable, Request] = field(default_factory=dict)
    inbox: deque = field(default_factory=deque)  # results that arrived while waiting for a control reply
    alive: bool = True

    def call(self, message: tuple):
        """Send a control message and return its reply, keeping results that arrive meanwhile
        (so a replica blocked on sending a result never deadlocks with a control call)."""
        self.control.send(message)
        while True:
            ready = wait([self.control, self.data])
            if self.data in ready:
                self.inbox.append(self.data.recv())
            if self.control in ready:
                return self.control.recv()


class ReplicaEngine(Engine):
    """`count` replicas of the engine described by `settings` (a profile dict with `replicas`
    1), each built in its own worker process with the extra environment of `envs[i]`.

    `capacity` is the replicas' total; `info` is the first replica's (they all load the same
    model). `render` and `chat_template` come from the first live replica; `score_many` splits
    its pairs across the live replicas in contiguous blocks (shared prefixes stay together).
    Raises RuntimeError naming the replica when one fails to start.
    """

    def __init__(self, settings: dict, count: int, envs: Sequence[dict[str, str]] | None = None):
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        envs = list(envs) if envs is not None else [{} for _ in range(count)]
        context = multiprocessing.get_context("spawn")
        self._replicas: list[_Replica] = []
        try:
            for index in range(count):
                data, data_child = context.Pipe()
                control, control_child = context.Pipe()
                process = context.Process(
                    target=_serve, args=(data_child, control_child, settings, envs[index]), daemon=True
                )
                process.start()
                self._replicas.append(_Replica(process, data, control))
            templates = []
            for index, replica in enumerate(self._replicas):
                if not replica.control.poll(_START_TIMEOUT_S):
                    raise RuntimeError(f"replica {index} did not start within {_START_TIMEOUT_S:.0f}s")
                message = replica.control.recv()
                if message[0] != "ready":
                    raise RuntimeError(f"replica {index} failed to start: {message[1]}")
                _, info, replica.capacity, template = message
                templates.append(template)
                if index == 0:
                    self.info: EngineInfo = info
        except BaseException:
            self.close()
            raise
        self._template = templates[0]
        self.capacity = sum(r.capacity for r in self._replicas)

    def _live(self) -> list[_Replica]:
        live = [r for r in self._replicas if r.alive and r.process.is_alive()]
        if not live:
            raise EngineUnavailable("every replica has died")
        return live

    def chat_template(self) -> str | None:
        """The first replica's chat template."""
        return self._template

    def render(self, request: Request) -> str | None:
        """The prompt as the replicas render it (asked of the first live replica)."""
        return self._live()[0].call(("render", request))

    def generate(self, requests: Sequence[Request]) -> Iterator[tuple[int, Result]]:
        """Every request through the replicas' stream; results as they finish."""
        yield from drain(self.stream(), requests)

    def stream(self) -> EngineStream:
        """An open stream over the live replicas (least-loaded dispatch, failover)."""
        return _ReplicaStream(self)

    def score(self, prompt: str, completion: str) -> TokenScore:
        """One pair on the first live replica (see Engine.score)."""
        return score_through_many(self, prompt, completion)

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> list[TokenScore | RequestError]:
        """Pairs in contiguous blocks, one block per live replica, scored at the same time."""
        live = self._live()
        size = -(-len(pairs) // len(live)) if pairs else 0
        blocks = [(replica, list(pairs[i * size : (i + 1) * size])) for i, replica in enumerate(live)]
        for replica, block in blocks:
            if block:
                replica.control.send(("score_many", block))
        results: list[TokenScore | RequestError] = []
        for replica, block in blocks:
            if block:
                while not replica.control.poll(0.05):
                    while replica.data.poll():
                        replica.inbox.append(replica.data.recv())
                results += replica.control.recv()
        return results

    def close(self) -> None:
        """Stop every replica (each closes its engine, freeing its GPU), then reap the processes."""
        for replica in self._replicas:
            if replica.process.is_alive():
                try:
                    replica.data.send(("stop",))
                except OSError:
                    pass
        for replica in self._replicas:
            replica.process.join(60)
            if replica.process.is_alive():
                replica.process.kill()
                replica.process.join()
        self._replicas = []


class _ReplicaStream(EngineStream):
    """Requests to the least-loaded live replica; results from whichever replica finishes; the
    requests of a replica that died go to the others."""

    def __init__(self, engine: ReplicaEngine):
        self.engine = engine
        self.capacity = engine.capacity
        self._backlog: deque[tuple[Hashable, Request]] = deque()

    def submit(self, tag: Hashable, request: Request) -> None:
        """Send `request` to the live replica with the fewest requests per slot in flight."""
        replica = min(self.engine._live(), key=lambda r: len(r.working) / r.capacity)
        replica.working[tag] = request
        try:
            replica.data.send(("generate", tag, request))
        except OSError:
            self._lost(replica)

    def _lost(self, replica: _Replica) -> None:
        """`replica` died: send what it was working on to the others."""
        replica.alive = False
        working, replica.working = replica.working, {}
        for tag, request in working.items():
            self.submit(tag, request)

    def next_result(self) -> tuple[Hashable, Result]:
        """The next result of any replica (a dead replica's requests are resubmitted meanwhile;
        results left over from an earlier stream are dropped)."""
        while True:
            for replica in self.engine._replicas:
                while replica.inbox:
                    tag, result = replica.inbox.popleft()
                    if replica.working.pop(tag, None) is not None:
                        return tag, result
            busy = {r.data: r for r in self.engine._replicas if r.alive and r.working}
            if not busy:
                raise LookupError("no request is pending")
            for connection in wait(list(busy)):
                replica = busy[connection]
                try:
                    replica.inbox.append(connection.recv())
                except (EOFError, OSError):
                    self._lost(replica)

    @property
    def pending(self) -> int:
        """Requests sent to replicas whose result has not come back."""
        return sum(len(r.working) for r in self.engine._replicas if r.alive)

    def close(self) -> None:
        """Tell the replicas to drop what is still queued; results already on their way are
        ignored by the next stream."""
        for replica in self.engine._replicas:
            replica.working.clear()
            replica.inbox.clear()
            if replica.alive:
                try:
                    replica.data.send(("reset",))
                except OSError:
                    replica.alive = False
