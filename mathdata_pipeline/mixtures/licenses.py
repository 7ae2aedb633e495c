"""License rules of a mixture: the license of every row, what a spec accepts, and the license the
dataset card declares.

A row's license is the one its upstream row carries (`question_pool.license` for reasoning rows,
`general_pool.license` for general rows). Rows whose upstream row has none (ScaleQuest questions
are written by a model) count under the license configured for their `source` in
`configs/sources.yaml`. A row with neither has no known license: the `licenses_allowed` check fails
on it instead of guessing.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from mathdata_pipeline.sources.config import SourcesConfig

# The license identifiers a Hub card accepts (https://huggingface.co/docs/hub/repositories-licenses).
_HUB_LICENSE_LIST = """
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda
cc cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0
cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0
cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0
etalab-2.0 eupl-1.1 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc lppl-1.3c ms-pl mpl-2.0
odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license
llama2 gemma unknown other
"""
HUB_LICENSES = frozenset(_HUB_LICENSE_LIST.split())
# Identifiers that name no license: a row carrying one of them has no known license.
NOT_A_LICENSE = frozenset({"unknown", "other"})


def normalize_license(value: str | None) -> str | None:
    """`value` as a Hub license identifier: trimmed and lower-cased (`Apache-2.0` -> `apache-2.0`).
    None or blank text gives None."""
    text = (value or "").strip().lower()
    return text or None


def source_licenses(config: SourcesConfig) -> dict[str, str | None]:
    """{source name: configured license (normalized)} for every seed source and general set of the
    sources file; None where the file gives none (or takes the license per record)."""
    specs = {**config.seed_sources, **config.general_sets}
    return {name: normalize_license(spec.license) for name, spec in specs.items()}


def row_licenses(
    table: pa.Table,
    problem_licenses: dict[str, str | None],
    general_licenses: dict[str, str | None],
    by_source: dict[str, str | None],
    pool_licenses: dict[str, str | None] | None = None,
) -> list[str | None]:
    """The license of every row of a mixture table (MIXTURE_SCHEMA), in row order.

    Inputs: the mixture rows; {problem_id: license} of the question pool; {row_id: license} of the
    general pool; {source: license} from the sources file; {row_id: license} of the open candidate
    pool (rows with a `pool_row_id`). A row takes its upstream row's license, else its source's;
    None when neither is known. Licenses come back normalized.
    """
    pool_licenses = pool_licenses or {}
    licenses = []
    for row in table.select(["kind", "source", "problem_id", "general_row_id", "pool_row_id"]).to_pylist():
        if row["pool_row_id"]:
            own = pool_licenses.get(row["pool_row_id"])
        elif row["kind"] == "general":
            own = general_licenses.get(row["general_row_id"] or "")
        else:
            own = problem_licenses.get(row["problem_id"] or "")
        licenses.append(normalize_license(own) or by_source.get(row["source"] or ""))
    return licenses


def license_usage(table: pa.Table, licenses: list[str | None]) -> list[dict]:
    """Rows per (kind, source, license), sorted: [{"kind", "source", "license", "rows"}]. `licenses`
    is `row_licenses` of `table`; an unknown license stays None."""
    counts = Counter(zip(table.column("kind").to_pylist(), table.column("source").to_pylist(), licenses))
    return [
        {"kind": kind, "source": source, "license": license, "rows": rows}
        for (kind, source, license), rows in sorted(counts.items(), key=lambda item: tuple(map(str, item[0])))
    ]


def license_problems(usage: list[dict], allow: list[str] | None) -> list[str]:
    """Why a mixture breaks its license rules, one line per source and license (empty when it
    keeps them). Inputs: `license_usage`; the spec's accepted licenses (None accepts every known
    license). A source without a known license, or with one that is no Hub license identifier, is
    always a problem."""
    problems = []
    for use in usage:
        where = f"source {use['source']} ({use['kind']}): {use['rows']} rows"
        license = use["license"]
        if license is None or license in NOT_A_LICENSE:
            problems.append(
                f"{where} without a known license (give the source a `license:` in configs/sources.yaml, "
                "or in the `<file>.yaml` beside a dropped seed file)"
            )
        elif license not in HUB_LICENSES:
            problems.append(f"{where} licensed {license!r}, which is not a Hugging Face license identifier")
        elif allow is not None and license not in allow:
            problems.append(f"{where} licensed {license}, not in licenses.allow {sorted(allow)}")
    return problems


def card_license(usage: list[dict]) -> str | list[str]:
    """The card's `license`: the one license of every row, the sorted list when rows carry several,
    `unknown` when a row's license is not known (or the mixture is empty)."""
    licenses = sorted({use["license"] for use in usage if use["license"] is not None})
    if not licenses or any(use["license"] is None for use in usage):
        return "unknown"
    return licenses[0] if len(licenses) == 1 else licenses
