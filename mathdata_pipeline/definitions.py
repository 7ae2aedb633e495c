"""The Dagster code location: `defs` is what `dagster dev` and the CLI load."""

from __future__ import annotations

import dagster as dg

from mathdata_pipeline.assets import augmentation, contamination, seeds, solutions
from mathdata_pipeline.resources.data_sources import DataSources
from mathdata_pipeline.resources.llm import LLMResource
from mathdata_pipeline.resources.table_store import TableStore

ASSETS = dg.load_assets_from_modules([seeds, contamination, augmentation, solutions])
RESOURCES = {"store": TableStore(), "sources": DataSources(), "llm": LLMResource()}

defs = dg.Definitions(assets=ASSETS, resources=RESOURCES)
