"""License rules: each row's license, the spec's accepted licenses, the card's license, and a
spec that mixes licenses failing its blocking check in a real Dagster run."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from mathdata_pipeline.mixtures import licenses as lic
from mathdata_pipeline.mixtures.compose import MIXTURE_SCHEMA
from mathdata_pipeline.mixtures.publish import PublishError, export_folder, prepare_upload
from mathdata_pipeline.mixtures.spec import load_mixture_spec
from mathdata_pipeline.sources.config import load_sources_config
from mathdata_pipeline.sources.readers import InputError
from mathdata_pipeline.storage.resources import TableStore
from mathdata_pipeline_tests.mixtures.conftest import SPEC, materialize_mixture, write_upstream_tables


def _rows(*rows: tuple[str, str, str | None, str | None]) -> pa.Table:
    """Mixture rows from (kind, source, problem_id, general_row_id)."""
    return pa.Table.from_pylist(
        [
            {
                "row_id": f"mx-{i}",
                "mixture": "m",
                "kind": kind,
                "source": source,
                "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                "problem_id": problem,
                "general_row_id": general,
                "config_hash": "h",
            }
            for i, (kind, source, problem, general) in enumerate(rows)
        ],
        schema=MIXTURE_SCHEMA,
    )


def test_a_row_takes_its_upstream_license_else_its_sources():
    table = _rows(
        ("reasoning", "gsm8k", "p-seed", None),  # a seed problem: its own license
        ("reasoning", "math", "sq-1", None),  # a ScaleQuest question (no license): its pool source's
        ("general", "self_instruct_seed", None, "g-1"),
        ("reasoning", "dropped_file", "p-drop", None),  # a dropped seed file without a license
    )
    by_source = lic.source_licenses(load_sources_config())
    assert by_source["gsm8k"] == "mit" and by_source["self_instruct_seed"] == "apache-2.0"
    licenses = lic.row_licenses(
        table, {"p-seed": "CC-BY-4.0", "sq-1": None, "p-drop": None}, {"g-1": "Apache-2.0"}, by_source
    )
    assert licenses == ["cc-by-4.0", "mit", "apache-2.0", None]


def test_mixing_licenses_outside_the_allow_list_names_sources_and_row_counts():
    table = _rows(*[("reasoning", "gsm8k", f"p{i}", None) for i in range(3)], ("general", "hh", None, "g"))
    usage = lic.license_usage(table, ["mit", "mit", "mit", "cc-by-nc-4.0"])
    assert usage == [
        {"kind": "general", "source": "hh", "license": "cc-by-nc-4.0", "rows": 1},
        {"kind": "reasoning", "source": "gsm8k", "license": "mit", "rows": 3},
    ]
    assert lic.license_problems(usage, None) == []  # no allow list: every known license is accepted
    assert lic.license_problems(usage, ["mit", "apache-2.0"]) == [
        "source hh (general): 1 rows licensed cc-by-nc-4.0, not in licenses.allow ['apache-2.0', 'mit']"
    ]
    assert lic.card_license(usage) == ["cc-by-nc-4.0", "mit"]
    assert lic.card_license(usage[1:]) == "mit"


def test_an_unknown_license_is_an_error_not_a_guess():
    usage = [
        {"kind": "reasoning", "source": "mine", "license": None, "rows": 4},
        {"kind": "reasoning", "source": "odd", "license": "mit-ish", "rows": 2},
        {"kind": "general", "source": "vague", "license": "other", "rows": 1},
    ]
    problems = lic.license_problems(usage, None)
    assert problems[0].startswith("source mine (reasoning): 4 rows without a known license")
    assert "'mit-ish', which is not a Hugging Face license identifier" in problems[1]
    assert problems[2].startswith("source vague (general): 1 rows without a known license")
    assert lic.card_license(usage) == "unknown"


def test_a_spec_names_hub_license_identifiers(config_copy):
    path = config_copy(SPEC, "licenses: {allow: [MIT, Apache-2.0]}")
    assert load_mixture_spec(SPEC, path.parent).licenses.allow == ["mit", "apache-2.0"]
    path = config_copy("reasoning-only", "licenses: {allow: [mit, permissive]}")
    with pytest.raises(InputError, match=r"reasoning-only.yaml.*licenses.allow.*'permissive'"):
        load_mixture_spec("reasoning-only", path.parent)


@pytest.mark.slow
def test_a_mixing_license_spec_fails_its_check_and_is_neither_exported_nor_published(tmp_path, data_root, config_copy):
    """GSM8K (mit) and Self-Instruct (apache-2.0) rows under a spec that accepts apache-2.0 only."""
    config_copy(SPEC, "licenses: {allow: [apache-2.0]}")
    store = TableStore(root=str(tmp_path / "storage"))
    write_upstream_tables(store, data_root)
    result = materialize_mixture(store)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["licenses_allowed"].passed
    assert checks["licenses_allowed"].description == (
        "openmathmix: source gsm8k (reasoning): 9 rows licensed mit, not in licenses.allow ['apache-2.0']"
    )
    assert all(c.passed for name, c in checks.items() if name != "licenses_allowed")
    assert store.read("mixture_rejected", SPEC).num_rows == 12 and not store.exists("mixture", SPEC)
    folder = export_folder(tmp_path / "storage", SPEC)
    assert not folder.exists()
    with pytest.raises(PublishError, match="no export of mixture 'openmathmix'"):
        prepare_upload(folder, SPEC)


@pytest.mark.slow
def test_the_manifest_counts_rows_per_source_and_license(small_mixture):
    folder = export_folder(small_mixture.local_dir(purpose="test"), SPEC)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["licenses"] == [
        {"kind": "general", "source": "self_instruct_seed", "license": "apache-2.0", "rows": 3},
        {"kind": "reasoning", "source": "gsm8k", "license": "mit", "rows": 9},
    ]
    assert manifest["checks"]["licenses_allowed"] == {"passed": True, "description": "openmathmix: ok"}
