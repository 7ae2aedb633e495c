"""General instruction sets converted to chat messages, on the real offline data."""

from __future__ import annotations

import pytest

from mathdata_pipeline.sources.config import load_sources_config, open_source
from mathdata_pipeline.sources.general import GENERAL_SCHEMA, build_general_rows
from mathdata_pipeline.sources.readers import InputError, Record

CONFIG = load_sources_config()


@pytest.mark.parametrize(
    "name, read, written",
    [
        ("hh_rlhf_harmless", 2312, 2308),
        ("self_instruct_seed", 175, 175),
        ("self_instruct_user", 252, 252),
    ],
)
def test_general_sets_convert_and_count_every_drop(data_root, name, read, written):
    spec = CONFIG.general_sets[name]
    label, records = open_source(spec, base=data_root)
    table, counts = build_general_rows(records, fmt=spec.format, source=name, label=label, license=spec.license)
    assert table.schema == GENERAL_SCHEMA
    assert counts["rows_read"] == read and table.num_rows == written
    assert counts["rows_read"] <= counts["rows_written"] + counts["dropped_duplicate"] + counts["dropped_empty_reply"]
    for conversation in table.column("messages").to_pylist()[:200]:
        assert conversation[-1]["role"] == "assistant" and conversation[-1]["content"]
        assert conversation[0]["role"] == "user"


def test_hh_transcript_turns_and_malformed_transcript():
    good = Record("line 1", {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: 2+2?\n\nAssistant: 4"})
    table, _ = build_general_rows([good], fmt="hh_rlhf", source="hh", label="hh.jsonl", license="MIT")
    assert [m["role"] for m in table.column("messages").to_pylist()[0]] == ["user", "assistant", "user", "assistant"]
    with pytest.raises(InputError, match="hh.jsonl: line 1: field 'chosen': not a Human/Assistant transcript"):
        build_general_rows(
            [Record("line 1", {"chosen": "just text"})], fmt="hh_rlhf", source="hh", label="hh.jsonl", license=None
        )


def test_mmlu_answer_letter_is_validated():
    bad = Record("line 9", {"question": "q", "choices": ["a", "b"], "answer": "E"})
    with pytest.raises(InputError, match="line 9: field 'answer': expected one of A, B"):
        build_general_rows([bad], fmt="mmlu", source="mmlu", label="m", license=None)


def test_evaluation_sets_are_benchmarks_or_marked_evaluation_splits():
    """MMLU is a benchmark (so the contamination index holds it), never a general set; hh-rlhf's
    test split stays a general set but is marked, so no spec trains on it by accident."""
    assert "mmlu" in CONFIG.benchmarks and "mmlu" not in CONFIG.general_sets
    assert CONFIG.general_sets["hh_rlhf_harmless"].evaluation_split
    assert not CONFIG.general_sets["self_instruct_seed"].evaluation_split


def test_mmlu_format_still_converts_training_sets_in_its_layout():
    good = Record("line 2", {"question": "2 + 2 = ?", "choices": ["3", "4"], "answer": "B"})
    table, _ = build_general_rows([good], fmt="mmlu", source="mmlu_aux", label="m", license=None)
    assert table.column("messages").to_pylist()[0][-1]["content"] == "The answer is B. 4"
