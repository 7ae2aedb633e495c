"""The request ledger: every finished LLM request, keyed by what determines its output.

Key = hash(model id and revision, rendered prompt, sampling parameters, seed). Results are
committed to a SQLite file as each request finishes (WAL journal), so a process killed at any
moment loses only the requests in flight; a rerun looks every key up first and generates only the
missing ones. A changed prompt or parameter is simply a new key. Retryable errors (engine faults,
timeouts) are not stored, so a rerun tries them again; an empty completion is stored as a failed
attempt, and the next attempt of that request (a derived seed, see `base.retry_seed`) is a new key.

Grading verdicts are stored beside the requests, keyed by (response, reference, finish reason,
grader version), so a resumed run regrades nothing and a new grader version regrades everything.

The ledger never fails in silence: it refuses a read-only file before anything is generated, and
every write first checks that the file is still the one it opened (not deleted, replaced,
truncated or made read-only). Every error names the `.sqlite` file.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.engines.base import Completion, EngineInfo, RequestError, SamplingParams, TokenScore

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    params TEXT NOT NULL,
    ok INTEGER NOT NULL,
    text TEXT,
    finish_reason TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    error_reason TEXT,
    error_message TEXT
)""",
    """CREATE TABLE IF NOT EXISTS scores (
    key TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    logprob REAL NOT NULL,
    tokens INTEGER NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS verdicts (
    key TEXT PRIMARY KEY,
    grader TEXT NOT NULL,
    correct INTEGER NOT NULL,
    extracted TEXT,
    reason TEXT
)""",
)
_CHUNK = 900  # SQLite's default limit on bound parameters is 999


class LedgerError(RuntimeError):
    """The ledger file cannot be used (read-only, deleted, replaced, truncated, corrupt); the
    message names the file."""


@dataclass(frozen=True)
class Verdict:
    """A stored grading verdict: correct or not, the extracted answer, the grader's reason code."""

    correct: bool
    extracted: str | None
    reason: str


def request_key(info: EngineInfo, prompt: str, params: SamplingParams) -> str:
    """The ledger key of one request (hex, 32 characters)."""
    return stable_hash(
        "request",
        info.backend,
        info.model_id,
        info.revision,
        prompt,
        json.dumps(params.as_dict(), sort_keys=True),
        length=32,
    )


def score_key(info: EngineInfo, prompt: str, completion: str) -> str:
    """The ledger key of one scoring request (log-probability of `completion` after `prompt`)."""
    return stable_hash("score", info.backend, info.model_id, info.revision, prompt, completion, length=32)


def verdict_key(
    response: str, reference: str, finish_reason: str | None, grader_version: str, question: str = ""
) -> str:
    """The ledger key of one grading verdict; `question`, the question the response answers when the
    grader saw it (its verdict may depend on it: an answer restating the question is refused)."""
    return stable_hash("verdict", grader_version, reference, finish_reason or "", response, question, length=32)


