"""docker/dagster.yaml on a real PostgreSQL server: an asset materializes through it and its run
and materialization are read back from a fresh instance."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from mathdata_pipeline.definitions import ASSETS, RESOURCES
from mathdata_pipeline.sources.resources import DataSources
from mathdata_pipeline.storage.resources import TableStore

POSTGRES_INSTANCE_YAML = Path(__file__).resolve().parents[2] / "docker" / "dagster.yaml"


@pytest.mark.slow
def test_asset_run_is_stored_in_postgres(postgres_server, data_root, tmp_path, monkeypatch):
    for name, value in postgres_server.env.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(POSTGRES_INSTANCE_YAML, home / "dagster.yaml")
    resources = {
        **RESOURCES,
        "store": TableStore(root=str(tmp_path / "storage")),
        "sources": DataSources(data_dir=str(data_root)),
    }

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        result = dg.materialize(ASSETS, selection=["general_pool"], instance=instance, resources=resources)
        assert result.success

    with dg.DagsterInstance.from_config(str(home)) as reopened:
        run = reopened.get_run_by_id(result.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        event = reopened.get_latest_materialization_event(dg.AssetKey("general_pool"))
        assert event is not None and event.run_id == result.run_id
        assert event.asset_materialization.metadata["dagster/row_count"].value > 0
