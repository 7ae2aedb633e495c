"""Where the repository and its configuration folder are."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def config_dir() -> Path:
    """The configuration folder: `MATHDATA_CONFIG_DIR`, else the repository's `configs/`."""
    return Path(os.environ.get("MATHDATA_CONFIG_DIR") or REPO_ROOT / "configs")
