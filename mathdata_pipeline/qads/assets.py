"""QaDS: `candidate_pool`, `embeddings`, `quality_scores` and `selections`.

Scores are assets of their own; `selections` only decides, so a new ratio or threshold in
`configs/mixtures/<name>.yaml` rematerializes `selections` and `mixture` and nothing upstream.
"""

from typing import Literal

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from mathdata_pipeline.common.metadata import counts_metadata, generation_metadata, table_metadata
from mathdata_pipeline.common.partitions import mixture_specs
from mathdata_pipeline.common.plots import coverage_plot
from mathdata_pipeline.common.resources import ComputeConfig
from mathdata_pipeline.decontamination.checks import contamination_check, contamination_check_spec
from mathdata_pipeline.decontamination.filter import drop_benchmark_overlap
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.engines.runner import GenerationStats
from mathdata_pipeline.mixtures.spec import load_mixture_spec
from mathdata_pipeline.qads.candidates import candidate_rows, candidate_texts
from mathdata_pipeline.qads.checks import EVALUATION_CHECK_SPEC, evaluation_split_check
from mathdata_pipeline.qads.embeddings import EmbeddingCache, embed_candidates, embedding_matrix
from mathdata_pipeline.qads.quality import alpaca_prompt, chat_renderer, quality_table
from mathdata_pipeline.qads.ray_embeddings import RayEmbedder, open_embedder
from mathdata_pipeline.qads.resources import KCenterSelector
from mathdata_pipeline.qads.selection import DART_SOLUTION_COLUMNS, decide_spec, evaluation_split_warnings
from mathdata_pipeline.sources.candidate_pools import (
    POOL_SCHEMA,
    build_pool_rows,
    chosen_pools,
    load_candidate_pools,
    pools_path,
)
from mathdata_pipeline.sources.config import open_source
from mathdata_pipeline.sources.resources import DataSources
from mathdata_pipeline.storage.resources import TableStore


class CandidatePoolConfig(dg.Config):
    """Which open datasets of the pools file become candidates (METHODS.md §1, OpenMathMix)."""

    pools: list[str] = Field(
        default_factory=list, description="pools of the pools file to read; empty = every configured pool"
    )
    file: str = Field(default="", description="candidate pools YAML; empty = configs/candidate_pools.yaml")


@dg.asset(
    group_name="seeds",
    kinds={"parquet"},
    deps=["contamination_index"],
    check_specs=[contamination_check_spec("candidate_pool", blocking=False)],
)
def candidate_pool(
    context: dg.AssetExecutionContext, config: CandidatePoolConfig, store: TableStore, sources: DataSources
) -> dg.MaterializeResult:
    """Open reasoning and general datasets (any Hugging Face id or file, mapped in
    `configs/candidate_pools.yaml`) as chat rows with license, problem key and evaluation flag.
    Overlap with the benchmarks is reported here (a warning) and dropped before selection."""
    path = pools_path(config.file or None)
    tables, counts = [POOL_SCHEMA.empty_table()], {}
    for name, spec in chosen_pools(load_candidate_pools(path), config.pools, path).items():
        label, records = open_source(spec, base=sources.base(), config_base=path.parent)
        table, stats = build_pool_rows(records, spec, source=name, label=label)
        tables.append(table)
        counts.update({f"{name}/{key}": value for key, value in stats.items()})
    table = pa.concat_tables(tables)
    out = store.write(table, "candidate_pool")
    users = [next((m["content"] for m in msgs if m["role"] == "user"), "") for msgs in table["messages"].to_pylist()]
    check = contamination_check(
        store,
        pa.table({"row_id": table["row_id"], "question": users}),
        asset_key="candidate_pool",
        partition=None,
        id_column="row_id",
        text_column="question",
        severity=dg.AssetCheckSeverity.WARN,
    )
    return dg.MaterializeResult(
        metadata={**table_metadata(table, out), **counts_metadata(counts), "pools_file": str(path)},
        check_results=[check],
    )


