"""The `mixture` asset: rows of one spec in chat form with lineage, its manifest, blocking checks
and exports with their dataset card; `published_mixture` uploads the export to the Hub when
configured."""

from pathlib import Path

import dagster as dg
import pyarrow as pa
from pydantic import Field

from mathdata_pipeline.common.metadata import table_metadata
from mathdata_pipeline.common.partitions import mixture_specs
from mathdata_pipeline.common.plots import bar_chart
from mathdata_pipeline.mixtures import compose as mix
from mathdata_pipeline.mixtures import publish
from mathdata_pipeline.mixtures.card import AUDIT_TABLE, CARD_FILE, render_card
from mathdata_pipeline.mixtures.checks import MIXTURE_CHECK_SPECS, check_verdict, mixture_checks, mixture_licenses
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
                dg.AssetDep("question_pool", partition_mapping=dg.AllPartitionMapping()),
            ],
            description="The training mixture of one spec (reasoning and general rows in chat "
            "`messages` form, each with its lineage), its manifest and its exports with a dataset card.",
        )
    ],
)
def mixture(context: dg.AssetExecutionContext, store: TableStore) -> dg.MaterializeResult:
    """Build the mixture; it replaces the previous one (and is exported as JSONL, a `datasets`
    folder and a dataset card `README.md`, with the check verdict in its manifest) only when every
    check passes. A failing mixture is kept under `mixture_rejected/` for review and the last good
    one stays in place."""
    name = context.partition_key
    spec = load_mixture_spec(name)
    decisions, solutions = store.read("selections", name), store.read_all("solutions")
    general, candidates = store.read("general_pool"), store.read_if_exists("candidate_pool")
    table = mix.compose(name, spec, decisions, solutions, general, candidates)
    report = {**mix.manifest(name, spec, table, decisions), "licenses": mixture_licenses(store, table, general)}
    checks = mixture_checks(store, table, report, spec, name)
    report["checks"] = check_verdict(checks)
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
    if passed:
        card = _card(store, name, report, table, solutions)
        with store.folder(*publish.export_parts(name), mode="write") as folder:
            exports = {**mix.export(table, report, folder, extra_files={CARD_FILE: card}), "card": CARD_FILE}
        url = store.folder_url(*publish.export_parts(name))
        metadata.update({f"export_{k}": dg.MetadataValue.path(f"{url}/{Path(v).name}") for k, v in exports.items()})
    elif not passed:
        context.log.warning(f"mixture {name} failed its checks: written to {path}; the previous mixture is kept")
    return dg.MaterializeResult(asset_key="mixture", metadata=metadata, check_results=checks)


def _card(store: TableStore, name: str, report: dict, table: pa.Table, solutions: pa.Table) -> str:
    """The dataset card of mixture `name` from its manifest, rows, solutions, the contamination
    index and the mixture's contamination audit."""
    index = store.read("contamination_index", columns=["benchmark", "problem_id"])
    return render_card(report, table, solutions, index, store.read_if_exists(AUDIT_TABLE, name))


class PublishConfig(dg.Config):
    """Where `published_mixture` uploads; publishing is off while `repo` is empty."""

    repo: str = Field(
        default="",
        pattern=r"^$|^[A-Za-z0-9][\w.-]*/[\w.{}-]+$",
        description="Hub dataset repo ORG/NAME (`{spec}` becomes the spec name); empty keeps publishing off",
    )
    private: bool = Field(default=True, description="Create the repo private; an existing public repo is refused")


@dg.asset(
    partitions_def=mixture_specs,
    group_name="selection",
    deps=["mixture"],
    kinds={"huggingface"},
    output_required=False,
    description="The last good export of a mixture (card, data, manifest) on the Hugging Face Hub; "
    "off unless its config names a repo.",
)
def published_mixture(context: dg.AssetExecutionContext, config: PublishConfig, store: TableStore):
    """Upload the export of this spec with `mathdata publish`'s rules (a failed check verdict or a
    changed spec refuses). Without a configured `repo` nothing is uploaded and nothing is
    materialized, so the asset can sit in every schedule."""
    name = context.partition_key
    if not config.repo:
        context.log.info(f"publishing {name} is off: set `repo` in the config of published_mixture to upload it")
        return
    repo = config.repo.replace("{spec}", name)
    upload = publish.prepare_upload(store.fetch_folder(*publish.export_parts(name)), name)
    for note in upload.notes:
        context.log.warning(note)
    url = publish.push_to_hub(upload, repo, config.private)
    yield dg.MaterializeResult(
        metadata={
            "repo": repo,
            "private": config.private,
            "commit_url": dg.MetadataValue.url(url),
            "config_hash": upload.manifest["config_hash"],
            "rows": upload.manifest["rows"],
            "files": [p.name for p in upload.files],
        }
    )
