"""The dataset card written with a mixture export: parsed with huggingface_hub's card tools and
`datasets`' reading of the `configs` entry, and its content traced back to the manifest."""

from __future__ import annotations

import json
import re

import pytest
from huggingface_hub import DatasetCard, DatasetCardData
from upath import UPath

from mathdata_pipeline.mixtures.card import size_category
from mathdata_pipeline.mixtures.licenses import HUB_LICENSES
from mathdata_pipeline.mixtures.publish import export_folder
from mathdata_pipeline.mixtures.trace import trace_row
from mathdata_pipeline_tests.mixtures.conftest import SPEC

HUB_SIZE_CATEGORIES = {"n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B", "n>1B"}


def test_size_categories_follow_the_hub_buckets():
    assert [size_category(n) for n in (0, 999, 1000, 99_999, 100_000, 5_000_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "10K<n<100K",
        "100K<n<1M",
        "1M<n<10M",
    ]
    assert size_category(10**12) == "n>1B" and size_category(10**12) in HUB_SIZE_CATEGORIES


@pytest.mark.slow
def test_the_export_card_parses_with_the_hub_card_tools(small_mixture):
    from datasets.utils.metadata import MetadataConfigs

    folder = export_folder(small_mixture.local_dir(purpose="test"), SPEC)
    card = DatasetCard.load(folder / "README.md", ignore_metadata_errors=False)
    assert isinstance(card.data, DatasetCardData)
    data = card.data.to_dict()
    assert data["license"] == ["apache-2.0", "mit"] and set(data["license"]) <= HUB_LICENSES
    assert data["size_categories"] == ["n<1K"] and data["language"] == ["en"]
    assert set(data["task_categories"]) == {"text-generation", "question-answering"}
    configs = MetadataConfigs.from_dataset_card_data(card.data)
    assert configs == {"default": {"data_files": [{"split": "train", "path": "mixture.jsonl"}]}}
    assert DatasetCard(str(card)).data.to_dict() == data  # the card round-trips through the Hub's format


@pytest.mark.slow
def test_the_configs_entry_loads_the_data_file(small_mixture, tmp_path):
    import datasets

    folder = export_folder(small_mixture.local_dir(purpose="test"), SPEC)
    loaded = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    mixture = small_mixture.read("mixture", SPEC)
    assert list(loaded) == ["train"] and loaded["train"]["row_id"] == mixture["row_id"].to_pylist()


@pytest.mark.slow
def test_the_card_says_what_the_manifest_and_tables_say(small_mixture):
    root = small_mixture.local_dir(purpose="test")
    folder = export_folder(root, SPEC)
    text = (folder / "README.md").read_text()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert f"| config hash | `{manifest['config_hash']}`" in text
    assert "| reasoning | 9 | 0.750 | 0.750 |" in text and "| general | 3 | 0.250 | 0.250 |" in text
    assert (
        "| reasoning | gsm8k | 12 | 9 | mit |" in text
        and "| general | self_instruct_seed | 4 | 3 | apache-2.0 |" in text
    )
    assert "| reference | reference |  |  |  | 9 |" in text  # the seed solutions' writer
    assert manifest["by_method"] == {"reference": 9} and "| reference | 9 | the seed dataset's own solution |" in text
    assert "| gsm8k_test | 5 | 0 | 0 |" in text and "`contamination_audit/mixture/openmathmix.parquet`" in text
    assert all(f"| `{check}` | yes |" in text for check in manifest["checks"])
    assert "mathdata-pipeline 0.1.0" in text and "licenses:\n  allow: null" in text
    (example,) = re.findall(r"mathdata trace (mx-\w+)", text)
    assert trace_row(UPath(root), example)["row"]["mixture"] == SPEC  # the card's trace command finds its row
