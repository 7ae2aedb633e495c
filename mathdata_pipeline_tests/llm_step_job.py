"""One LLM step in the `gpu` pool, for the killed-run test: real definitions with the project's
executor, real engine, real ledger. Launched with the dagster CLI:

    dagster asset materialize -m mathdata_pipeline_tests.llm_step_job --select llm_step

LLM_STEP_REQUESTS (default 4) sets how many short completions the step asks for.
"""

import os

import dagster as dg
import pyarrow as pa

from mathdata_pipeline.automation import mathdata_executor
from mathdata_pipeline.engines.base import Completion, Request, SamplingParams, derive_seed
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.storage.resources import TableStore


@dg.asset(pool="gpu")
def llm_step(context: dg.AssetExecutionContext, llm: LLMResource, store: TableStore) -> dg.MaterializeResult:
    """LLM_STEP_REQUESTS short completions, one row per request."""
    count = int(os.environ.get("LLM_STEP_REQUESTS", "4"))
    requests = [
        Request.chat(
            [{"role": "user", "content": f"Count from {i} to {i + 9}."}],
            SamplingParams(temperature=0.7, top_p=0.95, max_tokens=24, seed=derive_seed("llm_step", i)),
        )
        for i in range(count)
    ]
    results, _ = llm.generate(context, requests, ledger_name="llm_step")
    table = pa.table({"text": [r.text if isinstance(r, Completion) else None for r in results]})
    store.write(table, "llm_step")
    return dg.MaterializeResult(metadata={"rows": table.num_rows})


defs = dg.Definitions(
    assets=[llm_step],
    resources={"llm": LLMResource(progress_interval_s=1.0), "store": TableStore()},
    executor=mathdata_executor,
)
