"""Where a table lives: `<root>/<asset_key>/<partition>.parquet` (`data.parquet` when the asset is
not partitioned). One rule for the table store and for readers without it (`mathdata trace`)."""

from __future__ import annotations

from upath import UPath

from mathdata_pipeline.common.names import path_component

UNPARTITIONED = "data"


def table_path(root: UPath, asset_key: str, partition: str | None = None) -> UPath:
    """The Parquet file of (`asset_key`, `partition`) under `root`. `asset_key` is slash-separated
    (code-defined); the partition key is quoted into one path component, so no key (`..`, `a/b`,
    a legacy name with spaces) reaches outside the asset's folder."""
    name = path_component(partition) if partition is not None else UNPARTITIONED
    return root.joinpath(*asset_key.split("/"), f"{name}.parquet")
