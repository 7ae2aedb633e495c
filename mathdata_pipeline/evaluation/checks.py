"""The blocking check `sft_model` runs before it trains: no training row overlaps an item of the
benchmarks the model will be scored on."""

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.decontamination.checks import AUDIT_PREFIX, CHECK_NAME
from mathdata_pipeline.decontamination.index import ContaminationIndex
from mathdata_pipeline.storage.resources import TableStore


def sft_overlap_check_spec() -> dg.AssetCheckSpec:
    """The check spec declared on `sft_model` (blocking: a failure stops its downstream)."""
    return dg.AssetCheckSpec(
        CHECK_NAME,
        asset="sft_model",
        blocking=True,
        additional_deps=["contamination_index"],
        description="Before training: no training row's user turns overlap an item of the benchmarks the model "
        f"will be scored on (exact text or word n-grams); matches go to {AUDIT_PREFIX}/sft_model/<spec>.",
    )


def user_turns(mixture: pa.Table) -> list[tuple[str, str]]:
    """(row_id, every user turn of the row joined by newlines) of a mixture table."""
    return [
        (row_id, "\n".join(m["content"] for m in messages if m["role"] == "user"))
        for row_id, messages in zip(mixture.column("row_id").to_pylist(), mixture.column("messages").to_pylist())
    ]


def training_overlap_check(
    store: TableStore, mixture: pa.Table, benchmarks: list[str], partition: str
) -> dg.AssetCheckResult:
    """Check the rows of `mixture` against the stored `contamination_index`, restricted to
    `benchmarks`; writes the audit table (one row per overlapping pair). Fails as well when the
    index does not cover one of the benchmarks (it would see no overlap there)."""
    index = ContaminationIndex.from_table(store.read("contamination_index"))
    uncovered = sorted(set(benchmarks) - {benchmark for benchmark, _ in index.items})
    audit = index.find_matches(user_turns(mixture))
    audit = audit.filter(pc.is_in(audit.column("benchmark"), pa.array(benchmarks, pa.string())))
    audit_path = store.write(audit, f"{AUDIT_PREFIX}/sft_model", partition)
    summary = ContaminationIndex.summarize(audit, mixture.num_rows)
    by_benchmark = summary.pop("by_benchmark", {})
    rows = sorted(set(audit.column("row_id").to_pylist()))
    problems = [f"{summary['contaminated_rows']} of {mixture.num_rows} rows overlap a benchmark"]
    if rows:
        problems.append("first rows: " + ", ".join(rows[:5]))
    if uncovered:
        problems.append(f"contamination_index has no items of {', '.join(uncovered)}: rematerialize it")
    return dg.AssetCheckResult(
        check_name=CHECK_NAME,
        asset_key="sft_model",
        passed=not rows and not uncovered,
        description="; ".join(problems),
        metadata={
            **{k: v for k, v in summary.items() if isinstance(v, (int, float))},
            "benchmarks": dg.MetadataValue.json(benchmarks),
            "by_benchmark": dg.MetadataValue.json(by_benchmark),
            "audit_path": dg.MetadataValue.path(str(audit_path)),
        },
    )
