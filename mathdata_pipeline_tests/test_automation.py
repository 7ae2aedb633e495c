"""The weekly schedules and the new-seed-file sensor, evaluated with Dagster's test contexts; a
dropped file becomes a seed source that materializes."""

from __future__ import annotations

import datetime
import json

import dagster as dg
import pytest

from mathdata_pipeline.automation import seed_files_sensor, weekly_mixtures
from mathdata_pipeline.definitions import ASSETS, defs
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.mixtures.spec import mixture_names
from mathdata_pipeline.qads.resources import KCenterSelector
from mathdata_pipeline.sources.readers import InputError
from mathdata_pipeline.sources.resources import DataSources
from mathdata_pipeline.sources.seed_files import spec_for_seed_file
from mathdata_pipeline.storage.resources import TableStore


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def drop(tmp_path):
    folder = tmp_path / "seeds"
    folder.mkdir()
    _write_jsonl(
        folder / "Olympiad-Extra.jsonl",
        [
            {"problem": "Find x if 2x + 3 = 11.", "solution": "2x = 8 so x = \\boxed{4}."},
            {"problem": "What is 7 squared?", "solution": "7*7 = \\boxed{49}."},
        ],
    )
    _write_jsonl(folder / "broken.jsonl", [{"text": "no question field here"}])
    return tmp_path


def test_weekly_mixture_schedule_requests_every_spec_once_per_week():
    schedule = defs.get_schedule_def("weekly_mixtures")
    assert schedule.cron_schedule == "0 4 * * 1" and defs.get_schedule_def("weekly_scores").cron_schedule == "0 2 * * 1"
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime.datetime(2026, 11, 23, 4, 0, tzinfo=datetime.UTC)
    )
    requests = list(weekly_mixtures(context))
    assert [r.partition_key for r in requests] == mixture_names() and "openmathmix" in mixture_names()
    assert all(r.run_key.endswith(":2026-11-23") for r in requests)


def test_dropped_seed_file_mapping_is_detected_and_bad_files_are_named(drop):
    spec = spec_for_seed_file(drop / "seeds" / "Olympiad-Extra.jsonl")
    assert (spec.question, spec.solution, spec.answer.style) == ("problem", "solution", "boxed")
    with pytest.raises(InputError, match=r"broken\.jsonl.*no question field"):
        spec_for_seed_file(drop / "seeds" / "broken.jsonl")


def test_sensor_registers_sources_and_requests_a_run_per_new_file(drop, tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("MATHDATA_SEED_DROP_DIR", str(drop / "seeds"))
    sources = DataSources(data_dir=str(data_root))
    with dg.instance_for_test() as instance:
        result = seed_files_sensor(dg.build_sensor_context(instance=instance, resources={"sources": sources}))
        (added,) = result.dynamic_partitions_requests
        assert sorted(added.partition_keys) == ["gsm8k", "math", "olympiad_extra"]
        (run,) = result.run_requests
        assert run.partition_key == "olympiad_extra" and run.tags["mathdata/trigger"] == "seed_file"
        instance.add_dynamic_partitions("seed_sources", list(added.partition_keys))
        again = seed_files_sensor(
            dg.build_sensor_context(instance=instance, resources={"sources": sources}, cursor=result.cursor)
        )
        assert not again.run_requests and not again.dynamic_partitions_requests
        store = TableStore(root=str(tmp_path / "storage"))
        resources = {"store": store, "sources": sources, "llm": LLMResource(), "selector": KCenterSelector()}
        dg.materialize(
            ASSETS, selection=["eval_benchmarks", "contamination_index"], instance=instance, resources=resources
        )
        done = dg.materialize(
            ASSETS, selection=["seed_problems"], partition_key="olympiad_extra", instance=instance, resources=resources
        )
        table = store.read("seed_problems", "olympiad_extra")
        assert table.column("reference_answer").to_pylist() == ["4", "49"]
        assert done.get_asset_check_evaluations()[0].passed
