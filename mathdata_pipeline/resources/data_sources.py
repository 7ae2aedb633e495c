"""The data-sources resource: which sources file and data folder a run reads."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from mathdata_pipeline.methods.sources import SourcesConfig, data_dir, load_sources_config


class DataSources(dg.ConfigurableResource):
    """Resolves datasets named in `configs/sources.yaml` to local files or Hugging Face ids.

    Empty fields fall back, at run time, to `MATHDATA_CONFIG_DIR/sources.yaml` and
    `MATHDATA_DATA_DIR` (see `methods/sources.py`).
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
