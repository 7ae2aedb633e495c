"""QaDS and OpenMathMix: `embeddings`, `quality_scores`, `selections` and `mixture`.

Scores are assets of their own; `selections` and `mixture` only decide, so a new ratio or
threshold in `configs/mixtures/<name>.yaml` rematerializes those two and nothing upstream.
"""

from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.assets.contamination import CHECK_NAME as CONTAMINATION_CHECK
from mathdata_pipeline.assets.contamination import contamination_check
from mathdata_pipeline.assets.metadata import (
    counts_metadata,
    generation_metadata,
    table_metadata,
)
from mathdata_pipeline.assets.partitions import mixture_specs
from mathdata_pipeline.assets.plots import bar_chart, coverage_plot
from mathdata_pipeline.engines.runner import GenerationStats
from mathdata_pipeline.methods import mixture as mix
from mathdata_pipeline.methods.candidates import candidate_rows
from mathdata_pipeline.methods.embeddings import (
    EmbeddingCache,
    build_embedder,
    embed_with_cache,
    render_for_embedding,
)
from mathdata_pipeline.methods.mixture_spec import KindSpec, load_mixture_spec
from mathdata_pipeline.methods.pool import drop_benchmark_overlap
from mathdata_pipeline.methods.quality import quality_scores as quality_scores_of
from mathdata_pipeline.methods.selection import (
    Candidates,
    apply_influence_prune,
    select,
)
from mathdata_pipeline.resources.llm import LLMResource
from mathdata_pipeline.resources.selector import KCenterSelector
from mathdata_pipeline.resources.table_store import TableStore

KINDS = ("reasoning", "general")


class EmbeddingsConfig(dg.Config):
    """Which embedder: `sentence` (sentence-transformers; `embedded` = all-MiniLM-L6-v2 from its
    wheel) or `hidden_state` (an LLM's hidden states at `layer`, `mean` or `last` pooling).
    `max_per_group` > 0 keeps that many candidates per (kind, source, origin): the demo's budget."""

    embedder: str = "sentence"
    model: str = "embedded"
    layer: int = -1
    pooling: str = "mean"
    batch_size: int = 32
    max_per_group: int = 0
    seed: int = 0


def _cache_path(store: TableStore, model_key: str) -> Path:
    root = store.root_path()
    base = Path(root.path) if root.protocol in ("", "file", "local") else Path(".cache")
    return base / "_cache" / "embeddings" / f"{model_key}.parquet"


def _matrix(table: pa.Table) -> np.ndarray:
    column = table.column("embedding").combine_chunks()
    return column.values.to_numpy().reshape(len(column), -1).astype(np.float32, copy=False) if len(column) else np.zeros((0, 0), np.float32)


@dg.asset(group_name="selection", kinds={"parquet"}, deps=["solutions", "general_pool", "contamination_index"])
def embeddings(context: dg.AssetExecutionContext, config: EmbeddingsConfig, store: TableStore) -> dg.MaterializeResult:
    """One unit vector per QaDS candidate (every solution and general conversation), cached by
    content hash: rows whose text did not change are never embedded again. Candidates whose user
    turn overlaps a benchmark (general sets such as MMLU hold MATH-like items) are dropped and
    counted, so no selection can pick them."""
    candidates = candidate_rows(store.read_all("solutions"), store.read("general_pool"),
                                max_per_group=config.max_per_group, seed=config.seed)
    candidates, overlapping = drop_benchmark_overlap(candidates, store.read("contamination_index"), id_column="candidate_id")
    settings = ({"model": config.model, "batch_size": config.batch_size} if config.embedder == "sentence" else
                {"source": config.model, "layer": config.layer, "pooling": config.pooling, "batch_size": config.batch_size})
    embedder = build_embedder(config.embedder, **settings)
    texts = [render_for_embedding(q, r) for q, r in zip(candidates.column("question").to_pylist(), candidates.column("response").to_pylist())]
    matrix, hits, misses = embed_with_cache(texts, embedder, EmbeddingCache(_cache_path(store, embedder.model_key)))
    dim = int(matrix.shape[1]) if matrix.ndim == 2 and matrix.size else 0
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()), dim)
    table = candidates.drop_columns(["question", "response"]).append_column("embedding", vectors)
    path = store.write(table, "embeddings")
    kinds = pc.value_counts(table.column("kind")).to_pylist()
    return dg.MaterializeResult(metadata={**table_metadata(table.drop_columns(["embedding"]), path),
                                          "model_key": embedder.model_key, "dimensions": dim,
                                          **counts_metadata({"cache_hits": hits, "embedded": misses,
                                                             "dropped_benchmark_overlap": overlapping,
                                                             **{f"candidates/{k['values']}": k["counts"] for k in kinds}})})


