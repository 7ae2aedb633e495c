"""The `llm` resource in real Dagster runs: a ledger lost between runs is a warning in metadata with
the counts, a ledger deleted during a run fails that run at once, naming the file."""

import dagster as dg
import pytest

from mathdata_pipeline.common.metadata import generation_metadata
from mathdata_pipeline.engines.base import Request, SamplingParams
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline_tests.engines.servers import free_port

pytestmark = pytest.mark.slow


def _requests(count: int) -> list[Request]:
    return [
        Request.chat([{"role": "user", "content": f"Say {i}."}], SamplingParams(max_tokens=4, seed=i))
        for i in range(count)
    ]


@dg.asset
def two_answers(context: dg.AssetExecutionContext, llm: LLMResource) -> dg.MaterializeResult:
    """Two short completions through the ledger `two_answers`."""
    _, stats = llm.generate(context, _requests(2), ledger_name="two_answers")
    return dg.MaterializeResult(metadata=generation_metadata(stats))


@dg.asset
def ledger_deleted_midway(context: dg.AssetExecutionContext, llm: LLMResource) -> None:
    """Fault injection: deletes its own ledger file after the first of five results."""
    with llm.stream(context, ledger_name="midway") as stream:
        for i, request in enumerate(_requests(5)):
            stream.submit(i, request)
        stream.next_result()
        llm.ledger_path("midway").unlink()
        while stream.pending:
            stream.next_result()


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    return {k: v.value for k, v in result.get_asset_materialization_events()[0].materialization.metadata.items()}


def test_a_lost_ledger_is_a_warning_with_the_counts(tmp_path):
    llm = LLMResource(ledger_dir=str(tmp_path))
    with dg.instance_for_test() as instance:
        first = _metadata(dg.materialize([two_answers], instance=instance, resources={"llm": llm}))
        assert first["ledger_rows"] == 2 and "ledger_warning" not in first
        llm.ledger_path("two_answers").unlink()
        second = _metadata(dg.materialize([two_answers], instance=instance, resources={"llm": llm}))
        assert "was missing at the start of this run" in second["ledger_warning"]
        assert "recorded 2 ledger rows" in second["ledger_warning"] and str(tmp_path) in second["ledger_warning"]
        assert second["cache_hits"] == 0 and second["ledger_rows"] == 2
        third = _metadata(dg.materialize([two_answers], instance=instance, resources={"llm": llm}))
        assert "ledger_warning" not in third and third["cache_hits"] == 2


def test_a_ledger_deleted_during_the_run_fails_it_naming_the_file(tmp_path):
    llm = LLMResource(ledger_dir=str(tmp_path))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [ledger_deleted_midway], instance=instance, resources={"llm": llm}, raise_on_error=False
        )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    message = failure.step_failure_data.error.to_string()
    assert f"ledger {tmp_path / 'midway.sqlite'} was deleted during the run" in message


def _retries(result: dg.ExecuteInProcessResult) -> int:
    return sum(1 for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY)


def test_an_unreachable_engine_is_retried_and_a_bad_profile_is_not(tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "engines.yaml").write_text(
        "profiles:\n"
        f"  ray-down: {{backend: ray, address: '127.0.0.1:{free_port()}', engine: {{backend: local}}}}\n"
        "  broken: {backend: local, n_ctx: many}\n"
    )
    monkeypatch.setenv("MATHDATA_CONFIG_DIR", str(configs))
    runs = {}
    for profile in ("ray-down", "broken"):
        llm = LLMResource(
            profile=profile, ledger_dir=str(tmp_path / "ledgers"), connection_retries=2, connection_retry_wait_s=0
        )
        runs[profile] = dg.materialize([two_answers], resources={"llm": llm}, raise_on_error=False)
    assert not runs["ray-down"].success and _retries(runs["ray-down"]) == 2  # transient: retried, then failed
    assert "cannot reach the Ray cluster" in str(runs["ray-down"].get_step_failure_events()[0].step_failure_data)
    assert not runs["broken"].success and _retries(runs["broken"]) == 0  # permanent: failed at once
    assert "n_ctx" in str(runs["broken"].get_step_failure_events()[0].step_failure_data.error)