class EmbeddingsConfig(dg.Config):
    """Which embedder: `sentence` (sentence-transformers; `embedded` = all-MiniLM-L6-v2 from its
    wheel) or `hidden_state` (an LLM's hidden states at `layer`, `mean` or `last` pooling)."""

    embedder: Literal["sentence", "hidden_state"] = Field(default="sentence")
    model: str = Field(default="embedded", description="embedding model: embedded, a folder or a hub id")
    layer: int = Field(default=-1, description="hidden_state: layer index (negative counts from the top)")
    pooling: Literal["mean", "last"] = Field(default="mean", description="hidden_state: pooling over tokens")
    batch_size: int = Field(default=32, ge=1)
    max_per_group: int = Field(
        default=0, ge=0, description="keep this many candidates per (kind, source, origin); 0 = all (the demo's budget)"
    )
    seed: int = Field(default=0, description="seed of the max_per_group sample")
    compute: ComputeConfig = Field(
        default_factory=ComputeConfig, description="local, or chunks on Ray workers (README Scale out)"
    )

    def embedder_settings(self) -> dict:
        """Keyword arguments of `build_embedder` for the chosen kind."""
        if self.embedder == "sentence":
            return {"model": self.model, "batch_size": self.batch_size}
        return {"source": self.model, "layer": self.layer, "pooling": self.pooling, "batch_size": self.batch_size}


@dg.asset(
    group_name="selection",
    kinds={"parquet"},
    deps=["solutions", "general_pool", "candidate_pool", "contamination_index"],
)
def embeddings(
    context: dg.AssetExecutionContext, config: EmbeddingsConfig, store: TableStore, sources: DataSources
) -> dg.MaterializeResult:
    """One unit vector per QaDS candidate (every solution, general conversation and candidate-pool
    row), cached by content hash: rows whose text did not change are never embedded again. Rows of
    evaluation splits are flagged. Candidates whose user turn overlaps a benchmark are dropped and
    counted, so no selection can pick them."""
    evaluation_sets = [name for name, spec in sources.config().general_sets.items() if spec.evaluation_split]
    candidates = candidate_rows(
        store.read_all_if_exists("solutions"),
        store.read_if_exists("general_pool"),
        store.read_if_exists("candidate_pool"),
        evaluation_sources=evaluation_sets,
        max_per_group=config.max_per_group,
        seed=config.seed,
    )
    candidates, overlapping = drop_benchmark_overlap(
        candidates, store.read("contamination_index"), id_column="candidate_id"
    )
    with (
        open_embedder(config.compute.ray(), config.embedder, **config.embedder_settings()) as embedder,
        store.folder("_cache", "embeddings", mode="update") as cache_dir,
    ):
        cache = EmbeddingCache(cache_dir / f"{embedder.model_key}.parquet")
        table, hits, misses = embed_candidates(candidates, embedder, cache)
        compute = embedder.pool.describe() if isinstance(embedder, RayEmbedder) else "local"
    path = store.write(table, "embeddings")
    groups = pc.value_counts(pc.binary_join_element_wise(table["kind"], table["origin"], "/")).to_pylist()
    return dg.MaterializeResult(
        metadata={
            **table_metadata(table.drop_columns(["embedding"]), path),
            "model_key": embedder.model_key,
            "compute": compute,
            "dimensions": embedding_matrix(table).shape[1],
            **counts_metadata(
                {
                    "cache_hits": hits,
                    "embedded": misses,
                    "dropped_benchmark_overlap": overlapping,
                    "evaluation_split_rows": int(pc.sum(table["evaluation_split"]).as_py() or 0),
                    **{f"candidates/{g['values']}": g["counts"] for g in groups},
                }
            ),
        }
    )


class QualityConfig(dg.Config):
    """QaDS quality (METHODS.md §1.3 step Q): win rate of each labelled candidate as a one-shot
    demonstration against `anchors` k-means anchors, rendered with the SFT template, then a ridge
    scorer on the embeddings predicts it for the rest and must beat `min_heldout_correlation`."""

    anchors: int = Field(default=100, ge=1, description="anchors per kind")
    anchor_selection: Literal["kmeans", "random"] = Field(default="kmeans")
    label_fraction: float = Field(
        default=0.1, gt=0.0, le=1.0, description="share of each kind's candidates labelled by the LLM (spec: 5-20%)"
    )
    min_labels: int = Field(default=20, ge=1, description="label at least this many rows per kind")
    metric: Literal["sum_logp", "mean_logp"] = Field(default="sum_logp", description="what a win compares")
    template: Literal["chat", "alpaca"] = Field(
        default="chat",
        description="SFT template of the scoring prompts: chat = the engine's chat template (SFT on the "
        "mixture's messages), alpaca = the Alpaca format of DART-Math and MuggleMath SFT",
    )
    holdout: float = Field(default=0.25, ge=0.0, lt=1.0, description="share of labelled rows held out for the gate")
    min_heldout_correlation: float | None = Field(
        default=0.1,
        ge=-1.0,
        le=1.0,
        description="fail when the scorer's held-out Spearman correlation is below this (or not measurable) and "
        "its predictions are used; null turns the gate off",
    )
    ridge_alpha: float = Field(default=1.0, gt=0.0)
    seed: int = Field(default=0)


