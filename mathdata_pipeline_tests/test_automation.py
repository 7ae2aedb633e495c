"""The weekly schedules and the new-seed-file sensor, evaluated with Dagster's test contexts; a
dropped file becomes a seed source that materializes."""

from __future__ import annotations

import datetime
import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest

from mathdata_pipeline.automation import seed_files_sensor, weekly_mixtures
from mathdata_pipeline.definitions import ASSETS, defs
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.mixtures.spec import mixture_names
from mathdata_pipeline.qads.resources import KCenterSelector
from mathdata_pipeline.sources import seed_files
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


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A sources file with one configured seed source `tiny` and one benchmark, and an empty seed
    folder watched by the sensor."""
    rows = [{"question": "What is 2 + 3?", "answer": "5"}, {"question": "What is 4 * 4?", "answer": "16"}]
    _write_jsonl(tmp_path / "tiny_seed.jsonl", rows)
    _write_jsonl(tmp_path / "bench.jsonl", [{"question": "Name a prime above 100.", "answer": "101"}])
    entry = {"question": "question", "answer": {"style": "field", "field": "answer"}}
    config = {
        "seed_sources": {"tiny": {"path": str(tmp_path / "tiny_seed.jsonl"), **entry}},
        "benchmarks": {"bench": {"path": str(tmp_path / "bench.jsonl"), **entry}},
    }
    (tmp_path / "sources.yaml").write_text(json.dumps(config), encoding="utf-8")
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    monkeypatch.setenv("MATHDATA_SEED_DROP_DIR", str(seeds))
    return SimpleNamespace(
        seeds=seeds,
        root=tmp_path,
        sources=DataSources(config_path=str(tmp_path / "sources.yaml"), data_dir=str(tmp_path)),
    )


def test_sensor_names_refused_files_and_rereads_a_failed_file_only_when_it_changes(tiny, monkeypatch):
    seed = {"question": "What is 1 + 1?", "answer": "2"}
    for name in ("My-File.jsonl", "my_file.jsonl", "tiny.jsonl", "ü.jsonl"):
        _write_jsonl(tiny.seeds / name, [seed])
    _write_jsonl(tiny.seeds / "broken.jsonl", [{"text": "no question field here"}])
    reads = Counter()

    def counting_first_record(path, *args, **kwargs):  # instrumentation: counts reads, then reads for real
        reads[Path(path).name] += 1
        return real_first_record(path, *args, **kwargs)

    real_first_record = seed_files.first_record
    monkeypatch.setattr(seed_files, "first_record", counting_first_record)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("seed_sources", ["tiny"])
        tick = lambda cursor=None: seed_files_sensor(  # noqa: E731
            dg.build_sensor_context(instance=instance, resources={"sources": tiny.sources}, cursor=cursor)
        )
        first = tick()
        assert not first.run_requests and not first.dynamic_partitions_requests
        message = first.skip_reason.skip_message
        for name in ("My-File.jsonl", "my_file.jsonl", "tiny.jsonl", "ü.jsonl", "broken.jsonl"):
            assert name in message, f"{name} vanished without a word"
        assert "configured in sources.yaml" in message and "also becomes seed source 'my_file'" in message
        assert reads == {"broken.jsonl": 1}
        second = tick(first.cursor)
        assert reads == {"broken.jsonl": 1}, "a file that failed detection was read again unchanged"
        assert "broken.jsonl: line 1: no question field" in second.skip_reason.skip_message
        _write_jsonl(tiny.seeds / "broken.jsonl", [seed, seed])
        third = tick(second.cursor)
        assert reads == {"broken.jsonl": 2} and [r.partition_key for r in third.run_requests] == ["broken"]


def test_seed_assets_name_refused_files_in_metadata_or_fail_naming_them(tiny):
    _write_jsonl(tiny.seeds / "tiny.jsonl", [{"question": "Dropped, not configured?", "answer": "1"}])
    for name in ("My-File.jsonl", "my_file.jsonl"):
        _write_jsonl(tiny.seeds / name, [{"question": f"From {name}?", "answer": "1"}])
    store = TableStore(root=str(tiny.root / "storage"))
    resources = {"store": store, "sources": tiny.sources, "llm": LLMResource(), "selector": KCenterSelector()}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("seed_sources", ["tiny", "my_file"])
        dg.materialize(
            ASSETS, selection=["eval_benchmarks", "contamination_index"], instance=instance, resources=resources
        )
        done = dg.materialize(
            ASSETS, selection=["seed_problems"], partition_key="tiny", instance=instance, resources=resources
        )
        metadata = done.get_asset_materialization_events()[0].materialization.metadata
        (refused,) = metadata["refused_seed_files"].value
        assert str(tiny.seeds / "tiny.jsonl") in refused and "configured in sources.yaml" in refused
        assert store.read("seed_problems", "tiny").column("question").to_pylist()[0] == "What is 2 + 3?"
        failed = dg.materialize(
            ASSETS,
            selection=["seed_problems"],
            partition_key="my_file",
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        assert not failed.success
        error = failed.get_step_failure_events()[0].step_failure_data.error.to_string()
        assert "My-File.jsonl" in error and "my_file.jsonl" in error and "rename all but one" in error
