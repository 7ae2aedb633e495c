"""docker/dagster.yaml on a real PostgreSQL server: an asset materializes through it and its run
and materialization are read back from a fresh instance."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from mathdata_pipeline.definitions import ASSETS, RESOURCES
from mathdata_pipeline.sources.resources import DataSources
from mathdata_pipeline.storage.resources import TableStore

DOCKER = Path(__file__).resolve().parents[2] / "docker"
POSTGRES_INSTANCE_YAML = DOCKER / "dagster.yaml"


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


@pytest.mark.slow
def test_daemon_entrypoint_sizes_the_gpu_pool_on_postgres(postgres_server, tmp_path, monkeypatch):
    """The daemon image's first command (docker/entrypoint-daemon.sh) sets the `gpu` pool to
    MATHDATA_GPUS in the shared instance."""
    (pool_command,) = [
        line for line in (DOCKER / "entrypoint-daemon.sh").read_text().splitlines() if "concurrency set gpu" in line
    ]
    for name, value in postgres_server.env.items():
        monkeypatch.setenv(name, value)
    shutil.copy(POSTGRES_INSTANCE_YAML, tmp_path / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "MATHDATA_GPUS": "3",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    done = subprocess.run(["sh", "-c", pool_command], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 3
