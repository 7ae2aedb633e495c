"""A small mixture built by the real `mixture` asset, for the card, license and publishing tests:
upstream tables written from the offline data (12 GSM8K seed problems with their reference
solutions, 4 Self-Instruct conversations, a contamination index of 5 GSM8K test questions) and a
selection of 9 + 3 rows, so no model runs."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from mathdata_pipeline.common.paths import REPO_ROOT
from mathdata_pipeline.curation.question_pool import build_question_pool
from mathdata_pipeline.curation.solutions import solution_rows
from mathdata_pipeline.decontamination.index import build_index
from mathdata_pipeline.definitions import ASSETS, RESOURCES
from mathdata_pipeline.qads.selection import DECISION_SCHEMA
from mathdata_pipeline.sources.config import load_sources_config
from mathdata_pipeline.sources.general import build_general_rows
from mathdata_pipeline.sources.problems import build_problems
from mathdata_pipeline.sources.readers import read_records
from mathdata_pipeline.storage.resources import TableStore

SPEC = "openmathmix"  # general share 0.25: 9 reasoning + 3 general rows


def write_upstream_tables(store: TableStore, data_root: Path) -> None:
    """Write every table the `mixture` asset reads, for spec SPEC, into `store`."""
    test_questions = islice(read_records(data_root / "gsm8k" / "gsm8k_test.jsonl"), 5)
    index = build_index(("gsm8k_test", str(i), r.data["question"]) for i, r in enumerate(test_questions))
    store.write(index, "contamination_index")
    config = load_sources_config()
    train = data_root / "gsm8k" / "gsm8k_train.jsonl.gz"
    seeds, _ = build_problems(
        islice(read_records(train), 12), config.seed_sources["gsm8k"], source="gsm8k", label="gsm8k"
    )
    pool, _ = build_question_pool({"seed_problems": seeds}, index)
    solutions, _ = solution_rows(pool, None, None)
    store.write(pool, "question_pool", "gsm8k")
    store.write(solutions, "solutions", "gsm8k")
    general_file = data_root / "general" / "self-instruct_seed_tasks.jsonl"
    general, _ = build_general_rows(
        islice(read_records(general_file), 4),
        fmt="self_instruct",
        source="self_instruct_seed",
        label=general_file.name,
        license=config.general_sets["self_instruct_seed"].license,
    )
    store.write(general, "general_pool")
    candidates = [("reasoning", "gsm8k", "seed", sid) for sid in solutions["sample_id"].to_pylist()]
    candidates += [("general", "self_instruct_seed", "general", rid) for rid in general["row_id"].to_pylist()]
    budget = {"reasoning": 9, "general": 3}
    decisions, rank = [], {"reasoning": 0, "general": 0}
    for kind, source, origin, candidate in candidates:
        selected = rank[kind] < budget[kind]
        decisions.append(
            {
                "candidate_id": candidate,
                "kind": kind,
                "source": source,
                "origin": origin,
                "quality": 0.5 + 0.01 * rank[kind],
                "selected": selected,
                "selection_rank": rank[kind] if selected else None,
                "min_distance": 0.3 if selected else None,
                "influence_score": None,
                "decision": "selected (test)" if selected else "not selected (test)",
            }
        )
        rank[kind] += 1
    store.write(pa.Table.from_pylist(decisions, schema=DECISION_SCHEMA), "selections", SPEC)


def materialize_mixture(store: TableStore, **kwargs) -> dg.ExecuteInProcessResult:
    """One real Dagster run of `mixture` for SPEC (failures are returned, not raised)."""
    return dg.materialize(
        ASSETS,
        selection=["mixture"],
        partition_key=SPEC,
        resources={**RESOURCES, "store": store},
        raise_on_error=False,
        **kwargs,
    )


@pytest.fixture(scope="module")
def small_mixture(tmp_path_factory, data_root) -> TableStore:
    """A storage root holding the upstream tables and the mixture of SPEC with its export."""
    store = TableStore(root=str(tmp_path_factory.mktemp("storage")))
    write_upstream_tables(store, data_root)
    result = materialize_mixture(store)
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    return store


@pytest.fixture
def config_copy(tmp_path, monkeypatch) -> Callable[[str, str], Path]:
    """A copy of `configs/` used through MATHDATA_CONFIG_DIR; call it with (spec name, YAML text to
    append to that spec) to change one mixture spec for this test only."""
    folder = tmp_path / "configs"
    shutil.copytree(REPO_ROOT / "configs", folder)
    monkeypatch.setenv("MATHDATA_CONFIG_DIR", str(folder))

    def change(spec: str, extra: str) -> Path:
        path = folder / "mixtures" / f"{spec}.yaml"
        path.write_text(path.read_text(encoding="utf-8") + "\n" + extra + "\n", encoding="utf-8")
        return path

    return change
