"""Names in sources.yaml become partition keys and paths: a bad one is refused when the file is
loaded, with the file, the section and the name in the message."""

from __future__ import annotations

import json

import pytest
import yaml

from mathdata_pipeline.sources.config import load_sources_config
from mathdata_pipeline.sources.readers import InputError

BAD = ["../../../../escape_ledger", "a/b", "nul\x00byte", "ünïcödé-" * 8, "x" * 65, "My Source", "v2...draft"]


def _config(tmp_path, section: str, name: str):
    entry = {"path": "seeds.jsonl", "question": "question"}
    if section == "general_sets":
        entry = {"path": "chat.jsonl", "format": "messages"}
    raw = {"seed_sources": {"gsm8k": {"path": "g.jsonl", "question": "question"}}}
    raw.setdefault(section, {})[name] = entry
    path = tmp_path / "sources.yaml"
    path.write_text(json.dumps(raw), encoding="utf-8")  # JSON is YAML, and carries NUL escaped
    return path


@pytest.mark.parametrize("name", BAD)
@pytest.mark.parametrize("section", ["seed_sources", "benchmarks", "general_sets"])
def test_a_bad_source_name_is_refused_at_load_naming_file_section_and_name(tmp_path, section, name):
    path = _config(tmp_path, section, name)
    with pytest.raises(InputError) as error:
        load_sources_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: field '{section}': ") and repr(name) in message


def test_the_shipped_sources_file_passes(tmp_path):
    config = load_sources_config()
    assert {"gsm8k", "math"} <= set(config.seed_sources)
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump({"seed_sources": {"my-source.v2": {"path": "x.jsonl", "question": "q"}}}))
    assert list(load_sources_config(path).seed_sources) == ["my-source.v2"]
