"""The data-sources resource: which sources file and data folder a run reads."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from mathdata_pipeline.sources.config import ProblemSourceSpec, SourcesConfig, data_dir, load_sources_config
from mathdata_pipeline.sources.readers import InputError
from mathdata_pipeline.sources.seed_files import discover_seed_files, seed_drop_dir, spec_for_seed_file


class DataSources(dg.ConfigurableResource):
    """Resolves datasets named in `configs/sources.yaml` to local files or Hugging Face ids.

    Empty fields fall back, at run time, to `MATHDATA_CONFIG_DIR/sources.yaml` and
    `MATHDATA_DATA_DIR` (see `sources/config.py`).
    """

    config_path: str = Field(default="", description="sources YAML; empty = configs/sources.yaml")
    data_dir: str = Field(default="", description="local data folder; empty = $MATHDATA_DATA_DIR or ../shared/data")

    def config(self) -> SourcesConfig:
        """The parsed sources configuration."""
        return load_sources_config(self.config_path or None)

    def base(self) -> Path | None:
        """The data folder local copies are looked up in (None: only hub ids and explicit paths)."""
        if self.data_dir:
            return Path(os.path.expanduser(self.data_dir))
        return data_dir()

    def seed_files(self) -> dict[str, Path]:
        """Seed files dropped into the watched folder (see `sources.seed_files.seed_drop_dir`)."""
        return discover_seed_files(seed_drop_dir(self.base()))

    def seed_source_names(self) -> list[str]:
        """Configured seed sources plus dropped seed files, sorted."""
        return sorted(set(self.config().seed_sources) | set(self.seed_files()))

    def seed_spec(self, name: str) -> ProblemSourceSpec:
        """The spec of seed source `name`: its sources.yaml entry, else its dropped file's mapping."""
        configured = self.config().seed_sources
        if name in configured:
            return configured[name]
        files = self.seed_files()
        if name not in files:
            raise InputError(
                name,
                f"not a configured seed source ({', '.join(sorted(configured))}) "
                f"and no file for it in {seed_drop_dir(self.base())}",
            )
        return spec_for_seed_file(files[name])
