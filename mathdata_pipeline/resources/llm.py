"""The `llm` resource: one engine per run, chosen by profile, with the request ledger."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from mathdata_pipeline.engines.base import Engine, Request, TokenScore
from mathdata_pipeline.engines.factory import DEFAULT_PROFILE, build_engine, load_profile
from mathdata_pipeline.engines.ledger import RequestLedger
from mathdata_pipeline.engines.runner import GenerationStats, Result, run_requests, run_scores


def default_ledger_dir() -> Path:
    """`MATHDATA_LEDGER_DIR`, else `_ledger` under a local `MATHDATA_STORAGE`, else `./storage/_ledger`."""
    if os.environ.get("MATHDATA_LEDGER_DIR"):
        return Path(os.environ["MATHDATA_LEDGER_DIR"])
    storage = os.environ.get("MATHDATA_STORAGE") or "storage"
    return Path(storage) / "_ledger" if "://" not in storage else Path(".ledger")


class LLMResource(dg.ConfigurableResource):
    """Generation and scoring for assets. The engine is built on first use and closed after the run.

    Every request goes through the ledger file `<ledger_dir>/<ledger_name>.sqlite`, so a rerun
    after a crash regenerates nothing that finished.
    """

    profile: str = Field(default="", description=f"engine profile in configs/engines.yaml; empty = $MATHDATA_LLM_PROFILE or {DEFAULT_PROFILE}")
    ledger_dir: str = Field(default="", description="folder of request ledgers; empty = $MATHDATA_LEDGER_DIR or <storage>/_ledger")
    max_error_share: float = Field(default=0.05, description="fail the asset when more than this share of requests fail")
    progress_interval_s: float = Field(default=30.0, description="seconds between progress lines in the run log")
    _engine: Engine | None = PrivateAttr(default=None)

    def profile_name(self) -> str:
        """The profile in effect."""
        return self.profile or os.environ.get("MATHDATA_LLM_PROFILE") or DEFAULT_PROFILE

    def engine(self) -> Engine:
        """The engine of this run (built once)."""
        if self._engine is None:
            self._engine = build_engine(load_profile(self.profile_name()))
        return self._engine

    def ledger_path(self, ledger_name: str) -> Path:
        """The SQLite file of ledger `ledger_name`."""
        return (Path(self.ledger_dir) if self.ledger_dir else default_ledger_dir()) / f"{ledger_name}.sqlite"

    def generate(self, context: dg.AssetExecutionContext | None, requests: Sequence[Request], *, ledger_name: str,
                 row_ids: Sequence[str] | None = None) -> tuple[list[Result], GenerationStats]:
        """Run `requests` through the ledger `ledger_name`; see `engines.runner.run_requests`."""
        log = context.log.info if context is not None else print
        with RequestLedger(self.ledger_path(ledger_name)) as ledger:
            return run_requests(self.engine(), ledger, requests, row_ids=row_ids, log=log,
                                progress_interval=self.progress_interval_s, max_error_share=self.max_error_share)

    def score_many(self, context: dg.AssetExecutionContext | None, pairs: Sequence[tuple[str, str]], *,
                   ledger_name: str) -> tuple[list[TokenScore], GenerationStats]:
        """Log-probabilities of (prompt, completion) pairs through the ledger `ledger_name`; see
        `engines.runner.run_scores`."""
        log = context.log.info if context is not None else print
        with RequestLedger(self.ledger_path(ledger_name)) as ledger:
            return run_scores(self.engine(), ledger, pairs, log=log, progress_interval=self.progress_interval_s)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
