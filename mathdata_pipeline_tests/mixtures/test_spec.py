"""Mixture spec files are partitions: a file whose name cannot be a partition key or a path gets
a placeholder partition whose load fails naming the file, and the code location still loads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mathdata_pipeline.common.names import check_name
from mathdata_pipeline.common.paths import REPO_ROOT
from mathdata_pipeline.mixtures.spec import KindSpec, MixtureSpec, load_mixture_spec, mixture_names
from mathdata_pipeline.qads.selection import decide_spec
from mathdata_pipeline.sources.readers import InputError

SPEC = "reasoning: {selection_ratio: 0.5}\n"
BAD_FILES = ["v2...draft.yaml", "my spec.yaml", "Ünïcödé.yaml", "x" * 70 + ".yaml"]


@pytest.fixture
def specs(tmp_path):
    folder = tmp_path / "mixtures"
    folder.mkdir()
    for name in ["good", *(f.removesuffix(".yaml") for f in BAD_FILES)]:
        (folder / f"{name}.yaml").write_text(SPEC, encoding="utf-8")
    return folder


def test_every_spec_file_is_a_valid_partition_key(specs):
    names = mixture_names(specs)
    assert len(names) == 1 + len(BAD_FILES) and "good" in names
    assert all(check_name(n, what="mixture spec") == n for n in names)
    dg.StaticPartitionsDefinition(names)  # "v2...draft" alone used to stop the code location from loading


def test_a_badly_named_spec_fails_its_own_load_naming_the_file(specs):
    assert load_mixture_spec("good", specs).reasoning.selection_ratio == 0.5
    placeholders = [n for n in mixture_names(specs) if n != "good"]
    messages = []
    for key in placeholders:
        with pytest.raises(InputError) as error:
            load_mixture_spec(key, specs)
        messages.append(str(error.value))
    for file in BAD_FILES:
        assert any(m.startswith(f"{specs / file}: mixture spec name ") and "rename the file" in m for m in messages), (
            file
        )


@pytest.mark.parametrize("name", ["../escape", "a/b", "nope"])
def test_a_name_without_a_spec_file_is_refused_without_reading_outside(specs, name):
    (specs.parent / "escape.yaml").write_text(SPEC)
    with pytest.raises(InputError, match="no mixture spec"):
        load_mixture_spec(name, specs)


def test_the_code_location_loads_with_a_bad_spec_file_and_only_its_partition_fails(tmp_path):
    configs = tmp_path / "configs"
    shutil.copytree(REPO_ROOT / "configs", configs)
    (configs / "mixtures" / "v2...draft.yaml").write_text(SPEC)
    script = (
        "import json, dagster as dg\n"
        "from mathdata_pipeline.definitions import ASSETS, RESOURCES\n"
        "from mathdata_pipeline.common.partitions import mixture_specs\n"
        "keys = mixture_specs.get_partition_keys()\n"
        "bad = [k for k in keys if k.startswith('invalid-')]\n"
        "run = dg.materialize(ASSETS, selection=['selections'], partition_key=bad[0], resources=RESOURCES,"
        " raise_on_error=False)\n"
        "print(json.dumps({'keys': keys, 'error': run.get_step_failure_events()[0].step_failure_data.error.to_string()}))\n"
    )
    env = {**os.environ, "MATHDATA_CONFIG_DIR": str(configs), "MATHDATA_STORAGE": str(tmp_path / "storage")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert {"openmathmix", "openmathmix-pruned", "reasoning-only"} <= set(result["keys"])
    assert f"{configs / 'mixtures' / 'v2...draft.yaml'}: mixture spec name 'v2...draft'" in result["error"]


def test_an_origin_no_row_carries_is_refused_naming_the_file(specs):
    # `dart` and `mugglemath` are methods, not origins: a spec listing them used to drop every MuggleMath row
    (specs / "methods.yaml").write_text("reasoning: {origins: [seed, mugglemath]}\n", encoding="utf-8")
    with pytest.raises(InputError, match="methods.yaml.*origins") as error:
        load_mixture_spec("methods", specs)
    assert "augmented" in str(error.value)
    (specs / "origins.yaml").write_text("reasoning: {origins: [seed, augmented, synthesized, open]}\n")
    assert load_mixture_spec("origins", specs).reasoning.origins == ["seed", "augmented", "synthesized", "open"]


def test_dart_strategy_parses_defaults_to_primary_and_a_wrong_one_names_the_field(specs):
    (specs / "hard.yaml").write_text("dart_strategy: prop2diff\n" + SPEC, encoding="utf-8")
    assert load_mixture_spec("hard", specs).dart_strategy == "prop2diff"
    plain = load_mixture_spec("good", specs)
    assert plain.dart_strategy == "primary"
    # the default stays out of the hash: this is the hash main gave the same spec before the key existed
    assert (
        plain.config_hash() == "baccc24623f3" and load_mixture_spec("hard", specs).config_hash() != plain.config_hash()
    )
    (specs / "typo.yaml").write_text("dart_strategy: prop2dif\n" + SPEC, encoding="utf-8")
    with pytest.raises(InputError, match="typo.yaml.*dart_strategy"):
        load_mixture_spec("typo", specs)


def test_dart_strategy_filters_the_dart_rows_a_spec_may_select():
    # sample d0 is kept by both strategies (one row), d1 by uniform (the primary) only, d2 by prop2diff only
    solutions = pa.table(
        {
            "sample_id": ["ref", "d0", "d1", "d2", "mm"],
            "method": ["reference", "dart", "dart", "dart", "mugglemath"],
            "dart_strategies": [None, ["uniform", "prop2diff"], ["uniform"], ["prop2diff"], None],
            "dart_primary": [None, True, True, False, None],
        }
    )
    ids = solutions.column("sample_id").to_pylist()
    embeddings = pa.table(
        {
            "candidate_id": ids,
            "kind": ["reasoning"] * 5,
            "source": ["gsm8k"] * 5,
            "origin": ["seed"] * 4 + ["augmented"],
            "evaluation_split": [False] * 5,
        }
    )
    quality = pa.table({"candidate_id": ids, "q_label": [None] * 5, "q_pred": [0.5] * 5})
    matrix = np.eye(5, dtype=np.float32)
    chosen = {}
    for strategy in ("primary", "uniform", "prop2diff"):
        spec = MixtureSpec(dart_strategy=strategy, reasoning=KindSpec(selection_ratio=1.0, quality_keep_ratio=1.0))
        decisions, counts, _ = decide_spec(embeddings, matrix, quality, spec, None, solutions=solutions)
        chosen[strategy] = sorted(decisions.filter(pc.field("selected")).column("candidate_id").to_pylist())
        assert counts["reasoning/dart_other_strategy"] == 5 - len(chosen[strategy])
    assert chosen == {
        "primary": ["d0", "d1", "mm", "ref"],
        "uniform": ["d0", "d1", "mm", "ref"],
        "prop2diff": ["d0", "d2", "mm", "ref"],
    }
