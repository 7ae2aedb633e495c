"""The `llm` resource: every generation and scoring request of the pipeline goes through it.

It builds engines from profiles (`configs/engines.yaml`) on first use, with the request ledger in
front of each. A stage can name another profile for one role (a judge, a solver, an optimizer),
or a model the pipeline trained (the ScaleQuest question generator); only one engine is alive at
a time, so a stage that switches between models never holds two of them in (GPU) memory.

Ledgers: one SQLite file per ledger name and partition, `<ledger_dir>/<name>/<partition>.sqlite`
(just `<name>.sqlite` for an unpartitioned asset, or when the name already ends with the
partition, as `solver/<source>` does), so no file grows with every shard of a stage. A ledger that
is missing or empty where the previous materialization of the asset recorded ledger rows is a
warning in the run log and in metadata (`ledger_warning`), with the counts.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from mathdata_pipeline.common.names import path_component
from mathdata_pipeline.engines.base import Engine, EngineUnavailable, Request, TokenScore
from mathdata_pipeline.engines.factory import DEFAULT_PROFILE, build_engine, for_trained_model, load_profile
from mathdata_pipeline.engines.ledger import RequestLedger
from mathdata_pipeline.engines.runner import GenerateFn, GenerationStats, LedgerStream, Result, run_requests, run_scores

_MAX_COMPONENT_BYTES = 120  # far below every file system's 255-byte name limit, ".sqlite" included


def default_ledger_dir() -> Path:
    """`MATHDATA_LEDGER_DIR`, else `_ledger` under a local `MATHDATA_STORAGE` (default `./storage`).
    With object storage the ledgers stay on local disk, in `_ledger` under the local cache folder
    (`MATHDATA_CACHE_DIR`, default `./.mathdata_cache`): SQLite needs a local file."""
    if os.environ.get("MATHDATA_LEDGER_DIR"):
        return Path(os.environ["MATHDATA_LEDGER_DIR"])
    storage = os.environ.get("MATHDATA_STORAGE") or "storage"
    if "://" in storage:
        return Path(os.environ.get("MATHDATA_CACHE_DIR") or ".mathdata_cache") / "_ledger"
    return Path(storage) / "_ledger"


def ledger_component(name: str) -> str:
    """`name` as exactly one short path component: quoted by `path_component` (no `/`, no `..`,
    no NUL, ASCII only) and, when longer than 120 bytes, cut with a hash of the whole name added,
    so distinct names stay distinct and no name is too long for the file system."""
    quoted = path_component(name)
    if len(quoted) <= _MAX_COMPONENT_BYTES:
        return quoted
    return quoted[:80] + "~" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _partition_of(context: dg.AssetExecutionContext | None) -> str | None:
    if context is None:
        return None
    try:
        return context.partition_key if context.has_partition_key else None
    except (AttributeError, dg.DagsterInvariantViolationError):
        return None


def _previous_ledger_rows(context: dg.AssetExecutionContext) -> int:
    """`ledger_rows` of the asset's (partition's) latest materialization, 0 when there is none."""
    try:
        partition = _partition_of(context)
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[partition] if partition else None),
            limit=1,
        ).records
    except (AttributeError, dg.DagsterInvariantViolationError):  # not an asset step
        return 0
    if not records or records[0].asset_materialization is None:
        return 0
    value = records[0].asset_materialization.metadata.get("ledger_rows")
    return int(value.value) if value is not None else 0


class LLMResource(dg.ConfigurableResource):
    """Generation and scoring for assets, through the ledger files under `ledger_dir`, so a rerun
    after a crash regenerates nothing that finished.

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
    attempts_per_run: int = Field(
        default=2,
        ge=1,
        le=10,
        description="engine calls per request at most in one run: an empty completion or a transient fault is "
        "tried again with a derived seed (a rerun continues with the next seeds)",
    )
    progress_interval_s: float = Field(default=30.0, gt=0, description="seconds between progress lines in the run log")
    connection_retries: int = Field(
        default=3,
        ge=0,
        le=20,
        description="times a step is retried when its engine cannot be reached (a Ray cluster or every replica "
        "gone); the retry keeps what the ledger holds. Other failures are not retried",
    )
    connection_retry_wait_s: float = Field(
        default=30.0, ge=0, description="seconds before such a retry (a restarted head or node needs time to come back)"
    )
    _engine: Engine | None = PrivateAttr(default=None)
    _engine_key: tuple[str, str] | None = PrivateAttr(default=None)
    _checked_ledgers: set[str] = PrivateAttr(default_factory=set)

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
        with self.transient_faults_retried():
            self._engine = build_engine(for_trained_model(settings, model_dir) if model_dir else settings)
        self._engine_key = key
        return self._engine

    @contextmanager
    def transient_faults_retried(self) -> Iterator[None]:
        """Turn EngineUnavailable raised inside into Dagster's RetryRequested (at most
        `connection_retries` times, `connection_retry_wait_s` apart), after closing the broken
        engine so the retry builds a new one; every other error passes through unchanged."""
        try:
            yield
        except EngineUnavailable as exc:
            self.close_engine()
            raise dg.RetryRequested(
                max_retries=self.connection_retries, seconds_to_wait=self.connection_retry_wait_s
            ) from exc

    def model_id(self, profile: str = "", model_dir: str | Path | None = None) -> str:
        """The model id that goes into sample rows and ledger keys."""
        return self.engine(profile, model_dir).info.model_id

    def ledger_path(self, ledger_name: str, partition: str | None = None) -> Path:
        """The SQLite file of ledger `ledger_name` ("/"-separated) for `partition`:
        `<ledger_dir>/<name>/<partition>.sqlite`, or `<ledger_dir>/<name>.sqlite` without a
        partition or when the name's last part already is the partition. Every part is quoted
        into one short path component (`ledger_component`), so no name can reach outside the
        ledger folder."""
        parts = ledger_name.split("/")
        if partition is not None and parts[-1] != partition:
            parts.append(partition)
        quoted = [ledger_component(part) for part in parts]
        base = Path(self.ledger_dir) if self.ledger_dir else default_ledger_dir()
        return base.joinpath(*quoted[:-1], f"{quoted[-1]}.sqlite")

    @contextmanager
    def _ledger(
        self, context: dg.AssetExecutionContext | None, ledger_name: str, stats: GenerationStats
    ) -> Iterator[RequestLedger]:
        """The open ledger of `ledger_name` for the context's partition; on the way out its row
        count (and any warning about a lost ledger) goes into `stats`."""
        ledger = RequestLedger(self.ledger_path(ledger_name, _partition_of(context)))
        try:
            warning = self._lost_ledger_warning(context, ledger)
            if warning:
                (context.log.warning if context is not None else print)(warning)
                stats.warnings.append(warning)
            yield ledger
        finally:
            stats.ledgers[str(ledger.path)] = ledger.rows()
            ledger.close()

    def _lost_ledger_warning(self, context: dg.AssetExecutionContext | None, ledger: RequestLedger) -> str | None:
        """A warning when `ledger` starts empty (or did not exist) although the previous
        materialization of this asset and partition recorded ledger rows; checked once per file."""
        if context is None or ledger.rows_at_open or str(ledger.path) in self._checked_ledgers:
            return None
        self._checked_ledgers.add(str(ledger.path))
        previous = _previous_ledger_rows(context)
        if not previous:
            return None
        state = "empty" if ledger.existed else "missing"
        return (
            f"ledger {ledger.path} was {state} at the start of this run, but the previous materialization of "
            f"{context.asset_key.to_user_string()} recorded {previous} ledger rows: every request is generated "
            "again (was the ledger folder deleted or replaced?)"
        )

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
        ledger_stats = GenerationStats()
        with self._ledger(context, ledger_name, ledger_stats) as ledger, self.transient_faults_retried():
            results, stats = run_requests(
                engine,
                ledger,
                requests,
                row_ids=row_ids,
                log=log,
                progress_interval=self.progress_interval_s,
                max_error_share=self.max_error_share,
                attempts_per_run=self.attempts_per_run,
            )
        stats.ledgers, stats.warnings = ledger_stats.ledgers, ledger_stats.warnings
        return results, stats

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

    @contextmanager
    def stream(
        self,
        context: dg.AssetExecutionContext | None,
        *,
        ledger_name: str,
        profile: str = "",
        model_dir: str | Path | None = None,
    ) -> Iterator[LedgerStream]:
        """An open `LedgerStream` through the ledger `ledger_name` (see `engines.runner`): submit
        requests at any time, take each result as it finishes. The caller checks the error budget
        (`stream.check_error_budget(llm.max_error_share)`) when its work is done; `stream.stats`
        has the statistics, ledger rows included, once the block ends."""
        log = context.log.info if context is not None else print
        engine = self.engine(profile, model_dir)
        ledger_stats = GenerationStats()
        with self._ledger(context, ledger_name, ledger_stats) as ledger:
            stream = LedgerStream(
                engine,
                ledger,
                attempts_per_run=self.attempts_per_run,
                log=log,
                progress_interval=self.progress_interval_s,
            )
            try:
                with self.transient_faults_retried():
                    yield stream
            finally:
                stream.close()
        stream.stats.ledgers, stream.stats.warnings = ledger_stats.ledgers, ledger_stats.warnings

    def score_many(
        self,
        context: dg.AssetExecutionContext | None,
        pairs: Sequence[tuple[str, str]],
        *,
        ledger_name: str,
        profile: str = "",
    ) -> tuple[list[TokenScore | None], GenerationStats]:
        """Log-probabilities of (prompt, completion) pairs through the ledger `ledger_name`, many
        pairs per engine call; see `engines.runner.run_scores`. A pair that cannot be scored (longer
        than the context) is None and counted in `errors`."""
        log = context.log.info if context is not None else print
        engine = self.engine(profile)
        ledger_stats = GenerationStats()
        with self._ledger(context, ledger_name, ledger_stats) as ledger, self.transient_faults_retried():
            scores, stats = run_scores(engine, ledger, pairs, log=log, progress_interval=self.progress_interval_s)
        stats.ledgers, stats.warnings = ledger_stats.ledgers, ledger_stats.warnings
        return scores, stats

    def close_engine(self) -> None:
        """Close the current engine (frees its model and, on vLLM, its GPU memory)."""
        if self._engine is not None:
            self._engine.close()
        self._engine, self._engine_key = None, None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close_engine()
