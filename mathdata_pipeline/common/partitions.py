"""Partition definitions.

Mixtures are partitioned by spec file (`configs/mixtures/*.yaml`); synthesized questions by
shard (a backfill of more shards adds questions without touching finished ones).
Seed sources are dynamic partitions: the configured ones (`configs/sources.yaml`) are registered by
`make demo`, by the `seed_files_sensor` and by `register_seed_sources`; files dropped into the
seed folder are added by the sensor.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from mathdata_pipeline.mixtures.spec import mixture_names
from mathdata_pipeline.sources.config import load_sources_config

seed_sources = dg.DynamicPartitionsDefinition(name="seed_sources")
mixture_specs = dg.StaticPartitionsDefinition(mixture_names())
synthesis_shards = dg.StaticPartitionsDefinition([f"{i:03d}" for i in range(64)])


def register_seed_sources(instance: dg.DagsterInstance, names: Iterable[str] | None = None) -> list[str]:
    """Add seed-source partitions to `instance` (default: every configured seed source); returns
    the names that were new."""
    names = sorted(names if names is not None else load_sources_config().seed_sources)
    new = [n for n in names if not instance.has_dynamic_partition(seed_sources.name, n)]
    if new:
        instance.add_dynamic_partitions(seed_sources.name, new)
    return new
