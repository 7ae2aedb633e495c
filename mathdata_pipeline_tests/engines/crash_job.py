"""A small generating asset for the crash test: real Dagster run, real engine, real ledger.

Run as a script it materializes `crash_test_completions` into the instance at DAGSTER_HOME.
"""

import os

import dagster as dg
import pyarrow as pa

from mathdata_pipeline.common.metadata import generation_metadata, table_metadata
from mathdata_pipeline.engines.base import Completion, Request, SamplingParams, derive_seed
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.storage.resources import TableStore


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


RESOURCES = {"llm": LLMResource(progress_interval_s=1.0), "store": TableStore()}

if __name__ == "__main__":
    dg.materialize([crash_test_completions], instance=dg.DagsterInstance.get(), resources=RESOURCES)
