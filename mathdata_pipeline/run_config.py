"""Checking a run-config file (`ops: {asset: {config: …}}`, `resources: …`) before anything runs:
Dagster's schema (names, types, the allowed values of every choice) and then every field's bounds
from the asset's config class, so `make demo`, `mathdata validate-config` and CI reject nonsense
before a run starts (the UI's launchpad checks the schema; bounds it leaves to the step)."""

from __future__ import annotations

import inspect
from pathlib import Path

import dagster as dg
import yaml
from pydantic import ValidationError

from mathdata_pipeline.definitions import defs


def config_classes() -> dict[str, type[dg.Config]]:
    """{asset op name: its `dg.Config` class} for every asset that takes config."""
    classes = {}
    for assets_def in defs.resolve_asset_graph().assets_defs:
        node = getattr(assets_def, "node_def", None)
        fn = getattr(getattr(node, "compute_fn", None), "decorated_fn", None)
        parameter = inspect.signature(fn).parameters.get("config") if fn else None
        if (
            parameter is not None
            and isinstance(parameter.annotation, type)
            and issubclass(parameter.annotation, dg.Config)
        ):
            classes[node.name] = parameter.annotation
    return classes


def run_config_problems(run_config: dict) -> list[str]:
    """Every bounds problem of `run_config` for the code location's assets, as "where: what" lines
    (empty when it is valid). Schema problems raise DagsterInvalidConfigError first."""
    dg.validate_run_config(defs.resolve_implicit_global_asset_job_def(), run_config)
    problems = []
    classes = config_classes()
    for op, settings in (run_config.get("ops") or {}).items():
        try:
            classes[op].model_validate((settings or {}).get("config") or {})
        except ValidationError as exc:
            problems += [f"ops.{op}.config.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    return problems


def check_run_config_file(path: Path | str) -> dict:
    """The run config in `path`, checked; raises ValueError naming the file and every problem
    (schema problems in Dagster's words, then bounds)."""
    path = Path(path)
    run_config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    try:
        problems = run_config_problems(run_config)
    except dg.DagsterInvalidConfigError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return run_config
