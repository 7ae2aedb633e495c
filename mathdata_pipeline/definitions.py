"""The Dagster code location: `defs` is what `dagster dev` and the CLI load. Loading it registers
the configured seed sources as partitions of the instance at DAGSTER_HOME (see
`common.partitions.register_configured_sources`)."""

from __future__ import annotations

import dagster as dg

from mathdata_pipeline import automation
from mathdata_pipeline.common.partitions import register_configured_sources
from mathdata_pipeline.curation import assets as curation_assets
from mathdata_pipeline.dart import assets as dart_assets
from mathdata_pipeline.decontamination import assets as decontamination_assets
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.evaluation import assets as evaluation_assets
from mathdata_pipeline.influence import assets as influence_assets
from mathdata_pipeline.mixtures import assets as mixture_assets
from mathdata_pipeline.mugglemath import assets as mugglemath_assets
from mathdata_pipeline.qads import assets as qads_assets
from mathdata_pipeline.qads.resources import KCenterSelector
from mathdata_pipeline.scalequest import assets as scalequest_assets
from mathdata_pipeline.sources import assets as source_assets
from mathdata_pipeline.sources.resources import DataSources
from mathdata_pipeline.storage.resources import TableStore

ASSETS = dg.load_assets_from_modules(
    [
        source_assets,
        decontamination_assets,
        mugglemath_assets,
        scalequest_assets,
        curation_assets,
        dart_assets,
        qads_assets,
        influence_assets,
        mixture_assets,
        evaluation_assets,
    ]
)
RESOURCES = {"store": TableStore(), "sources": DataSources(), "llm": LLMResource(), "selector": KCenterSelector()}

defs = dg.Definitions(
    assets=ASSETS,
    resources=RESOURCES,
    jobs=automation.JOBS,
    schedules=[automation.weekly_scores, automation.weekly_mixtures],
    sensors=[automation.seed_files_sensor, automation.release_killed_runs_sensor, *evaluation_assets.SENSORS],
    executor=automation.mathdata_executor,
)

register_configured_sources()
