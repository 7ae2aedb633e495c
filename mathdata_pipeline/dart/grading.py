"""Grading beside generation: a `Grader` fed from a background thread as results arrive, and the
grader's version, which keys every stored verdict.

`GradingQueue.submit` returns at once; a worker thread hands whatever has queued up to
`Grader.grade_many` (whose symbolic checks run in its process pool), so verdicts come back while
the engine keeps generating. `poll` takes the verdicts that are ready, `wait` blocks for one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import queue
import threading
from collections.abc import Hashable
from pathlib import Path

from mathdata_pipeline import grading
from mathdata_pipeline.grading import Grader, GradeResult

_STOP = object()


def grader_version(grader: Grader) -> str:
    """ "mathdata-grader/<hash>" of the grading code (every module of `mathdata_pipeline.grading`),
    the math-verify release and the grader's settings: a stored verdict is reused only when all of
    them are unchanged."""
    digest = hashlib.sha256()
    for source in sorted(Path(grading.__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    try:
        digest.update(importlib.metadata.version("math-verify").encode())
    except importlib.metadata.PackageNotFoundError:
        digest.update(b"math-verify absent")
    settings = (grader.timeout_s, grader.fallback_last_number, grader.tolerance, grader.max_symbolic_chars)
    digest.update(repr(settings).encode())
    return f"mathdata-grader/{digest.hexdigest()[:12]}"


class GradingQueue:
    """Responses in, verdicts out, graded by `grader` in a background thread in batches of up to
    `batch` responses. A failure of the grader itself is raised by `poll` or `wait`. Use as a
    context manager (`close` stops the thread; responses not yet graded are dropped)."""

    def __init__(self, grader: Grader, batch: int = 64):
        self.grader, self.batch = grader, batch
        self._in: queue.Queue = queue.Queue()
        self._out: queue.Queue = queue.Queue()
        self.pending = 0
        self._thread = threading.Thread(target=self._work, name="grading-queue", daemon=True)
        self._thread.start()

    def submit(
        self, tag: Hashable, response: str, reference: str, finish_reason: str | None, question: str | None = None
    ) -> None:
        """Queue one response for grading against `reference`; with the `question` it answers, an
        answer that only restates one of the question's expressions is refused (reason "restated")."""
        self.pending += 1
        self._in.put((tag, (response, reference, finish_reason, question)))

    def poll(self) -> list[tuple[Hashable, GradeResult]]:
        """The verdicts ready now (possibly none), as (tag, GradeResult)."""
        ready = []
        while True:
            try:
                ready.append(self._out.get_nowait())
            except queue.Empty:
                break
        return self._take(ready)

    def wait(self) -> list[tuple[Hashable, GradeResult]]:
        """At least one verdict (blocks until one is ready), plus any others ready."""
        if not self.pending:
            raise LookupError("nothing is being graded")
        return self._take([self._out.get()]) + self.poll()

    def _take(self, items: list) -> list[tuple[Hashable, GradeResult]]:
        for item in items:
            if isinstance(item, BaseException):
                raise RuntimeError(f"the grader failed: {type(item).__name__}: {item}") from item
        self.pending -= len(items)
        return items

    def _work(self) -> None:
        while (item := self._in.get()) is not _STOP:
            batch = [item]
            while len(batch) < self.batch:
                try:
                    more = self._in.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    return
                batch.append(more)
            try:
                verdicts = self.grader.grade_many([graded for _, graded in batch])
            except Exception as exc:  # noqa: BLE001 - handed to the caller, never lost in this thread
                self._out.put(exc)
                return
            for (tag, _), verdict in zip(batch, verdicts, strict=True):
                self._out.put((tag, verdict))

    def close(self) -> None:
        """Stop the worker thread after the batch it is grading."""
        self._in.put(_STOP)
        self._thread.join()

    def __enter__(self) -> GradingQueue:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
