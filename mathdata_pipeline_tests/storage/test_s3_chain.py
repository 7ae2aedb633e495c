"""A demo-sized chain on object storage (moto's S3 server on 127.0.0.1): real Dagster runs write a
source, a downstream asset and a mixture with its export to `s3://…`, and the mixture loads with
`datasets` straight from there."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from upath import UPath

from mathdata_pipeline.definitions import ASSETS, RESOURCES
from mathdata_pipeline.mixtures.publish import export_parts
from mathdata_pipeline.sources.resources import DataSources
from mathdata_pipeline.storage.resources import TableStore
from mathdata_pipeline_tests.mixtures.conftest import SPEC, materialize_mixture, write_upstream_tables

pytestmark = pytest.mark.slow


def test_chain_and_mixture_export_on_s3(s3_storage, s3_server, data_root, tmp_path, monkeypatch):
    store = TableStore(root=s3_storage)
    resources = {**RESOURCES, "store": store, "sources": DataSources(data_dir=str(data_root))}
    chain = dg.materialize(ASSETS, selection=["eval_benchmarks", "contamination_index"], resources=resources)
    assert chain.success
    benchmarks = store.read("eval_benchmarks", columns=["benchmark"])
    assert benchmarks.num_rows > 12000 and store.read("contamination_index").num_rows > 0

    write_upstream_tables(store, data_root)  # the rest of what `mixture` reads, without a model
    result = materialize_mixture(store)
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    (materialization,) = result.asset_materializations_for_node("mixture")
    export = store.folder_url(*export_parts(SPEC))
    assert export.startswith(f"{s3_storage}/mixture/{SPEC}_export/v-")
    assert materialization.metadata["export_manifest"].value == f"{export}/manifest.json"
    manifest = json.loads((UPath(export) / "manifest.json").read_text())
    assert manifest["rows"] == 12 and all(check["passed"] for check in manifest["checks"].values())

    import datasets

    # datasets' offline mode (HF_HUB_OFFLINE, set for every test) refuses every remote URL, s3:// too;
    # the hub itself is still never reached: the parquet builder is packaged with datasets
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    options = {"client_kwargs": {"endpoint_url": s3_server.url}}
    table = datasets.load_dataset(
        "parquet",
        data_files=f"{s3_storage}/mixture/{SPEC}.parquet",
        storage_options=options,
        split="train",
        cache_dir=str(tmp_path / "hf_cache"),
    )
    assert table.num_rows == 12 and table[0]["messages"][-1]["role"] == "assistant"
    exported = datasets.load_dataset(
        "json",
        data_files=f"{export}/mixture.jsonl",
        storage_options=options,
        split="train",
        cache_dir=str(tmp_path / "hf_cache"),
    )
    assert sorted(exported["row_id"]) == sorted(table["row_id"])


def test_trace_and_publish_read_object_storage(s3_storage, data_root, capsys):
    """`mathdata trace` and `mathdata publish --dry-run` with an `s3://` storage root: the row's
    history and the export come from the object store, nothing from a local folder."""
    from mathdata_pipeline.cli import main

    store = TableStore(root=s3_storage)
    write_upstream_tables(store, data_root)
    assert materialize_mixture(store).success
    row_id = store.read("mixture", partition=SPEC, columns=["row_id"]).column("row_id")[0].as_py()

    assert main(["trace", row_id, "--storage", s3_storage, "--json"]) == 0
    history = json.loads(capsys.readouterr().out)
    assert history["row"]["row_id"] == row_id and history["selection"] is not None

    assert main(["publish", SPEC, "--repo", "team/demo-mix", "--dry-run", "--storage", s3_storage]) == 0
    described = capsys.readouterr().out
    assert "mixture.jsonl" in described and "README.md" in described
