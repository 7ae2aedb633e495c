"""Engine replicas as Ray actors, spread over a Ray cluster's nodes (the `ray` backend).

Each replica is an actor (`ray_worker.EngineWorker`) that builds its own engine on the node Ray
places it on: llama.cpp on a CPU node, vLLM on a GPU node (`num_gpus` GPUs reserved per actor).
The Dagster process keeps the request ledger and the dispatch: requests wait in a backlog here and
go to the least-loaded live actor, at most `capacity + 1` in flight per actor, so an actor (or its
node) lost mid-run costs only the requests it held, which go back to the backlog for the others.
Results are committed to the ledger by the caller as they arrive, so nothing finished is re-sent.
Every replica loads the same model, so `info` (and every ledger key) is that of the engine it runs:
the ledger is shared with the same model run by the `local` or `vllm` backend.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field

from mathdata_pipeline.common.ray_map import check_reachable, workers_for
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

_START_TIMEOUT_S = 900.0  # loading a 7B model on a GPU node takes minutes
_SPARE_CALLS = 4  # actor threads beyond the engine's capacity: render, scoring, reset, ready


@dataclass
class RayReplica:
    """One actor: its handle, what it reported when ready, and the dispatcher's counters."""

    actor: object
    capacity: int = 1
    pid: int = 0
    node: str = ""  # Ray node id
    load: int = 0  # requests in flight on this actor
    served: int = 0  # results it returned to this process
    alive: bool = True
    sent: list = field(default_factory=list)  # tags sent to it, in order (for tests and logs)