class QualityConfig(dg.Config):
    """QaDS quality (METHODS.md §1.3 step Q): win rate of each labelled candidate as a one-shot
    demonstration against `anchors` k-means anchors (`sum_logp` or `mean_logp`), then a ridge
    scorer on the embeddings predicts it for the rest."""

    anchors: int = 100
    anchor_selection: str = "kmeans"
    label_fraction: float = 0.1
    min_labels: int = 20
    max_labels: int = 2000
    metric: str = "sum_logp"
    ridge_alpha: float = 1.0
    seed: int = 0


@dg.asset(group_name="selection", kinds={"parquet"}, deps=["embeddings", "solutions", "general_pool"], pool="gpu")
def quality_scores(context: dg.AssetExecutionContext, config: QualityConfig, store: TableStore,
                   llm: LLMResource) -> dg.MaterializeResult:
    """Per candidate: the measured win rate (labelled subset), the scorer's prediction, and the
    quality used for selection (measured where present, predicted otherwise)."""
    table = store.read("embeddings")
    texts = candidate_rows(store.read_all("solutions"), store.read("general_pool"))
    text_by_id = dict(zip(texts.column("candidate_id").to_pylist(),
                          zip(texts.column("question").to_pylist(), texts.column("response").to_pylist())))
    parts, report, stats = [], {}, []

    def score_many(pairs):
        scores, run_stats = llm.score_many(context, pairs, ledger_name="quality")
        stats.append(run_stats)
        return scores

    for kind in KINDS:
        sub = table.filter(pc.field("kind") == kind)
        if sub.num_rows == 0:
            continue
        ids = sub.column("candidate_id").to_pylist()
        scores = quality_scores_of([text_by_id[i] for i in ids], _matrix(sub), score_many, anchors=config.anchors,
                                   anchor_selection=config.anchor_selection, label_fraction=config.label_fraction,
                                   min_labels=config.min_labels, max_labels=config.max_labels, metric=config.metric,
                                   alpha=config.ridge_alpha, seed=config.seed)
        parts.append(pa.table({"candidate_id": ids, "kind": [kind] * len(ids),
                               "q_label": pa.array(scores.q_label, pa.float32(), mask=np.isnan(scores.q_label)),
                               "q_pred": pa.array(scores.q_pred, pa.float32()), "quality": pa.array(scores.q, pa.float32())}))
        report[kind] = {k: v for k, v in scores.report.items() if k != "anchor_rows"}
        report[kind]["anchor_ids"] = [ids[i] for i in scores.report["anchor_rows"]]
    out = pa.concat_tables(parts)
    path = store.write(out, "quality_scores")
    return dg.MaterializeResult(metadata={**table_metadata(out, path), **generation_metadata(GenerationStats.combine(stats)),
                                          "by_kind": dg.MetadataValue.json(report)})


def _candidates(table: pa.Table, quality: dict[str, float], spec: KindSpec, kind: str) -> tuple[Candidates, pa.Table]:
    sub = table.filter(pc.field("kind") == kind)
    if spec.sources:
        sub = sub.filter(pc.is_in(pc.field("source"), pa.array(spec.sources)))
    if spec.origins:
        sub = sub.filter(pc.is_in(pc.field("origin"), pa.array(spec.origins)))
    ids = sub.column("candidate_id").to_pylist()
    return Candidates(ids, sub.column("source").to_pylist(), sub.column("origin").to_pylist(),
                      np.asarray([quality[i] for i in ids], dtype=np.float32), _matrix(sub)), sub


@dg.asset(partitions_def=mixture_specs, group_name="selection", kinds={"parquet"},
          deps=["embeddings", "quality_scores", "influence_scores"])