@dg.asset(
    group_name="selection",
    kinds={"parquet"},
    deps=["embeddings", "solutions", "general_pool", "candidate_pool"],
    pool="gpu",
)
def quality_scores(
    context: dg.AssetExecutionContext,
    config: QualityConfig,
    store: TableStore,
    llm: LLMResource,
    selector: KCenterSelector,
) -> dg.MaterializeResult:
    """Per candidate: the measured win rate (`q_label`, the labelled share) and the scorer's
    prediction (`q_pred`, every row) in separate columns; how they combine is the mixture spec's
    choice. Fails when the scorer's held-out correlation is below the configured minimum."""
    table, stats = store.read("embeddings"), []

    def score_many(pairs):
        scores, run_stats = llm.score_many(context, pairs, ledger_name="quality")
        stats.append(run_stats)
        return scores

    pools = [store.read_if_exists(key) for key in ("general_pool", "candidate_pool")]
    texts = candidate_texts(store.read_all_if_exists("solutions"), *pools)
    out, report = quality_table(
        table,
        embedding_matrix(table),
        texts,
        score_many,
        min_heldout_correlation=config.min_heldout_correlation,
        render=alpaca_prompt if config.template == "alpaca" else chat_renderer(llm.engine()),
        choose=selector.anchors,
        anchors=config.anchors,
        anchor_selection=config.anchor_selection,
        label_fraction=config.label_fraction,
        min_labels=config.min_labels,
        metric=config.metric,
        alpha=config.ridge_alpha,
        holdout=config.holdout,
        seed=config.seed,
    )
    path = store.write(out, "quality_scores")
    gate = "off" if config.min_heldout_correlation is None else f"held-out Spearman >= {config.min_heldout_correlation}"
    return dg.MaterializeResult(
        metadata={
            **table_metadata(out, path),
            **generation_metadata(GenerationStats.combine(stats)),
            "score_errors": sum(r["score_errors"] for r in report.values()),
            "scorer_gate": gate,
            "by_kind": dg.MetadataValue.json(report),
        }
    )


@dg.asset(
    partitions_def=mixture_specs,
    group_name="selection",
    kinds={"parquet"},
    deps=[
        "embeddings",
        "quality_scores",
        "influence_scores",
        dg.AssetDep("solutions", partition_mapping=dg.AllPartitionMapping()),
    ],
    check_specs=[EVALUATION_CHECK_SPEC],
)
def selections(context: dg.AssetExecutionContext, store: TableStore, selector: KCenterSelector) -> dg.MaterializeResult:
    """QaDS decisions of one mixture spec for every candidate: selected or not, pick order, the
    distance that made it a pick, the qualities used, and why. Reasoning and general rows are
    selected separately; coverage (FAISS search of every candidate against the picks) and any
    evaluation-split rows the spec allowed are reported."""
    name = context.partition_key
    spec = load_mixture_spec(name)
    table = store.read("embeddings")
    decisions, counts, candidates = decide_spec(
        table,
        embedding_matrix(table),
        store.read("quality_scores", columns=["candidate_id", "q_label", "q_pred"]),
        spec,
        store.read_if_exists("influence_scores"),
        kcenter=selector.select,
        solutions=store.read_all_if_exists("solutions", columns=DART_SOLUTION_COLUMNS),
    )
    path = store.write(decisions, "selections", name)
    warnings = evaluation_split_warnings(decisions)
    for warning in warnings:
        context.log.warning(f"{name}: {warning}")
    metadata = {**table_metadata(decisions, path), **counts_metadata(counts), "config_hash": spec.config_hash()}
    for kind, cands in candidates.items():
        selected = decisions.filter(pc.field("kind") == kind).column("selected").to_numpy(zero_copy_only=False)
        if selected.any():
            distances = selector.coverage(cands.embeddings, selected)
            metadata[f"coverage_distances_{kind}"] = dg.MetadataValue.json(distances)
        if len(cands.ids) > 1:
            title = f"{name}: {kind} candidates (PCA of embeddings)"
            metadata[f"coverage_{kind}"] = dg.MetadataValue.md(coverage_plot(title, cands.embeddings, selected))
    if warnings:
        metadata["warnings"] = dg.MetadataValue.md("\n".join(f"- {w}" for w in warnings))
    return dg.MaterializeResult(metadata=metadata, check_results=[evaluation_split_check(decisions, spec)])
