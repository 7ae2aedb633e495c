"""QaDS: `embeddings`, `quality_scores` and `selections`.

Scores are assets of their own; `selections` only decides, so a new ratio or threshold in
`configs/mixtures/<name>.yaml` rematerializes `selections` and `mixture` and nothing upstream.
"""

from typing import Literal

import dagster as dg
import pyarrow.compute as pc
from pydantic import Field

from mathdata_pipeline.common.metadata import counts_metadata, generation_metadata, table_metadata
from mathdata_pipeline.common.partitions import mixture_specs
from mathdata_pipeline.common.plots import coverage_plot
from mathdata_pipeline.decontamination.filter import drop_benchmark_overlap
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.engines.runner import GenerationStats
from mathdata_pipeline.mixtures.spec import load_mixture_spec
from mathdata_pipeline.qads.candidates import candidate_rows, candidate_texts
from mathdata_pipeline.qads.embeddings import EmbeddingCache, build_embedder, embed_candidates, embedding_matrix
from mathdata_pipeline.qads.quality import quality_table
from mathdata_pipeline.qads.resources import KCenterSelector
from mathdata_pipeline.qads.selection import decide_spec
from mathdata_pipeline.storage.resources import TableStore


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

    def embedder_settings(self) -> dict:
        """Keyword arguments of `build_embedder` for the chosen kind."""
        if self.embedder == "sentence":
            return {"model": self.model, "batch_size": self.batch_size}
        return {"source": self.model, "layer": self.layer, "pooling": self.pooling, "batch_size": self.batch_size}


@dg.asset(group_name="selection", kinds={"parquet"}, deps=["solutions", "general_pool", "contamination_index"])
def embeddings(context: dg.AssetExecutionContext, config: EmbeddingsConfig, store: TableStore) -> dg.MaterializeResult:
    """One unit vector per QaDS candidate (every solution and general conversation), cached by
    content hash: rows whose text did not change are never embedded again. Candidates whose user
    turn overlaps a benchmark are dropped and counted, so no selection can pick them."""
    candidates = candidate_rows(
        store.read_all("solutions"), store.read("general_pool"), max_per_group=config.max_per_group, seed=config.seed
    )
    candidates, overlapping = drop_benchmark_overlap(
        candidates, store.read("contamination_index"), id_column="candidate_id"
    )
    embedder = build_embedder(config.embedder, **config.embedder_settings())
    cache = EmbeddingCache(
        store.local_dir("_cache", "embeddings", f"{embedder.model_key}.parquet", purpose="the embedding cache")
    )
    table, hits, misses = embed_candidates(candidates, embedder, cache)
    path = store.write(table, "embeddings")
    kinds = pc.value_counts(table.column("kind")).to_pylist() if table.num_rows else []
    return dg.MaterializeResult(
        metadata={
            **table_metadata(table.drop_columns(["embedding"]), path),
            "model_key": embedder.model_key,
            "dimensions": embedding_matrix(table).shape[1],
            **counts_metadata(
                {
                    "cache_hits": hits,
                    "embedded": misses,
                    "dropped_benchmark_overlap": overlapping,
                    **{f"candidates/{k['values']}": k["counts"] for k in kinds},
                }
            ),
        }
    )


class QualityConfig(dg.Config):
    """QaDS quality (METHODS.md §1.3 step Q): win rate of each labelled candidate as a one-shot
    demonstration against `anchors` k-means anchors, then a ridge scorer on the embeddings
    predicts it for the rest."""

    anchors: int = Field(default=100, ge=1, description="anchors per kind")
    anchor_selection: Literal["kmeans", "random"] = Field(default="kmeans")
    label_fraction: float = Field(default=0.1, gt=0.0, le=1.0, description="share of candidates labelled by the LLM")
    min_labels: int = Field(default=20, ge=1)
    max_labels: int = Field(default=2000, ge=1)
    metric: Literal["sum_logp", "mean_logp"] = Field(default="sum_logp", description="what a win compares")
    ridge_alpha: float = Field(default=1.0, gt=0.0)
    seed: int = Field(default=0)


@dg.asset(group_name="selection", kinds={"parquet"}, deps=["embeddings", "solutions", "general_pool"], pool="gpu")
def quality_scores(
    context: dg.AssetExecutionContext, config: QualityConfig, store: TableStore, llm: LLMResource
) -> dg.MaterializeResult:
    """Per candidate: the measured win rate (labelled subset), the scorer's prediction, and the
    quality used for selection (measured where present, predicted otherwise)."""
    table, stats = store.read("embeddings"), []

    def score_many(pairs):
        scores, run_stats = llm.score_many(context, pairs, ledger_name="quality")
        stats.append(run_stats)
        return scores

    out, report = quality_table(
        table,
        embedding_matrix(table),
        candidate_texts(store.read_all("solutions"), store.read("general_pool")),
        score_many,
        anchors=config.anchors,
        anchor_selection=config.anchor_selection,
        label_fraction=config.label_fraction,
        min_labels=config.min_labels,
        max_labels=config.max_labels,
        metric=config.metric,
        alpha=config.ridge_alpha,
        seed=config.seed,
    )
    path = store.write(out, "quality_scores")
    return dg.MaterializeResult(
        metadata={
            **table_metadata(out, path),
            **generation_metadata(GenerationStats.combine(stats)),
            "by_kind": dg.MetadataValue.json(report),
        }
    )


@dg.asset(
    partitions_def=mixture_specs,
    group_name="selection",
    kinds={"parquet"},
    deps=["embeddings", "quality_scores", "influence_scores"],
)
def selections(context: dg.AssetExecutionContext, store: TableStore, selector: KCenterSelector) -> dg.MaterializeResult:
    """QaDS decisions of one mixture spec for every candidate: selected or not, pick order, the
    distance that made it a pick, and why. Reasoning and general rows are selected separately."""
    name = context.partition_key
    spec = load_mixture_spec(name)
    table = store.read("embeddings")
    scores = store.read("quality_scores", columns=["candidate_id", "quality"])
    decisions, counts, candidates = decide_spec(
        table,
        embedding_matrix(table),
        dict(zip(*scores.to_pydict().values())),
        spec,
        store.read_if_exists("influence_scores"),
        kcenter=selector.select,
    )
    path = store.write(decisions, "selections", name)
    plots = {
        f"coverage_{kind}": dg.MetadataValue.md(
            coverage_plot(
                f"{name}: {kind} candidates (PCA of embeddings)",
                cands.embeddings,
                decisions.filter(pc.field("kind") == kind).column("selected").to_numpy(zero_copy_only=False),
            )
        )
        for kind, cands in candidates.items()
        if len(cands.ids) > 1
    }
    return dg.MaterializeResult(
        metadata={
            **table_metadata(decisions, path),
            **counts_metadata(counts),
            **plots,
            "config_hash": spec.config_hash(),
        }
    )
