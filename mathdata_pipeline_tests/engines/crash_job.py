"""Small generating assets for the crash tests: real Dagster runs, real engine, real ledger.

Run as a script it materializes the asset named by CRASH_TEST_ASSET (default
`crash_test_completions`) into the instance at DAGSTER_HOME.
"""

import os

import dagster as dg
import pyarrow as pa

from mathdata_pipeline.common.metadata import generation_metadata, table_metadata
from mathdata_pipeline.common.samples import SAMPLE_SCHEMA, SampleSink
from mathdata_pipeline.common.templates import get_template
from mathdata_pipeline.dart.dars import DarsConfig
from mathdata_pipeline.dart.sampling import Problem, Solver, solve, with_targets
from mathdata_pipeline.engines.base import Completion, Request, SamplingParams, derive_seed
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.storage.resources import TableStore

PROBLEMS = [Problem(f"p{i}", f"What is {i} + {i + 1}?", str(2 * i + 1)) for i in range(4)]


@dg.asset
def crash_test_completions(
    context: dg.AssetExecutionContext, llm: LLMResource, store: TableStore
) -> dg.MaterializeResult:
    """CRASH_TEST_REQUESTS short completions, one row per request."""
    count = int(os.environ.get("CRASH_TEST_REQUESTS", "12"))
    requests = [
        Request.chat(
            [{"role": "user", "content": f"Count from {i} to {i + 9}."}],
            SamplingParams(temperature=0.7, top_p=0.95, max_tokens=32, seed=derive_seed("crash", i)),
        )
        for i in range(count)
    ]
    row_ids = [f"row-{i}" for i in range(count)]
    results, stats = llm.generate(context, requests, ledger_name="crash_test_completions", row_ids=row_ids)
    table = pa.table({"row_id": row_ids, "text": [r.text if isinstance(r, Completion) else None for r in results]})
    path = store.write(table, "crash_test_completions")
    return dg.MaterializeResult(metadata={**table_metadata(table, path), **generation_metadata(stats)})


@dg.asset
def crash_test_dars(context: dg.AssetExecutionContext, llm: LLMResource, store: TableStore) -> dg.MaterializeResult:
    """DARS (uniform, k_u = 2, n_max = 5) over four small problems with the streaming controller,
    grading beside generation; the kept samples in one table."""
    solver = Solver(get_template("chat"), SamplingParams(temperature=1.0, top_p=0.95, max_tokens=24), "crash", "m")
    folder = store.local_dir("_parts", "crash_test_dars", purpose="crash test")
    with SampleSink(folder, SAMPLE_SCHEMA, len(PROBLEMS)) as sink:
        with llm.stream(context, ledger_name="crash_test_dars") as stream:
            planner, report = solve(PROBLEMS, 2, DarsConfig("uniform", k_u=2, n_max=5), solver, stream, sink=sink)
        state = planner.state([p.problem_id for p in PROBLEMS])
        sink.write(store.path_for("crash_test_dars"), transform=with_targets(state))
    return dg.MaterializeResult(
        metadata={
            **generation_metadata(stream.stats),
            "verdicts_graded": report.graded,
            "verdicts_reused": report.verdicts_reused,
            "kept": report.kept,
        }
    )


RESOURCES = {"llm": LLMResource(progress_interval_s=1.0), "store": TableStore()}
ASSETS = {"crash_test_completions": crash_test_completions, "crash_test_dars": crash_test_dars}

if __name__ == "__main__":
    asset = ASSETS[os.environ.get("CRASH_TEST_ASSET", "crash_test_completions")]
    dg.materialize([asset], instance=dg.DagsterInstance.get(), resources=RESOURCES)
