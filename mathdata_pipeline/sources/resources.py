"""The data-sources resource: which sources file and data folder a run reads, and the size limits
for reading local files."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from mathdata_pipeline.sources.config import ProblemSourceSpec, SourcesConfig, data_dir, load_sources_config
from mathdata_pipeline.sources.readers import DEFAULT_LIMITS, InputError, ReadLimits
from mathdata_pipeline.sources.seed_files import SeedDrop, scan_seed_files, seed_drop_dir, spec_for_seed_file


class DataSources(dg.ConfigurableResource):
    """Resolves datasets named in `configs/sources.yaml` to local files or Hugging Face ids.

    Empty fields fall back, at run time, to `MATHDATA_CONFIG_DIR/sources.yaml` and
    `MATHDATA_DATA_DIR` (see `sources/config.py`).
    """

    config_path: str = Field(default="", description="sources YAML; empty = configs/sources.yaml")
    data_dir: str = Field(default="", description="local data folder; empty = $MATHDATA_DATA_DIR or ../shared/data")
    max_record_bytes: int = Field(
        default=DEFAULT_LIMITS.max_record_bytes,
        ge=1024,
        description="largest record of a local file (a JSONL line, a JSON element, a Parquet row's text), in bytes",
    )
    max_file_bytes: int = Field(
        default=DEFAULT_LIMITS.max_file_bytes,
        ge=1024,
        description="largest local file after decompression, in bytes",
    )

    def config(self) -> SourcesConfig:
        """The parsed sources configuration."""
        return load_sources_config(self.config_path or None)

    def base(self) -> Path | None:
        """The data folder local copies are looked up in (None: only hub ids and explicit paths)."""
        if self.data_dir:
            return Path(os.path.expanduser(self.data_dir))
        return data_dir()

    def limits(self) -> ReadLimits:
        """The size limits for reading local files."""
        return ReadLimits(max_record_bytes=self.max_record_bytes, max_file_bytes=self.max_file_bytes)

    def seed_drop(self) -> SeedDrop:
        """The seed folder (see `sources.seed_files.seed_drop_dir`): usable files and refused ones."""
        return scan_seed_files(seed_drop_dir(self.base()), configured=self.config().seed_sources)

    def seed_files(self) -> dict[str, Path]:
        """Seed files dropped into the watched folder that become seed sources: {name: path}."""
        return self.seed_drop().files

    def seed_source_names(self) -> list[str]:
        """Configured seed sources plus dropped seed files, sorted."""
        return sorted(set(self.config().seed_sources) | set(self.seed_files()))

    def seed_spec(self, name: str) -> ProblemSourceSpec:
        """The spec of seed source `name`: its sources.yaml entry, else its dropped file's mapping.
        Raises InputError naming the files when dropped files of that name were refused (a name
        collision) or when there is no such source."""
        configured = self.config().seed_sources
        if name in configured:
            return configured[name]
        drop = self.seed_drop()
        if name in drop.files:
            return spec_for_seed_file(drop.files[name], self.limits())
        refusals = [r.reason for r in drop.refused if r.name == name]
        if refusals:
            raise InputError(name, "; ".join(refusals))
        raise InputError(
            name,
            f"not a configured seed source ({', '.join(sorted(configured))}) "
            f"and no file for it in {seed_drop_dir(self.base())}",
        )

    def refused_seed_files(self, name: str) -> list[str]:
        """Why dropped files that would be seed source `name` are not read (e.g. a file named like
        a configured source): messages naming each file; empty when there are none."""
        return [r.reason for r in self.seed_drop().refused if r.name == name]
