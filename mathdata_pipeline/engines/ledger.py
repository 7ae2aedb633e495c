"""The request ledger: every finished LLM request, keyed by what determines its output.

Key = hash(model id and revision, rendered prompt, sampling parameters, seed). Results are
committed to a SQLite file as each request finishes (WAL journal), so a process killed at any
moment loses only the requests in flight; a rerun looks every key up first and generates only the
missing ones. A changed prompt or parameter is simply a new key. Retryable errors (engine faults,
timeouts) are not stored, so a rerun tries them again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.engines.base import Completion, EngineInfo, RequestError, SamplingParams, TokenScore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
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
)
"""

_SCORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    key TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    logprob REAL NOT NULL,
    tokens INTEGER NOT NULL
)
"""


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


class RequestLedger:
    """Durable map from request key to its Completion or non-retryable RequestError, and from
    score key to its TokenScore."""

    def __init__(self, path: Path | str):
        """Open (creating if needed) the ledger file at `path`."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.execute(_SCORE_SCHEMA)

    def lookup(self, keys: Iterable[str]) -> dict[str, Completion | RequestError]:
        """The stored results among `keys` (missing keys are absent from the dict)."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, Completion | RequestError] = {}
        for start in range(0, len(keys), 900):
            chunk = keys[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(
                f"SELECT key, ok, text, finish_reason, prompt_tokens, completion_tokens, "
                f"error_reason, error_message FROM requests WHERE key IN ({marks})",
                chunk,
            ):
                key, ok, text, finish, ptoks, ctoks, reason, message = row
                found[key] = Completion(text, finish, ptoks, ctoks) if ok else RequestError(reason, message)
        return found

    def record(self, key: str, info: EngineInfo, params: SamplingParams, result: Completion | RequestError) -> bool:
        """Commit one finished request; returns False (and stores nothing) for retryable errors."""
        if isinstance(result, RequestError):
            if result.retryable:
                return False
            values = (0, None, None, None, None, result.reason, result.message)
        else:
            values = (1, result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens, None, None)
        self._db.execute(
            "INSERT OR REPLACE INTO requests VALUES (?,?,?,?,?,?,?,?,?,?)",
            (key, info.model_id, json.dumps(params.as_dict(), sort_keys=True), *values),
        )
        return True

    def lookup_scores(self, keys: Iterable[str]) -> dict[str, TokenScore]:
        """The stored scores among `keys`."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, TokenScore] = {}
        for start in range(0, len(keys), 900):
            chunk = keys[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for key, logprob, tokens in self._db.execute(
                f"SELECT key, logprob, tokens FROM scores WHERE key IN ({marks})", chunk
            ):
                found[key] = TokenScore(logprob, tokens)
        return found

    def record_score(self, key: str, info: EngineInfo, score: TokenScore) -> None:
        """Commit one finished scoring request."""
        self._db.execute(
            "INSERT OR REPLACE INTO scores VALUES (?,?,?,?)", (key, info.model_id, score.logprob, score.tokens)
        )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]

    def close(self) -> None:
        """Close the database (everything recorded is already committed)."""
        self._db.close()

    def __enter__(self) -> RequestLedger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
