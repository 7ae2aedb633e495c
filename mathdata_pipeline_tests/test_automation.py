"""The weekly schedules and the new-seed-file sensor, evaluated with Dagster's test contexts; a
dropped file becomes a seed source that materializes."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from mathdata_pipeline import demo
from mathdata_pipeline.automation import (
    FAMILIES,
    SPEC_TAG,
    WORKER_TAG,
    family_job_name,
    release_killed_runs_sensor,
    seed_files_sensor,
    start_tags,
    weekly_mixtures,
    worker_tags,
)
from mathdata_pipeline.cli import main
from mathdata_pipeline.common.processes import process_token
from mathdata_pipeline.definitions import ASSETS, defs
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.mixtures.spec import mixture_names
from mathdata_pipeline.qads.resources import KCenterSelector
from mathdata_pipeline.sources import seed_files
from mathdata_pipeline.sources.readers import InputError
from mathdata_pipeline.sources.resources import DataSources
from mathdata_pipeline.sources.seed_files import spec_for_seed_file
from mathdata_pipeline.storage.resources import TableStore
from mathdata_pipeline_tests.conftest import storage_with_benchmarks

REPO = Path(__file__).resolve().parents[1]


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
    assert [r.tags[SPEC_TAG] for r in requests] == mixture_names()


def test_mixture_runs_are_tagged_with_their_spec_when_they_start():
    run = dg.DagsterRun(job_name="mixture_job", tags={"dagster/partition": "openmathmix"})
    assert start_tags(run)["mathdata/spec"] == "openmathmix" and "mathdata/worker" in start_tags(run)
    other = dg.DagsterRun(job_name="scores_job", tags={"dagster/partition": "openmathmix"})
    assert "mathdata/spec" not in start_tags(other)


def test_every_asset_is_launched_by_exactly_one_stage_family_job():
    names = [spec.key.to_user_string() for spec in defs.resolve_all_asset_specs()]
    members = Counter(name for assets, _ in FAMILIES.values() for name in assets)
    assert sorted(members) == sorted(names) and set(members.values()) == {1}
    for name in names:
        job = defs.resolve_job_def(family_job_name(name))
        assert dg.AssetKey(name) in job.asset_layer.executable_asset_keys
    assert family_job_name("mixture") == "mixture_job" and family_job_name("seed_problems") == "sources_job"
    for kept in ("seed_source_job", "scores_job", "mixture_job", "evaluation_job", "comparison_job"):
        assert defs.resolve_job_def(kept).name == kept


@pytest.mark.slow
def test_named_demo_runs_and_the_readme_cli_path_on_a_fresh_instance(tmp_path, data_root, monkeypatch):
    """The demo's runs belong to stage-family jobs and carry their partition; on a fresh
    DAGSTER_HOME, `dagster asset materialize --select seed_problems --partition gsm8k` works
    (the configured sources are partitions as soon as the code location loads), and the check
    result carries its partition and names the source."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MATHDATA_STORAGE", str(tmp_path / "storage"))
    with dg.DagsterInstance.get() as instance:
        assert not instance.get_dynamic_partitions("seed_sources")
        for name in ("eval_benchmarks", "contamination_index"):
            result = demo.launch(instance, dg.AssetKey(name), None, {})
            run = instance.get_run_by_id(result.run_id)
            assert result.success and run.job_name == "sources_job" and run.tags[demo.DEMO_TAG] == "true"
    command = [
        str(Path(sys.executable).parent / "dagster"),
        "asset",
        "materialize",
        "-m",
        "mathdata_pipeline.definitions",
    ]
    done = subprocess.run(
        [*command, "--select", "seed_problems", "--partition", "gsm8k"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with dg.DagsterInstance.get() as instance:
        assert {"gsm8k", "math"} <= set(instance.get_dynamic_partitions("seed_sources"))
        check = dg.AssetCheckKey(dg.AssetKey("seed_problems"), "no_benchmark_overlap")
        (record,) = instance.event_log_storage.get_asset_check_execution_history(check, limit=1)
        evaluation = record.event.asset_check_evaluation
        assert record.partition == "gsm8k" and evaluation.description.startswith("seed_problems[gsm8k]: ")
        again = demo.launch(instance, dg.AssetKey("seed_problems"), "gsm8k", {})
        run = instance.get_run_by_id(again.run_id)
        assert again.success and run.tags["mathdata/source"] == "gsm8k" and run.tags["dagster/partition"] == "gsm8k"


def test_dropped_seed_file_mapping_is_detected_and_bad_files_are_named(drop):
    spec = spec_for_seed_file(drop / "seeds" / "Olympiad-Extra.jsonl")
    assert (spec.question, spec.solution, spec.answer.style) == ("problem", "solution", "boxed")
    with pytest.raises(InputError, match=r"broken\.jsonl.*no question field"):
        spec_for_seed_file(drop / "seeds" / "broken.jsonl")


def test_sensor_registers_sources_and_requests_a_run_per_new_file(
    drop, tmp_path, data_root, benchmark_storage, monkeypatch
):
    monkeypatch.setenv("MATHDATA_SEED_DROP_DIR", str(drop / "seeds"))
    sources = DataSources(data_dir=str(data_root))
    with dg.instance_for_test() as instance:
        result = seed_files_sensor(dg.build_sensor_context(instance=instance, resources={"sources": sources}))
        (added,) = result.dynamic_partitions_requests
        assert sorted(added.partition_keys) == ["gsm8k", "math", "olympiad_extra"]
        (run,) = result.run_requests
        assert run.partition_key == "olympiad_extra" and run.tags["mathdata/trigger"] == "seed_file"
        assert run.tags["mathdata/source"] == "olympiad_extra"
        instance.add_dynamic_partitions("seed_sources", list(added.partition_keys))
        again = seed_files_sensor(
            dg.build_sensor_context(instance=instance, resources={"sources": sources}, cursor=result.cursor)
        )
        assert not again.run_requests and not again.dynamic_partitions_requests
        # the benchmarks and their index: a copy of the session's (the new source's check reads the index)
        store = TableStore(root=str(storage_with_benchmarks(benchmark_storage, tmp_path / "storage")))
        resources = {"store": store, "sources": sources, "llm": LLMResource(), "selector": KCenterSelector()}
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


def _ledger_rows(path: Path) -> int:
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    except sqlite3.OperationalError:  # no file or no table yet
        return 0


def _wait_for(condition, what: str, process: subprocess.Popen, timeout_s: float = 400) -> None:
    """Poll `condition` until it holds; fail naming `what` if `process` ends first or time runs out
    (generous: llama.cpp slows sharply when other jobs share the 2 cores)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_killed_llm_run_frees_the_gpu_pool_for_the_next_llm_step(tmp_path):
    """Two `dagster asset materialize` runs of an LLM step in the `gpu` pool (limit 1): the second
    waits for the slot; the first is killed with SIGKILL mid-generation; the second must start and
    finish. No daemon runs: the runs themselves must notice."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MATHDATA_STORAGE": str(tmp_path / "storage"),
        "MATHDATA_LEDGER_DIR": str(tmp_path / "ledger"),
        "MATHDATA_RELEASE_INTERVAL_S": "2",
    }
    command = [
        str(Path(sys.executable).parent / "dagster"),
        "asset",
        "materialize",
        "-m",
        "mathdata_pipeline_tests.llm_step_job",
    ]

    def launch(requests: int, log: str) -> subprocess.Popen:
        with open(tmp_path / log, "wb") as out:
            return subprocess.Popen(
                [*command, "--select", "llm_step"],
                cwd=REPO,
                env={**env, "LLM_STEP_REQUESTS": str(requests)},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    first = launch(400, "first.log")
    second = None
    try:
        _wait_for(lambda: _ledger_rows(tmp_path / "ledger" / "llm_step.sqlite") >= 1, "LLM request finished", first)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            (holder,) = instance.get_runs()
            second = launch(2, "second.log")
            waiting = lambda: any(  # noqa: E731
                step.run_id != holder.run_id
                for step in instance.event_log_storage.get_concurrency_info("gpu").pending_steps
            )
            _wait_for(waiting, "second run waiting for the gpu slot", second)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
            assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
            runs = {run.run_id: run for run in instance.get_runs()}
            assert runs[holder.run_id].status == dg.DagsterRunStatus.FAILURE
            assert [r.status for r in runs.values() if r.run_id != holder.run_id] == [dg.DagsterRunStatus.SUCCESS]
            assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_the_sensor_and_release_runs_free_only_what_dead_runs_hold(tmp_path, monkeypatch, capsys):
    """Runs as the instance records them: one whose worker process is gone (it held the `gpu`
    slot), one whose worker is alive, one that cannot be checked (no worker tag)."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead_token = process_token(sleeper.pid)
    sleeper.kill()
    sleeper.wait()
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        started = dg.DagsterRunStatus.STARTED
        dead = create_run_for_test(instance, job_name="llm", status=started, tags={WORKER_TAG: dead_token})
        alive = create_run_for_test(instance, job_name="llm", status=started, tags=worker_tags())
        unknown = create_run_for_test(instance, job_name="llm", status=started)
        storage = instance.event_log_storage
        storage.set_concurrency_slots("gpu", 1)
        assert storage.claim_concurrency_slot("gpu", dead.run_id, "llm_step").is_claimed
        assert not storage.claim_concurrency_slot("gpu", alive.run_id, "llm_step").is_claimed

        tick = release_killed_runs_sensor(dg.build_sensor_context(instance=instance))
        assert tick.skip_message == f"released killed runs: {dead.run_id}"
        status = lambda run: instance.get_run_by_id(run.run_id).status  # noqa: E731
        assert (status(dead), status(alive), status(unknown)) == (dg.DagsterRunStatus.FAILURE, started, started)
        gpu = storage.get_concurrency_info("gpu")  # the freed slot goes to the live run's waiting step
        assert not gpu.claimed_slots and [(p.run_id, bool(p.assigned_timestamp)) for p in gpu.pending_steps] == [
            (alive.run_id, True)
        ]

        assert main(["release-runs"]) == 0 and capsys.readouterr().out == "no killed runs\n"
        assert main(["release-runs", "--run", unknown.run_id]) == 0
        assert status(unknown) == dg.DagsterRunStatus.FAILURE and status(alive) == started
        assert main(["release-runs", "--run", "no-such-run"]) == 2
        assert "no run 'no-such-run'" in capsys.readouterr().err
