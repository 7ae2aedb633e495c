"""The `mixture` asset: rows of one spec in chat form with lineage, its manifest, blocking checks
and exports."""

import dagster as dg

from mathdata_pipeline.common.metadata import table_metadata
from mathdata_pipeline.common.partitions import mixture_specs
from mathdata_pipeline.common.plots import bar_chart
from mathdata_pipeline.mixtures import compose as mix
from mathdata_pipeline.mixtures.checks import MIXTURE_CHECK_SPECS, mixture_checks
from mathdata_pipeline.mixtures.spec import load_mixture_spec
from mathdata_pipeline.storage.resources import TableStore


@dg.multi_asset(
    partitions_def=mixture_specs,
    group_name="selection",
    check_specs=MIXTURE_CHECK_SPECS,
    specs=[
        dg.AssetSpec(
            "mixture",
            kinds={"parquet"},
            deps=[
                "selections",
                "general_pool",
                "candidate_pool",
                "contamination_index",
                dg.AssetDep("solutions", partition_mapping=dg.AllPartitionMapping()),
            ],
            description="The training mixture of one spec (reasoning and general rows in chat "
            "`messages` form, each with its lineage), its manifest and its exports.",
        )
    ],
)
def mixture(context: dg.AssetExecutionContext, store: TableStore) -> dg.MaterializeResult:
    """Build the mixture; it replaces the previous one (and is exported as JSONL and a `datasets`
    folder) only when every check passes. A failing mixture is kept under `mixture_rejected/` for
    review and the last good one stays in place."""
    name = context.partition_key
    spec = load_mixture_spec(name)
    decisions = store.read("selections", name)
    table = mix.compose(
        name,
        spec,
        decisions,
        store.read_all("solutions"),
        store.read("general_pool"),
        store.read_if_exists("candidate_pool"),
    )
    report = mix.manifest(name, spec, table, decisions)
    checks = mixture_checks(store, table, report, spec, name)
    passed = all(c.passed for c in checks)
    path = store.write(table, "mixture" if passed else "mixture_rejected", name)
    chart = bar_chart(
        f"{name}: rows per source",
        list(report["by_source"]),
        {"selected": [v["selected"] for v in report["by_source"].values()]},
    )
    metadata = {
        **table_metadata(table, path),
        "manifest": dg.MetadataValue.json(report),
        "config_hash": spec.config_hash(),
        "composition": dg.MetadataValue.md(chart),
    }
    if passed and store.is_local():
        exports = mix.export(table, report, store.local_dir("mixture", f"{name}_export", purpose="mixture exports"))
        metadata.update({f"export_{k}": dg.MetadataValue.path(v) for k, v in exports.items()})
    elif not passed:
        context.log.warning(f"mixture {name} failed its checks: written to {path}; the previous mixture is kept")
    return dg.MaterializeResult(asset_key="mixture", metadata=metadata, check_results=checks)
