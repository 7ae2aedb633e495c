"""The blocking checks of a mixture: no benchmark overlap, no duplicate rows, shares within
tolerance, schema, licenses allowed."""

from collections import Counter

import dagster as dg
import pyarrow as pa

from mathdata_pipeline.common.metadata import markdown_table
from mathdata_pipeline.common.partitions import mixture_specs
from mathdata_pipeline.decontamination.checks import CHECK_NAME as CONTAMINATION_CHECK
from mathdata_pipeline.decontamination.checks import contamination_check, partitioned_check_spec
from mathdata_pipeline.mixtures import compose as mix
from mathdata_pipeline.mixtures import licenses as lic
from mathdata_pipeline.mixtures.spec import MixtureSpec
from mathdata_pipeline.sources.config import load_sources_config
from mathdata_pipeline.storage.resources import TableStore

MIXTURE_CHECKS = {
    CONTAMINATION_CHECK: "No row's user turn overlaps a benchmark question.",
    "no_duplicate_rows": "No row id or normalized conversation appears twice.",
    "ratios_within_tolerance": "The reasoning/general shares match the spec within its tolerance (plus one row).",
    "schema": "Columns and types are the mixture schema; every row has an assistant turn.",
    "licenses_allowed": "Every row's source has a known license, inside the spec's `licenses.allow` when it has one.",
}

MIXTURE_CHECK_SPECS = [
    partitioned_check_spec(name, asset="mixture", partitions_def=mixture_specs, blocking=True, description=description)
    for name, description in MIXTURE_CHECKS.items()
]


def mixture_checks(
    store: TableStore, table: pa.Table, report: dict, spec: MixtureSpec, name: str
) -> list[dg.AssetCheckResult]:
    """The results of every mixture check on the composed `table` of spec `name` (its manifest
    `report`, with the `licenses` of `mixture_licenses`); the contamination check writes its
    audit table."""
    users = mix.user_text(table)
    questions = pa.table({"row_id": [r for r, _ in users], "question": [q for _, q in users]})
    results = [
        contamination_check(
            store, questions, asset_key="mixture", partition=name, id_column="row_id", text_column="question"
        )
    ]
    figures = {
        "no_duplicate_rows": {"rows": table.num_rows},
        "ratios_within_tolerance": ratio_figures(table, report, spec),
        "schema": {"rows": table.num_rows, "columns": table.num_columns},
        "licenses_allowed": license_figures(report["licenses"], spec.licenses.allow),
    }
    for check, problems in (
        ("no_duplicate_rows", mix.duplicate_rows(table)),
        ("ratios_within_tolerance", mix.ratio_problems(report, spec)),
        ("schema", mix.schema_problems(table)),
        ("licenses_allowed", lic.license_problems(report["licenses"], spec.licenses.allow)),
    ):
        results.append(
            dg.AssetCheckResult(
                check_name=check,
                asset_key="mixture",
                passed=not problems,
                description=f"{name}: " + ("; ".join(problems[:10]) or "ok"),
                metadata={"spec": name, **figures[check], "problems": len(problems)},
            )
        )
    return results


def ratio_figures(table: pa.Table, report: dict, spec: MixtureSpec) -> dict:
    """What `ratios_within_tolerance` judged: rows, realised and target share per kind (rounded to
    4 places for display), the spec's tolerance and the slack allowed (tolerance plus one row),
    and a markdown table of the same."""
    rows = Counter(table.column("kind").to_pylist())
    slack = spec.tolerance + (1.0 / report["rows"] if report["rows"] else 0.0)
    by_kind = {
        kind: {"rows": rows.get(kind, 0), "share": round(report["shares"][kind], 4), "target": round(target, 4)}
        for kind, target in report["target_shares"].items()
    }
    flat = {f"{key}_{kind}": value for kind, values in by_kind.items() for key, value in values.items()}
    return {
        "rows": report["rows"],
        **flat,
        "tolerance": round(spec.tolerance, 4),
        "allowed_deviation": round(slack, 4),
        "shares": dg.MetadataValue.md(markdown_table(by_kind, "kind")),
    }


def license_figures(usage: list[dict], allow: list[str] | None) -> dict:
    """What `licenses_allowed` judged: the licenses the spec accepts and the rows per (kind,
    source, license) as a markdown table."""
    table = {f"{u['kind']}/{u['source']}/{u['license'] or 'unknown'}": {"rows": u["rows"]} for u in usage}
    return {
        "allowed_licenses": ", ".join(allow) if allow else "any known license",
        "licenses": dg.MetadataValue.md(markdown_table(table, "kind/source/license") if table else "no rows"),
    }


def mixture_licenses(store: TableStore, table: pa.Table, general: pa.Table) -> list[dict]:
    """Rows per (kind, source, license) of a mixture table (`licenses.license_usage`): each row's
    license from its `question_pool`, `general_pool` or `candidate_pool` row, else from its source
    in sources.yaml."""
    pool = store.read_all_if_exists("question_pool", columns=["problem_id", "license"])
    problem_licenses = {} if pool is None else dict(zip(pool["problem_id"].to_pylist(), pool["license"].to_pylist()))
    general_licenses = dict(zip(general["row_id"].to_pylist(), general["license"].to_pylist()))
    candidates = store.read_if_exists("candidate_pool")
    pool_licenses = (
        {} if candidates is None else dict(zip(candidates["row_id"].to_pylist(), candidates["license"].to_pylist()))
    )
    by_source = lic.source_licenses(load_sources_config())
    return lic.license_usage(
        table, lic.row_licenses(table, problem_licenses, general_licenses, by_source, pool_licenses)
    )


def check_verdict(results: list[dg.AssetCheckResult]) -> dict[str, dict]:
    """{check name: {"passed", "description"}}: the verdict stored in the manifest of an export,
    which `mathdata publish` reads before uploading anything."""
    return {r.check_name: {"passed": r.passed, "description": r.description or ""} for r in results}