class RayEngine(Engine):
    """`replicas` actors, each running the engine of `settings` (a single-replica `local` or
    `vllm` profile dict), on the Ray cluster at `address`.

    Parameters: `address` for `ray.init` ("auto": the cluster this machine belongs to or
    $RAY_ADDRESS; "host:port" of a head's GCS; "ray://host:10001" through Ray Client);
    `replicas` (0 = one per `num_gpus` GPUs of the cluster, or one per node with CPUs when
    `num_gpus` is 0); `num_gpus` and `num_cpus` reserved per actor; `max_calls` concurrent calls
    an actor accepts (its engine's batch width plus a few). Joins a Ray connection this process
    already has, else opens one and closes it in `close`.
    Raises EngineUnavailable when the cluster cannot be reached or an actor does not start.
    """

    def __init__(
        self,
        settings: dict,
        *,
        address: str = "auto",
        replicas: int = 0,
        num_gpus: float = 0.0,
        num_cpus: float = 1.0,
        max_calls: int = 8,
    ):
        import ray

        from mathdata_pipeline.engines.ray_worker import EngineWorker

        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            check_reachable(address, EngineUnavailable)
            try:
                ray.init(address=address, logging_level="WARNING", log_to_driver=False)
            except (ConnectionError, RuntimeError, TimeoutError) as exc:
                raise EngineUnavailable(f"ray engine: cannot reach the Ray cluster at {address!r}: {exc}") from exc
        count = replicas or workers_for(ray.nodes(), num_gpus)
        worker = ray.remote(EngineWorker).options(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            max_concurrency=max_calls + _SPARE_CALLS,
            max_restarts=0,
            scheduling_strategy="SPREAD",
        )
        self.replicas = [RayReplica(worker.remote(settings)) for _ in range(count)]
        try:
            ready = ray.get([r.actor.ready.remote() for r in self.replicas], timeout=_START_TIMEOUT_S)
        except Exception as exc:
            self.close()
            raise EngineUnavailable(f"ray engine: {count} actor(s) did not start: {exc}") from exc
        for replica, (_, capacity, _, pid, node) in zip(self.replicas, ready, strict=True):
            replica.capacity, replica.pid, replica.node = capacity, pid, node
        self.info: EngineInfo = ready[0][0]
        self.info.extra = {**self.info.extra, "ray_replicas": count}
        self._template = ready[0][2]
        self.capacity = sum(r.capacity for r in self.replicas)

    def live(self) -> list[RayReplica]:
        """The actors not known to be dead; raises EngineUnavailable when none is left."""
        live = [r for r in self.replicas if r.alive]
        if not live:
            raise EngineUnavailable("ray engine: every actor has died")
        return live

    def chat_template(self) -> str | None:
        """The first actor's chat template."""
        return self._template

    def render(self, request: Request) -> str | None:
        """The prompt as the actors render it (asked of the first live actor)."""
        return self._call(lambda actor: actor.render.remote(request))

    def generate(self, requests: Sequence[Request]) -> Iterator[tuple[int, Result]]:
        """Every request through the actors' stream; results as they finish."""
        yield from drain(self.stream(), requests)

    def stream(self) -> EngineStream:
        """An open stream over the live actors (least-loaded dispatch, failover)."""
        return RayStream(self)

    def score(self, prompt: str, completion: str) -> TokenScore:
        """One pair on the first live actor (see Engine.score)."""
        return score_through_many(self, prompt, completion)

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> list[TokenScore | RequestError]:
        """Pairs in contiguous blocks, one block per live actor, scored at the same time; a block
        whose actor dies is scored again by the next live one."""
        import ray

        pairs = list(pairs)
        live = self.live()
        size = -(-len(pairs) // len(live)) if pairs else 0
        blocks = [pairs[i * size : (i + 1) * size] for i in range(len(live))]
        refs = [(block, r.actor.score_many.remote(block)) for r, block in zip(live, blocks, strict=True) if block]
        results: list[TokenScore | RequestError] = []
        for block, ref in refs:
            try:
                results += ray.get(ref)
            except ray.exceptions.RayActorError:
                self._mark_dead_actors()
                results += self.score_many(block)
        return results

    def _call(self, remote):
        """`remote(actor)` on the first live actor, moving on to the next when it has died."""
        import ray

        while True:
            replica = self.live()[0]
            try:
                return ray.get(remote(replica.actor))
            except ray.exceptions.RayActorError:
                replica.alive = False

    def _mark_dead_actors(self) -> None:
        """Ask every live actor whether it still answers; mark the ones that do not."""
        import ray

        for replica in self.live():
            try:
                ray.get(replica.actor.ready.remote(), timeout=60)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                replica.alive = False

    def close(self) -> None:
        """Kill the actors (each frees its engine and GPU) and close the Ray connection if this
        engine opened it."""
        import ray

        if not ray.is_initialized():
            return
        for replica in self.replicas:
            replica.alive = False
            ray.kill(replica.actor)
        self.replicas = []
        if self._owns_connection:
            ray.shutdown()


class RayStream(EngineStream):
    """Requests wait in a backlog and go to the least-loaded live actor (at most its capacity + 1
    in flight); results come back in completion order; the requests of an actor that died go back
    to the front of the backlog. `sent` counts how often each tag was sent to an actor."""

    def __init__(self, engine: RayEngine):
        self.engine = engine
        self.capacity = engine.capacity
        self._backlog: deque[tuple[Hashable, Request]] = deque()
        self._flight: dict[object, tuple[Hashable, Request, RayReplica]] = {}
        self.sent: dict[Hashable, int] = {}

    def submit(self, tag: Hashable, request: Request) -> None:
        """Queue `request`; it goes to an actor as soon as one has room."""
        self._backlog.append((tag, request))
        self._dispatch()

    def _dispatch(self) -> None:
        while self._backlog:
            replica = min(self.engine.live(), key=lambda r: r.load / r.capacity)
            if replica.load >= replica.capacity + 1:
                return
            tag, request = self._backlog.popleft()
            self._flight[replica.actor.generate.remote(request)] = (tag, request, replica)
            replica.load += 1
            replica.sent.append(tag)
            self.sent[tag] = self.sent.get(tag, 0) + 1

    def _lost(self, replica: RayReplica) -> None:
        """`replica` died: its requests in flight go back to the front of the backlog."""
        replica.alive = False
        for ref, (tag, request, holder) in list(self._flight.items()):
            if holder is replica:
                del self._flight[ref]
                self._backlog.appendleft((tag, request))
        replica.load = 0

    def next_result(self) -> tuple[Hashable, Result]:
        """The next result of any actor (a dead actor's requests are re-sent meanwhile)."""
        import ray

        while True:
            self._dispatch()
            if not self._flight:
                raise LookupError("no request is pending")
            (ref,), _ = ray.wait(list(self._flight), num_returns=1)
            tag, request, replica = self._flight.pop(ref)
            replica.load -= 1
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError:
                self._backlog.appendleft((tag, request))
                self._lost(replica)
                continue
            replica.served += 1
            return tag, result

    @property
    def pending(self) -> int:
        """Requests queued here or in flight on an actor."""
        return len(self._backlog) + len(self._flight)

    def cancel(self, tag: Hashable) -> bool:
        """Withdraw `tag` when it is still in the backlog (not yet sent to an actor)."""
        for position, (queued, _) in enumerate(self._backlog):
            if queued == tag:
                del self._backlog[position]
                return True
        return False

    def close(self) -> None:
        """Drop the backlog and tell the actors to drop what they still hold."""
        self._backlog.clear()
        holders = {id(replica): replica for _, _, replica in self._flight.values()}
        self._flight.clear()
        for replica in holders.values():
            if replica.alive:
                replica.actor.reset.remote()
            replica.load = 0
