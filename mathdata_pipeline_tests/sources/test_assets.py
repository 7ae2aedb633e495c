"""The foundation assets materialized for real: temporary instance and storage, whole files."""

from __future__ import annotations

import json
from types import SimpleNamespace

import dagster as dg
import pytest

from mathdata_pipeline.common.partitions import register_seed_sources
from mathdata_pipeline.definitions import ASSETS
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.qads.resources import KCenterSelector
from mathdata_pipeline.sources.resources import DataSources
from mathdata_pipeline.storage.resources import TableStore


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, data_root):
    """Materialize eval_benchmarks, contamination_index, general_pool and both seed partitions once."""
    store = TableStore(root=str(tmp_path_factory.mktemp("storage")))
    resources = {
        "store": store,
        "sources": DataSources(data_dir=str(data_root)),
        "llm": LLMResource(),
        "selector": KCenterSelector(),
    }
    with dg.instance_for_test() as instance:
        register_seed_sources(instance)
        run = lambda selection, partition=None: dg.materialize(  # noqa: E731
            ASSETS, selection=selection, partition_key=partition, instance=instance, resources=resources
        )
        results = {"base": run(["eval_benchmarks", "contamination_index", "general_pool"])}
        for source in ("gsm8k", "math"):
            results[source] = run(["seed_problems"], source)
        yield SimpleNamespace(store=store, instance=instance, results=results, resources=resources)


def _metadata(result, key: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)]
    return event.materialization.metadata


@pytest.mark.parametrize(
    "key, run",
    [
        ("eval_benchmarks", "base"),
        ("contamination_index", "base"),
        ("general_pool", "base"),
        ("seed_problems", "gsm8k"),
        ("seed_problems", "math"),
    ],
)
def test_every_table_reports_rows_schema_preview_and_stats(pipeline, key, run):
    metadata = _metadata(pipeline.results[run], key)
    for name in ("dagster/row_count", "dagster/column_schema", "preview", "column_stats", "path"):
        assert name in metadata, name
    assert metadata["dagster/row_count"].value > 0
    assert metadata["preview"].value.startswith("| ")


def test_seed_partitions_hold_whole_files(pipeline):
    assert pipeline.store.read("seed_problems", "gsm8k").num_rows == 7473
    math = _metadata(pipeline.results["math"], "seed_problems")
    assert math["rows_read"].value == 7500 and math["dropped_duplicate_question"].value == 1
    assert pipeline.store.read_all("seed_problems").num_rows == 7473 + 7499


def test_eval_benchmarks_has_all_eight(pipeline):
    table = pipeline.store.read("eval_benchmarks", columns=["benchmark"])
    counts = {b: table.column("benchmark").to_pylist().count(b) for b in set(table.column("benchmark").to_pylist())}
    assert set(counts) == {
        "gsm8k_test",
        "math_test",
        "math500",
        "collegemath",
        "deepmind_mathematics",
        "olympiadbench",
        "theoremqa",
        "mmlu",
    }
    assert counts["math_test"] == 5000 and counts["gsm8k_test"] == 1319


def test_seed_overlap_is_reported_with_an_audit_table(pipeline):
    (check,) = pipeline.results["math"].get_asset_check_evaluations()
    assert check.check_name == "no_benchmark_overlap" and check.severity == dg.AssetCheckSeverity.WARN
    assert check.partition == "math" and check.description.startswith("seed_problems[math]: ")
    contaminated = check.metadata["contaminated_rows"].value
    assert check.metadata["audit_path"].value.endswith("contamination_audit/seed_problems/math.parquet")
    audit = pipeline.store.read("contamination_audit/seed_problems", "math")
    assert len(set(audit.column("row_id").to_pylist())) == contaminated
    assert check.passed == (contaminated == 0)
    if contaminated:
        assert set(audit.column("row_id").to_pylist()) <= set(
            pipeline.store.read("seed_problems", "math").column("problem_id").to_pylist()
        )


def test_bad_input_fails_naming_file_line_field_and_keeps_previous_table(pipeline, tmp_path):
    bad = tmp_path / "gsm8k_bad.jsonl"
    bad.write_text(
        json.dumps({"question": "fine?", "answer": "#### 1"}) + "\n" + json.dumps({"answer": "#### 2"}) + "\n"
    )
    config = tmp_path / "sources.yaml"
    config.write_text(f"""
seed_sources:
  gsm8k:
    path: {bad}
    question: question
    answer: {{style: gsm8k, field: answer}}
""")
    resources = {**pipeline.resources, "sources": DataSources(config_path=str(config))}
    result = dg.materialize(
        ASSETS,
        selection=["seed_problems"],
        partition_key="gsm8k",
        instance=pipeline.instance,
        resources=resources,
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    message = failure.step_failure_data.error.to_string()  # the cause chain, as the UI shows it
    assert str(bad) in message and "line 2" in message and "field 'question'" in message
    assert pipeline.store.read("seed_problems", "gsm8k").num_rows == 7473
    latest = pipeline.instance.get_latest_materialization_event(dg.AssetKey("seed_problems"))
    assert latest is not None


def test_seed_problems_without_a_contamination_index_fails_before_writing(pipeline, tmp_path):
    """The overlap check reads the stored contamination_index first, so on a storage folder without
    one the step fails naming it and leaves no seed table behind."""
    store = TableStore(root=str(tmp_path / "empty-storage"))
    result = dg.materialize(
        ASSETS,
        selection=["seed_problems"],
        partition_key="gsm8k",
        instance=pipeline.instance,
        resources={**pipeline.resources, "store": store},
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "contamination_index" in failure.step_failure_data.error.to_string()
    assert not store.exists("seed_problems", "gsm8k")
