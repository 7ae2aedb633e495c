"""Shared fixtures: the real offline data folder, temporary storage and Dagster instances."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mathdata_pipeline.methods.sources import data_dir

if not os.environ.get("HF_HUB_OFFLINE"):  # tests never touch the hub
    os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared offline datasets (MATHDATA_DATA_DIR or ../shared/data). CI always has them,
    so their absence is a failure, not a skip."""
    root = data_dir()
    assert root is not None and (root / "gsm8k").is_dir(), (
        "the tests need the offline datasets: set MATHDATA_DATA_DIR to a folder laid out like ../shared/data "
        "(CI has it at ../shared/data beside the repository)")
    return root


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA: they run on a GPU machine and are skipped everywhere else."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
