"""Shared fixtures: the real offline data folder, temporary storage and Dagster instances."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from mathdata_pipeline.sources.config import data_dir
from mathdata_pipeline_tests.services import postgres_server, s3_server, s3_storage  # noqa: F401 - fixtures

if not os.environ.get("HF_HUB_OFFLINE"):  # tests never touch the hub
    os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared offline datasets (MATHDATA_DATA_DIR or ../shared/data). CI always has them,
    so their absence is a failure, not a skip."""
    root = data_dir()
    assert root is not None and (root / "gsm8k").is_dir(), (
        "the tests need the offline datasets: set MATHDATA_DATA_DIR to a folder laid out like ../shared/data "
        "(CI has it at ../shared/data beside the repository)"
    )
    return root


def read_jsonl_gz(path: Path) -> list[dict]:
    """Every record of a gzipped JSONL file."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="session")
def gsm8k_train(data_root) -> list[dict]:
    """GSM8K's training records from the offline data folder."""
    return read_jsonl_gz(data_root / "gsm8k" / "gsm8k_train.jsonl.gz")


@pytest.fixture(scope="session")
def sequence_classifier_dir(tmp_path_factory) -> str:
    """A real one-output sequence-classification model: the embedded SmolLM2 weights with a
    seeded random score head, saved as a transformers folder once per session."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from mathdata_pipeline.common.hf_models import embedded_checkpoint

    root = tmp_path_factory.getbasetemp() / "sequence_classifier"
    if (root / "config.json").is_file():
        return str(root)
    tokenizer = AutoTokenizer.from_pretrained(embedded_checkpoint())
    torch.manual_seed(0)
    classifier = AutoModelForSequenceClassification.from_pretrained(embedded_checkpoint(), num_labels=1)
    classifier.config.pad_token_id = tokenizer.pad_token_id
    classifier.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return str(root)


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The embedded SmolLM2's tokenizer (fast, with its chat template)."""
    from transformers import AutoTokenizer

    from mathdata_pipeline.common.hf_models import embedded_checkpoint

    return AutoTokenizer.from_pretrained(embedded_checkpoint())


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, smol_tokenizer) -> Path:
    """A 2-layer llama (hidden size 32) with seeded random weights and SmolLM2's tokenizer, saved
    once per session: trains and scores in well under a second per step on a CPU."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny_llama")
    config = LlamaConfig(
        vocab_size=len(smol_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def benchmark_storage(tmp_path_factory, data_root) -> Path:
    """A storage root holding `eval_benchmarks` and `contamination_index`, written once per
    session by one real Dagster run on the offline data; the end-to-end fixtures start from a copy
    of it (`storage_with_benchmarks`) instead of each materializing both again."""
    import dagster as dg

    from mathdata_pipeline.definitions import ASSETS, RESOURCES
    from mathdata_pipeline.sources.resources import DataSources
    from mathdata_pipeline.storage.resources import TableStore

    root = tmp_path_factory.mktemp("benchmark_storage")
    resources = {**RESOURCES, "store": TableStore(root=str(root)), "sources": DataSources(data_dir=str(data_root))}
    result = dg.materialize(ASSETS, selection=["eval_benchmarks", "contamination_index"], resources=resources)
    assert result.success
    return root


def storage_with_benchmarks(benchmark_storage: Path, root: Path) -> Path:
    """Copy the session's `benchmark_storage` tables into the storage folder `root` (created when
    missing) and return `root`; each module gets its own copy, so it may rewrite them."""
    shutil.copytree(benchmark_storage, root, dirs_exist_ok=True)
    return root


def pytest_configure(config):
    """Under pytest-xdist (`-n N`), each worker gets its own Dagster instance folder and runs on
    its own share of this process's cores.

    The instance: `DAGSTER_HOME` becomes a fresh folder per worker (with the repository's
    `dagster.yaml`), so two workers never create the schema of one SQLite instance at once (what
    `mathdata trace` opens; alembic fails with "more than one head" when two processes race).
    The cores: llama.cpp and torch size their thread pools from the affinity mask, so they do not
    run twice as many threads as there are cores: worker `gwK` gets every N-th core from K."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker:
        return
    home = Path(tempfile.mkdtemp(prefix=f"dagster-home-{worker}-"))
    shutil.copy(Path(__file__).resolve().parents[1] / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    if count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    index = int(worker.removeprefix("gw"))
    share = cores[index % len(cores) :: count] or cores
    os.sched_setaffinity(0, share)


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA: they run on a GPU machine and are skipped everywhere else."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
