"""The package keeps its layout rules: Dagster only in Dagster files, engines independent of the
methods, assets short, every run-config file valid for the definitions, engine profiles typed."""

from __future__ import annotations

import ast
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mathdata_pipeline.common.paths import REPO_ROOT
from mathdata_pipeline.definitions import defs
from mathdata_pipeline.engines.factory import ProfileError, load_profile, validate_profile
from mathdata_pipeline.run_config import check_run_config_file, config_classes, run_config_problems

PACKAGE = REPO_ROOT / "mathdata_pipeline"
DAGSTER_FILES = {"assets.py", "checks.py", "resources.py", "partitions.py", "metadata.py"}
TOP_LEVEL_DAGSTER_FILES = {"definitions.py", "automation.py", "demo.py", "run_config.py"}
MAX_ASSET_BODY_LINES = 45


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def modules_of_package() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_only_dagster_files_import_dagster():
    offenders = []
    for path in modules_of_package():
        allowed = path.name in (TOP_LEVEL_DAGSTER_FILES if path.parent == PACKAGE else DAGSTER_FILES)
        if not allowed and any(m == "dagster" or m.startswith("dagster.") for m in imported_modules(path)):
            offenders.append(str(path.relative_to(REPO_ROOT)))
    assert offenders == [], f"plain modules must not import dagster: {offenders}"


def test_engines_import_no_method_module():
    offenders = []
    for path in sorted((PACKAGE / "engines").glob("*.py")):
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "mathdata_pipeline" and len(parts) > 1 and parts[1] not in ("engines", "common"):
                offenders.append(f"{path.name}: {module}")
            if parts[:2] == ["mathdata_pipeline", "common"]:
                # common modules the engines use must not pull a method module in either
                common = PACKAGE / "common" / f"{parts[2]}.py"
                inner = {m for m in imported_modules(common) if m.startswith("mathdata_pipeline.")}
                offenders += [
                    f"{path.name} via {module}: {m}" for m in inner if m.split(".")[1] not in ("engines", "common")
                ]
    assert offenders == []


def test_every_method_has_one_folder():
    for method in ("dart", "mugglemath", "scalequest", "qads", "influence"):
        assert (PACKAGE / method / "assets.py").is_file(), method
    assert not (PACKAGE / "methods").exists() and not (PACKAGE / "assets").exists()


def test_asset_bodies_are_short_recipes():
    long = []
    for path in PACKAGE.rglob("assets.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef) and any(_is_asset_decorator(d) for d in node.decorator_list):
                first = node.body[1] if isinstance(node.body[0], ast.Expr) and len(node.body) > 1 else node.body[0]
                length = node.end_lineno - first.lineno + 1
                if length > MAX_ASSET_BODY_LINES:
                    long.append(f"{path.parent.name}.{node.name}: {length} lines")
    assert long == [], f"asset bodies should be recipes of at most {MAX_ASSET_BODY_LINES} lines: {long}"


def _is_asset_decorator(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    return isinstance(target, ast.Attribute) and target.attr in ("asset", "multi_asset")


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in (REPO_ROOT / "configs").glob("*.yaml") if "ops" in (yaml.safe_load(p.read_text()) or {})),
)
def test_run_config_files_are_valid_for_the_definitions(name):
    """Every `ops:` file works unchanged with `dagster asset materialize -c` (and `make demo`)."""
    run_config = check_run_config_file(REPO_ROOT / "configs" / name)
    assert dg.validate_run_config(defs.resolve_implicit_global_asset_job_def(), run_config)


def test_a_config_with_nonsense_is_rejected_before_a_run(tmp_path):
    job = defs.resolve_implicit_global_asset_job_def()
    for bad in (
        {"rejection_samples": {"config": {"strategy": "fastest"}}},
        {"augmented_questions": {"config": {"rewrite_types": ["change_numbers", "rhyme"]}}},
        {"difficulty_ledger": {"config": {"template": "chta"}}},
    ):
        with pytest.raises(dg.DagsterInvalidConfigError):  # the schema: what the UI's launchpad checks
            dg.validate_run_config(job, {"ops": bad})
    assert config_classes()["rejection_samples"].model_json_schema()["properties"]["k_u"]["description"]
    assert run_config_problems({"ops": {"rejection_samples": {"config": {"k_u": 0, "band_high": 2}}}}) == [
        "ops.rejection_samples.config.k_u: Input should be greater than or equal to 1",
        "ops.rejection_samples.config.band_high: Input should be less than or equal to 1",
    ]
    path = tmp_path / "bad.yaml"
    path.write_text("ops:\n  augmented_responses:\n    config: {min_agreement: 1.5}\n")
    with pytest.raises(ValueError, match=rf"{path}: ops.augmented_responses.config.min_agreement"):
        check_run_config_file(path)


def test_engine_profiles_validate_per_backend(tmp_path):
    for name in yaml.safe_load((REPO_ROOT / "configs" / "engines.yaml").read_text())["profiles"]:
        assert load_profile(name).backend in ("local", "openai", "vllm", "ray")
    with pytest.raises(ProfileError, match=r"profile 'typo'.*max_concurency: not a setting of this backend"):
        validate_profile(
            "typo", {"backend": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m", "max_concurency": 4}
        )
    with pytest.raises(ProfileError, match=r"n_ctx"):
        validate_profile("small", {"backend": "local", "n_ctx": "big"})
    with pytest.raises(ProfileError, match=r"backend"):
        validate_profile("what", {"backend": "tpu"})
    path = tmp_path / "engines.yaml"
    path.write_text("profiles:\n  bad:\n    backend: vllm\n    model: m\n    gpu_memory_utilisation: 0.5\n")
    with pytest.raises(ProfileError, match=rf"{path}: profile 'bad': gpu_memory_utilisation"):
        load_profile("bad", path)
