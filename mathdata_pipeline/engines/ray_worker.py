"""One engine replica inside a Ray actor (see `ray_engine`): the actor builds its own engine
(llama.cpp on a CPU node, vLLM on a GPU node) and serves it to the Dagster process.

Ray runs the actor's method calls on several threads at once (one per request in flight), but an
engine is not thread-safe, so every call goes through one pump thread that owns the engine: it
feeds generation requests into the engine's stream (so vLLM keeps its batch full) and runs
rendering and scoring between two results. `ray_engine` wraps the class with `ray.remote`; Ray is
imported only inside the actor.
"""

from __future__ import annotations

import os
import queue
import threading
from itertools import count

from mathdata_pipeline.engines.base import EngineInfo, Request, RequestError, Result

_CANCELLED = RequestError("engine_error", "cancelled: the Dagster process closed its stream", retryable=True)


class _Call:
    """A call waiting for the pump thread: its kind, payload, and the slot its answer goes to."""

    def __init__(self, kind: str, payload: object = None):
        self.kind, self.payload = kind, payload
        self.done = threading.Event()
        self.answer: object = None
        self.error: BaseException | None = None

    def finish(self, answer: object = None, error: BaseException | None = None) -> None:
        """Hand `answer` (or `error`) to the thread waiting in `wait`."""
        self.answer, self.error = answer, error
        self.done.set()

    def wait(self) -> object:
        """Block until the pump thread has answered; re-raise its error."""
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.answer


class EngineWorker:
    """An engine built from `settings` (a single-replica profile dict: `local` or `vllm`), served
    to concurrent callers through one pump thread. Methods: `ready` (identity), `generate` (one
    request, blocks until its result), `render`, `score_many`, `reset` (drop what is queued)."""

    def __init__(self, settings: dict):
        from mathdata_pipeline.engines.factory import build_engine

        self._engine = build_engine(settings)
        self._calls: queue.Queue[_Call] = queue.Queue()
        self._tags = count()
        self._pump = threading.Thread(target=self._run, name="engine-pump", daemon=True)
        self._pump.start()

    def ready(self) -> tuple[EngineInfo, int, str | None, int, str]:
        """(engine info, capacity, chat template, this process's pid, the Ray node id it runs on)."""
        import ray

        node = ray.get_runtime_context().get_node_id()
        return self._engine.info, self._engine.capacity, self._engine.chat_template(), os.getpid(), node

    def generate(self, request: Request) -> Result:
        """The result of `request` (a RequestError, never an exception, when it fails)."""
        return self._submit(_Call("generate", request))

    def render(self, request: Request) -> str | None:
        """The prompt as this replica's engine renders it."""
        return self._submit(_Call("render", request))

    def score_many(self, pairs: list[tuple[str, str]]) -> list:
        """Log-probabilities of (prompt, completion) pairs (see Engine.score_many)."""
        return self._submit(_Call("score_many", pairs))

    def reset(self) -> None:
        """Cancel the requests still queued or running: their callers get a retryable RequestError."""
        self._submit(_Call("reset"))

    def _submit(self, call: _Call) -> object:
        self._calls.put(call)
        return call.wait()

    def _run(self) -> None:
        """The pump: take calls (blocking only while the engine is idle), step the engine stream."""
        stream = self._engine.stream()
        waiting: dict[int, _Call] = {}
        while True:
            try:
                call = self._calls.get(block=not stream.pending)
            except queue.Empty:
                call = None
            if call is not None:
                stream = self._take(call, stream, waiting)
                continue
            try:
                tag, result = stream.next_result()
            except Exception as exc:  # noqa: BLE001 - an engine fault fails what it held, not the worker
                failed = RequestError("engine_error", f"{type(exc).__name__}: {exc}", retryable=True)
                for call in waiting.values():
                    call.finish(failed)
                waiting.clear()
                stream = self._engine.stream()
                continue
            waiting.pop(tag).finish(result)

    def _take(self, call: _Call, stream, waiting: dict[int, _Call]):
        """Carry out one call; returns the stream to keep using (a new one after `reset`)."""
        try:
            if call.kind == "generate":
                tag = next(self._tags)
                stream.submit(tag, call.payload)
                waiting[tag] = call
                return stream
            if call.kind == "reset":
                stream.close()
                for cancelled in waiting.values():
                    cancelled.finish(_CANCELLED)
                waiting.clear()
                call.finish()
                return self._engine.stream()
            method = self._engine.render if call.kind == "render" else self._engine.score_many
            call.finish(method(call.payload))
        except Exception as exc:  # noqa: BLE001 - handed to the caller, which re-raises it
            call.finish(error=exc)
        return stream
