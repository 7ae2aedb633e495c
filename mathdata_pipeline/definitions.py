"""The Dagster code location: `defs` is what `dagster dev` and the CLI load."""

from __future__ import annotations

import dagster as dg

from mathdata_pipeline import automation
from mathdata_pipeline.assets import augmentation, contamination, influence, seeds, selection, solutions, synthesis
from mathdata_pipeline.resources.data_sources import DataSources
from mathdata_pipeline.resources.llm import LLMResource
from mathdata_pipeline.resources.selector import KCenterSelector
from mathdata_pipeline.resources.table_store import TableStore

ASSETS = dg.load_assets_from_modules([seeds, contamination, augmentation, synthesis, solutions, selection, influence])
RESOURCES = {"store": TableStore(), "sources": DataSources(), "llm": LLMResource(), "selector": KCenterSelector()}

defs = dg.Definitions(
    assets=ASSETS, resources=RESOURCES,
    jobs=[automation.seed_source_job, automation.scores_job, automation.mixture_job],
    schedules=[automation.weekly_scores, automation.weekly_mixtures],
    sensors=[automation.seed_files_sensor],
)
