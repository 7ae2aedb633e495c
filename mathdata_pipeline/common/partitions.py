"""Partition definitions.

Mixtures are partitioned by spec file (`configs/mixtures/*.yaml`); synthesized questions by
shard (a backfill of more shards adds questions without touching finished ones).
Seed sources are dynamic partitions: the configured ones (`configs/sources.yaml`) are registered
when the code location loads (`register_configured_sources`, in the instance at DAGSTER_HOME), so
`dagster asset materialize --select seed_problems --partition gsm8k`, the UI's partition picker and
backfills know them on a fresh instance; `make demo` and the `seed_files_sensor` register them
too. Files dropped into the seed folder are added by the sensor.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

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


def register_configured_sources() -> list[str]:
    """At code-location load: add the configured seed sources as partitions of the instance at
    DAGSTER_HOME (nothing when DAGSTER_HOME is unset or not a folder). Returns the new names. A
    failure (storage busy, unreadable sources file) is logged as a warning naming the cause and
    never stops the code location from loading; the sensor and `make demo` register them later."""
    home = os.environ.get("DAGSTER_HOME")
    if not home or not Path(home).is_dir():
        return []
    try:
        with dg.DagsterInstance.get() as instance:
            return register_seed_sources(instance)
    except Exception as exc:  # any storage or config error must not break loading the definitions
        logging.getLogger(__name__).warning(f"configured seed sources not registered in {home}: {exc}")
        return []