class RequestLedger:
    """Durable map from request key to its Completion or stored RequestError, from score key to
    its TokenScore, and from verdict key to its Verdict. Every method raises LedgerError naming
    the file when the file cannot be read or written."""

    def __init__(self, path: Path | str):
        """Open (creating if needed) the ledger file at `path`. Raises LedgerError when the file
        or its folder is read-only or the file is not a ledger, before anything is generated."""
        self.path = Path(path)
        self.existed = self.path.exists() and self.path.stat().st_size > 0
        if self.path.exists() and _read_only(self.path, self.path.stat()):
            raise LedgerError(f"ledger {self.path} is read-only: nothing was generated; make it writable and rerun")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                self._db.execute(statement)
            self._db.execute("BEGIN IMMEDIATE")  # fails now, not after the first generation, if read-only
            self._db.execute("ROLLBACK")
        except (sqlite3.Error, OSError) as exc:
            raise LedgerError(f"ledger {self.path}: cannot open it for writing: {exc}") from exc
        self._identity = self._stat_identity()
        self.rows_at_open = self.rows()

    def _stat_identity(self) -> tuple[int, int]:
        stat = self.path.stat()
        return stat.st_dev, stat.st_ino

    def check(self) -> None:
        """Raise LedgerError unless the file is still the one opened, non-empty and writable (a
        ledger deleted, replaced, truncated or made read-only during a run fails the run before
        more work is lost)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            raise LedgerError(
                f"ledger {self.path} was deleted during the run; stopping before more work is lost"
            ) from None
        if (stat.st_dev, stat.st_ino) != self._identity:
            raise LedgerError(f"ledger {self.path} was replaced by another file during the run; stopping")
        if stat.st_size == 0:
            raise LedgerError(f"ledger {self.path} was truncated to 0 bytes during the run; stopping")
        if _read_only(self.path, stat):
            raise LedgerError(f"ledger {self.path} became read-only during the run; stopping before more work is lost")

    def _execute(self, sql: str, parameters: Iterable = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, tuple(parameters))
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger {self.path}: {exc}") from exc

    def _write(self, sql: str, parameters: Iterable) -> None:
        self.check()
        self._execute(sql, parameters)

    def get(self, key: str) -> Completion | RequestError | None:
        """The stored result of one request key, or None."""
        row = self._execute(
            "SELECT ok, text, finish_reason, prompt_tokens, completion_tokens, error_reason, error_message "
            "FROM requests WHERE key = ?",
            (key,),
        ).fetchone()
        return None if row is None else _result(*row)

    def lookup(self, keys: Iterable[str]) -> dict[str, Completion | RequestError]:
        """The stored results among `keys` (missing keys are absent from the dict)."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, Completion | RequestError] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, *row in self._execute(
                f"SELECT key, ok, text, finish_reason, prompt_tokens, completion_tokens, "
                f"error_reason, error_message FROM requests WHERE key IN ({marks})",
                chunk,
            ):
                found[key] = _result(*row)
        return found

    def record(self, key: str, info: EngineInfo, params: SamplingParams, result: Completion | RequestError) -> bool:
        """Commit one finished request; returns False (and stores nothing) for retryable errors."""
        if isinstance(result, RequestError):
            if result.retryable:
                return False
            values = (0, None, None, None, None, result.reason, result.message)
        else:
            values = (1, result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens, None, None)
        self._write(
            "INSERT OR REPLACE INTO requests VALUES (?,?,?,?,?,?,?,?,?,?)",
            (key, info.model_id, json.dumps(params.as_dict(), sort_keys=True), *values),
        )
        return True

    def lookup_scores(self, keys: Iterable[str]) -> dict[str, TokenScore]:
        """The stored scores among `keys`."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, TokenScore] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, logprob, tokens in self._execute(
                f"SELECT key, logprob, tokens FROM scores WHERE key IN ({marks})", chunk
            ):
                found[key] = TokenScore(logprob, tokens)
        return found

    def record_score(self, key: str, info: EngineInfo, score: TokenScore) -> None:
        """Commit one finished scoring request."""
        self._write("INSERT OR REPLACE INTO scores VALUES (?,?,?,?)", (key, info.model_id, score.logprob, score.tokens))

    def get_verdict(self, key: str) -> Verdict | None:
        """The stored verdict of one verdict key, or None."""
        row = self._execute("SELECT correct, extracted, reason FROM verdicts WHERE key = ?", (key,)).fetchone()
        return None if row is None else Verdict(bool(row[0]), row[1], row[2])

    def record_verdict(self, key: str, grader_version: str, verdict: Verdict) -> None:
        """Commit one grading verdict."""
        self._write(
            "INSERT OR REPLACE INTO verdicts VALUES (?,?,?,?,?)",
            (key, grader_version, int(verdict.correct), verdict.extracted, verdict.reason),
        )

    def rows(self) -> int:
        """Stored requests and scores together."""
        (requests,) = self._execute("SELECT COUNT(*) FROM requests").fetchone()
        (scores,) = self._execute("SELECT COUNT(*) FROM scores").fetchone()
        return int(requests) + int(scores)

    def __len__(self) -> int:
        return self._execute("SELECT COUNT(*) FROM requests").fetchone()[0]

    def close(self) -> None:
        """Close the database (everything recorded is already committed)."""
        self._db.close()

    def __enter__(self) -> RequestLedger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_only(path: Path, stat: os.stat_result) -> bool:
    """No write permission bit set (read-only even for root, who ignores permissions) or not
    writable by this process."""
    return not stat.st_mode & 0o222 or not os.access(path, os.W_OK)


def _result(ok, text, finish, prompt_tokens, completion_tokens, reason, message) -> Completion | RequestError:
    return Completion(text, finish, prompt_tokens, completion_tokens) if ok else RequestError(reason, message)
