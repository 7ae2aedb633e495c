"""Partition definitions, built from configuration when the definitions load."""

from __future__ import annotations

import dagster as dg

from mathdata_pipeline.methods.sources import load_sources_config

seed_sources = dg.StaticPartitionsDefinition(sorted(load_sources_config().seed_sources))
