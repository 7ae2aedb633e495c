"""Every benchmark script still imports against the package: a renamed function breaks a
benchmark silently otherwise (benchmarks are run by hand, not by the suite)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def test_there_are_benchmarks():
    assert len(BENCHMARKS) >= 10, [path.name for path in BENCHMARKS]


@pytest.mark.parametrize("path", BENCHMARKS, ids=[path.stem for path in BENCHMARKS])
def test_benchmark_imports_and_has_a_main(path: Path):
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # runs the imports; `main()` is behind `if __name__ == "__main__"`
    assert callable(getattr(module, "main", None)), f"{path.name} has no main()"
    assert module.__doc__ and "python benchmarks/" in module.__doc__.replace(".venv/bin/", ""), (
        f"{path.name}'s docstring does not say how to run it"
    )
