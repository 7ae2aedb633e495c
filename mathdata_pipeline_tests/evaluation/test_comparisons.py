"""The comparisons file: the repository's validates, and mistakes are named with file and field."""

from __future__ import annotations

import pytest

from mathdata_pipeline.common.paths import config_dir
from mathdata_pipeline.evaluation.comparisons import load_comparisons
from mathdata_pipeline.mixtures.spec import mixture_names
from mathdata_pipeline.sources.readers import InputError


def test_the_repository_comparisons_validate_and_name_the_seed_claims():
    comparisons = {c.name: c for c in load_comparisons(config_dir() / "comparisons.yaml")}
    assert (comparisons["qads-vs-random"].a, comparisons["qads-vs-random"].b) == ("openmathmix", "openmathmix-random")
    assert {c.b for c in comparisons.values()} >= {
        "openmathmix-pruned-perplexity",
        "openmathmix-pruned-embedding",
        "openmathmix-pruned-random",
        "openmathmix-no-mugglemath",
        "openmathmix-no-scalequest",
        "base",
        "openmathmix@previous",
    }
    mine = {"openmathmix", "openmathmix-random", "openmathmix-no-mugglemath", "openmathmix-no-scalequest"}
    assert mine <= set(mixture_names())
    assert comparisons["openmathmix-vs-base"].specs() == ["openmathmix"]
    assert comparisons["openmathmix-vs-last-week"].specs() == ["openmathmix"]
    only = load_comparisons(config_dir() / "comparisons.yaml", only=["openmathmix-vs-base", "qads-vs-random"])
    assert [c.name for c in only] == ["qads-vs-random", "openmathmix-vs-base"]  # the file's order


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("comparisons:\n  - {name: x, a: s1}\n", r"field 'comparisons.0.b': Field required"),
        ("comparisons:\n  - {name: x, a: s1, b: s2, claims: y}\n", r"field 'comparisons.0.claims'"),
        ("comparisons:\n  - {name: x, a: s1, b: s2}\n  - {name: x, a: s1, b: s3}\n", r"'x' appears twice"),
        ("comparisons:\n  - {name: x, a: s1, b: s1}\n", r"field 'comparisons.0.b': x: compares s1 with itself"),
        ("comparisons:\n  - {name: x, a: S1, b: s2}\n", r"field 'comparisons.0.a'.*may hold only lower-case"),
    ],
)
def test_mistakes_are_named(tmp_path, text, match):
    path = tmp_path / "comparisons.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        load_comparisons(path)


def test_an_unknown_name_in_only_is_named(tmp_path):
    path = tmp_path / "comparisons.yaml"
    path.write_text("comparisons:\n  - {name: x, a: s1, b: s2}\n")
    with pytest.raises(InputError, match=r"no comparison named y; known: x"):
        load_comparisons(path, only=["y"])