def selections(context: dg.AssetExecutionContext, store: TableStore, selector: KCenterSelector) -> dg.MaterializeResult:
    """QaDS decisions of one mixture spec for every candidate: selected or not, pick order, the
    distance that made it a pick, and why. Reasoning and general rows are selected separately."""
    name = context.partition_key
    spec = load_mixture_spec(name)
    table = store.read("embeddings")
    scores = store.read("quality_scores", columns=["candidate_id", "quality"])
    quality = dict(zip(scores.column("candidate_id").to_pylist(), scores.column("quality").to_pylist()))
    reasoning, _ = _candidates(table, quality, spec.reasoning, "reasoning")
    decided = [select(reasoning, spec.reasoning, int(round(spec.reasoning.selection_ratio * len(reasoning.ids))),
                      kind="reasoning", seed=spec.seed, kcenter=selector.select)]
    prune_counts = {}
    if spec.reasoning.influence_prune.fraction > 0:
        decided[0], prune_counts = apply_influence_prune(decided[0], store.read("influence_scores"),
                                                         spec.reasoning.influence_prune.fraction, spec.reasoning.influence_prune.rule)
    general, _ = _candidates(table, quality, spec.general, "general")
    budget = mix.general_budget(int(pc.sum(decided[0].column("selected")).as_py() or 0), spec, len(general.ids))
    decided.append(select(general, spec.general, budget, kind="general", seed=spec.seed, kcenter=selector.select))
    out = pa.concat_tables(decided)
    path = store.write(out, "selections", name)
    plots = {f"coverage_{kind}": coverage_plot(f"{name}: {kind} candidates (PCA of embeddings)", cands.embeddings,
                                               d.column("selected").to_numpy(zero_copy_only=False))
             for kind, cands, d in zip(KINDS, (reasoning, general), decided) if len(cands.ids) > 1}
    counts = {f"{kind}/{what}": int(v) for kind, d in zip(KINDS, decided)
              for what, v in (("candidates", d.num_rows), ("selected", pc.sum(d.column("selected")).as_py() or 0))}
    return dg.MaterializeResult(metadata={**table_metadata(out, path), **counts_metadata({**counts, **prune_counts}), **plots,
                                          "config_hash": spec.config_hash()})


MIXTURE_CHECKS = {
    CONTAMINATION_CHECK: "No row's user turn overlaps a benchmark question.",
    "no_duplicate_rows": "No row id or normalized conversation appears twice.",
    "ratios_within_tolerance": "The reasoning/general shares match the spec within its tolerance (plus one row).",
    "schema": "Columns and types are the mixture schema; every row has an assistant turn.",
}


@dg.multi_asset(partitions_def=mixture_specs, group_name="selection",
                specs=[dg.AssetSpec("mixture", kinds={"parquet"}, deps=["selections", "general_pool", "contamination_index",
                                          dg.AssetDep("solutions", partition_mapping=dg.AllPartitionMapping())],
                                    description="The training mixture of one spec (reasoning and general rows in chat "
                                                "`messages` form, each with its lineage), its manifest and its exports.")],
                check_specs=[dg.AssetCheckSpec(n, asset="mixture", blocking=True, description=d) for n, d in MIXTURE_CHECKS.items()])
def mixture(context: dg.AssetExecutionContext, store: TableStore) -> dg.MaterializeResult:
    """Build the mixture; it replaces the previous one (and is exported as JSONL and a `datasets`
    folder) only when every check passes. A failing mixture is kept under `mixture_rejected/` for
    review and the last good one stays in place."""
    name = context.partition_key
    spec = load_mixture_spec(name)
    decisions = store.read("selections", name)
    table = mix.compose(name, spec, decisions, store.read_all("solutions"), store.read("general_pool"))
    report = mix.manifest(name, spec, table, decisions)
    users = pa.table({"row_id": [r for r, _ in mix.user_text(table)], "question": [q for _, q in mix.user_text(table)]})
    checks = [contamination_check(store, users, asset_key="mixture", partition=name, id_column="row_id", text_column="question")]
    dupes, ratios, schema = mix.duplicate_rows(table), mix.ratio_problems(report, spec), mix.schema_problems(table)
    for check, problems in (("no_duplicate_rows", dupes), ("ratios_within_tolerance", ratios), ("schema", schema)):
        checks.append(dg.AssetCheckResult(check_name=check, asset_key="mixture", passed=not problems,
                                          description="; ".join(problems[:10]) or "ok",
                                          metadata={"problems": len(problems)}))
    passed = all(c.passed for c in checks)
    path = store.write(table, "mixture" if passed else "mixture_rejected", name)
    metadata = {**table_metadata(table, path), "manifest": dg.MetadataValue.json(report), "config_hash": spec.config_hash(),
                "composition": bar_chart(f"{name}: rows per source", list(report["by_source"]),
                                         {"selected": [v["selected"] for v in report["by_source"].values()]})}
    if passed and path.protocol in ("", "file", "local"):
        exports = mix.export(table, report, Path(path.path).parent / f"{name}_export")
        metadata.update({f"export_{k}": dg.MetadataValue.path(v) for k, v in exports.items()})
    else:
        context.log.warning(f"mixture {name} failed its checks: written to {path}; the previous mixture is kept")
    return dg.MaterializeResult(asset_key="mixture", metadata=metadata, check_results=checks)
