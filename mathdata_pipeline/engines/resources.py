"""The `llm` resource: every generation and scoring request of the pipeline goes through it.

It builds engines from profiles (`configs/engines.yaml`) on first use, with the request ledger in
front of each. A stage can name another profile for one role (a judge, a solver, an optimizer),
or a model the pipeline trained (the ScaleQuest question generator); only one engine is alive at
a time, so a stage that switches between models never holds two of them in (GPU) memory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from mathdata_pipeline.common.names import path_component
from mathdata_pipeline.engines.base import Engine, Request, TokenScore
from mathdata_pipeline.engines.factory import DEFAULT_PROFILE, build_engine, for_trained_model, load_profile
from mathdata_pipeline.engines.ledger import RequestLedger
from mathdata_pipeline.engines.runner import GenerateFn, GenerationStats, Result, run_requests, run_scores


def default_ledger_dir() -> Path:
    """`MATHDATA_LEDGER_DIR`, else `_ledger` under a local `MATHDATA_STORAGE`, else `./storage/_ledger`."""
    if os.environ.get("MATHDATA_LEDGER_DIR"):
        return Path(os.environ["MATHDATA_LEDGER_DIR"])
    storage = os.environ.get("MATHDATA_STORAGE") or "storage"
    return Path(storage) / "_ledger" if "://" not in storage else Path(".ledger")


class LLMResource(dg.ConfigurableResource):
    """Generation and scoring for assets, through the ledger file `<ledger_dir>/<ledger_name>.sqlite`,
    so a rerun after a crash regenerates nothing that finished.

    Every method takes an optional `profile` (empty = this resource's profile) and `model_dir` (a
    model the pipeline trained, served on that profile's backend).
    """

    profile: str = Field(
        default="",
        description=f"engine profile in configs/engines.yaml; empty = $MATHDATA_LLM_PROFILE or {DEFAULT_PROFILE}",
    )
    ledger_dir: str = Field(
        default="", description="folder of request ledgers; empty = $MATHDATA_LEDGER_DIR or <storage>/_ledger"
    )
    max_error_share: float = Field(
        default=0.05, ge=0.0, le=1.0, description="fail the asset when more than this share of requests fail"
    )
    progress_interval_s: float = Field(default=30.0, gt=0, description="seconds between progress lines in the run log")
    _engine: Engine | None = PrivateAttr(default=None)
    _engine_key: tuple[str, str] | None = PrivateAttr(default=None)

    def profile_name(self, profile: str = "") -> str:
        """The profile in effect for a request that names `profile` (empty = the resource's)."""
        return profile or self.profile or os.environ.get("MATHDATA_LLM_PROFILE") or DEFAULT_PROFILE

    def engine(self, profile: str = "", model_dir: str | Path | None = None) -> Engine:
        """The engine of `profile` (or of a trained model on that profile's backend), built on first
        use. Asking for another engine closes the current one first."""
        key = (self.profile_name(profile), str(model_dir or ""))
        if self._engine is not None and self._engine_key == key:
            return self._engine
        self.close_engine()
        settings = load_profile(key[0])
        self._engine = build_engine(for_trained_model(settings, model_dir) if model_dir else settings)
        self._engine_key = key
        return self._engine

    def model_id(self, profile: str = "", model_dir: str | Path | None = None) -> str:
        """The model id that goes into sample rows and ledger keys."""
        return self.engine(profile, model_dir).info.model_id

    def ledger_path(self, ledger_name: str) -> Path:
        """The SQLite file of ledger `ledger_name` ("/"-separated; every part is quoted into one
        path component, so no name can reach outside the ledger folder)."""
        parts = [path_component(part) for part in ledger_name.split("/")]
        base = Path(self.ledger_dir) if self.ledger_dir else default_ledger_dir()
        return base.joinpath(*parts[:-1], f"{parts[-1]}.sqlite")

    def generate(
        self,
        context: dg.AssetExecutionContext | None,
        requests: Sequence[Request],
        *,
        ledger_name: str,
        row_ids: Sequence[str] | None = None,
        profile: str = "",
        model_dir: str | Path | None = None,
    ) -> tuple[list[Result], GenerationStats]:
        """Run `requests` through the ledger `ledger_name`; see `engines.runner.run_requests`."""
        log = context.log.info if context is not None else print
        engine = self.engine(profile, model_dir)
        with RequestLedger(self.ledger_path(ledger_name)) as ledger:
            return run_requests(
                engine,
                ledger,
                requests,
                row_ids=row_ids,
                log=log,
                progress_interval=self.progress_interval_s,
                max_error_share=self.max_error_share,
            )

    def generate_fn(
        self,
        context: dg.AssetExecutionContext | None,
        stats: list[GenerationStats],
        *,
        ledger_name: str,
        profile: str = "",
        model_dir: str | Path | None = None,
    ) -> GenerateFn:
        """`generate` bound to a context, ledger and engine, as the plain method modules call it:
        `fn(requests, row_ids) -> results`; each call's statistics are appended to `stats`."""

        def generate(requests: Sequence[Request], row_ids: Sequence[str] | None = None) -> list[Result]:
            results, run_stats = self.generate(
                context, requests, ledger_name=ledger_name, row_ids=row_ids, profile=profile, model_dir=model_dir
            )
            stats.append(run_stats)
            return results

        return generate

    def score_many(
        self,
        context: dg.AssetExecutionContext | None,
        pairs: Sequence[tuple[str, str]],
        *,
        ledger_name: str,
        profile: str = "",
    ) -> tuple[list[TokenScore], GenerationStats]:
        """Log-probabilities of (prompt, completion) pairs through the ledger `ledger_name`; see
        `engines.runner.run_scores`."""
        log = context.log.info if context is not None else print
        engine = self.engine(profile)
        with RequestLedger(self.ledger_path(ledger_name)) as ledger:
            return run_scores(engine, ledger, pairs, log=log, progress_interval=self.progress_interval_s)

    def close_engine(self) -> None:
        """Close the current engine (frees its model and, on vLLM, its GPU memory)."""
        if self._engine is not None:
            self._engine.close()
        self._engine, self._engine_key = None, None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close_engine()
