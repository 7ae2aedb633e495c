"""Building an engine from a named profile in `configs/engines.yaml`."""

from __future__ import annotations

from pathlib import Path

import yaml

from mathdata_pipeline.engines.base import Engine
from mathdata_pipeline.methods.sources import config_dir

DEFAULT_PROFILE = "local-smollm2"


def load_profile(name: str, path: Path | str | None = None) -> dict:
    """The settings of profile `name` (a copy), from `path` or `<config_dir>/engines.yaml`.
    Raises KeyError listing the known profiles when `name` is not one of them."""
    path = Path(path) if path else config_dir() / "engines.yaml"
    profiles = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("profiles", {})
    if name not in profiles:
        raise KeyError(f"engine profile {name!r} not in {path}; known: {', '.join(sorted(profiles))}")
    return dict(profiles[name])


def build_engine(settings: dict) -> Engine:
    """An engine from profile settings: `backend` (local, openai, vllm) plus constructor kwargs."""
    settings = dict(settings)
    backend = settings.pop("backend", None)
    if backend == "local":
        from mathdata_pipeline.engines.local import LocalEngine

        return LocalEngine(**settings)
    if backend == "openai":
        from mathdata_pipeline.engines.openai_http import OpenAIEngine

        return OpenAIEngine(**settings)
    if backend == "vllm":
        from mathdata_pipeline.engines.local import embedded_gguf_path
        from mathdata_pipeline.engines.vllm_engine import VLLMEngine

        if settings.get("model") == "embedded":
            settings["model"] = str(embedded_gguf_path())
        return VLLMEngine(**settings)
    raise ValueError(f"unknown engine backend {backend!r}; use local, openai or vllm")
