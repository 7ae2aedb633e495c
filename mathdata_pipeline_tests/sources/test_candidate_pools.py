"""Candidate pools (open datasets for OpenMathMix): the shipped pools file, local slices in the
MetaMathQA and ShareGPT layouts made here, the real ScaleQuest sample, and bad input."""

from __future__ import annotations

import json

import pytest

from mathdata_pipeline.sources.candidate_pools import (
    POOL_SCHEMA,
    CandidatePoolSpec,
    build_pool_rows,
    chosen_pools,
    load_candidate_pools,
)
from mathdata_pipeline.sources.config import HubLocation, open_source
from mathdata_pipeline.sources.readers import InputError, Record, read_records

METAMATH_SLICE = [
    {
        "query": "Natalia sold clips to 48 friends in April and half as many in May. How many in all?",
        "response": "In May she sold 48 / 2 = 24. In all 48 + 24 = 72.\nThe answer is: 72",
        "type": "GSM_Rephrased",
        "original_question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many in May.",
    },
    {
        "query": "Natalia sold clips to x friends in April and half as many in May, 72 in all. What is x?",
        "response": "x + x / 2 = 72, so x = 48.\nThe answer is: 48",
        "type": "GSM_FOBAR",
        "original_question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many in May.",
    },
    {
        "query": "What is 7 * 8?",
        "response": "7 * 8 = 56.\nThe answer is: 56",
        "type": "MATH_AnsAug",
        "original_question": "What is 7 * 8?",
    },
    {
        "query": "What is 7 * 8?",
        "response": "7 * 8 = 56.\nThe answer is: 56",
        "type": "MATH_AnsAug",
        "original_question": "What is 7 * 8?",
    },
    {"query": "Compute 2 + 2.", "response": "   ", "type": "MATH_AnsAug", "original_question": "Compute 2 + 2."},
]
METAMATH = CandidatePoolSpec(
    kind="reasoning",
    hf=HubLocation(id="meta-math/MetaMathQA"),
    question="query",
    response="response",
    problem="original_question",
    subset="type",
    license="MIT",
)


def test_the_shipped_pools_file_documents_the_real_run_defaults():
    pools = load_candidate_pools()
    assert {"metamathqa", "mathinstruct", "ultrachat", "scalequest_math"} <= set(pools)
    assert pools["metamathqa"].hf.id == "meta-math/MetaMathQA" and pools["metamathqa"].kind == "reasoning"
    assert pools["mathinstruct"].hf.id == "TIGER-Lab/MathInstruct"
    assert pools["ultrachat"].kind == "general" and pools["ultrachat"].messages == "messages"
    assert not any(spec.evaluation_split for spec in pools.values())
    assert list(chosen_pools(pools, ["scalequest_math"])) == ["scalequest_math"]
    assert list(chosen_pools(pools, [])) == list(pools)
    with pytest.raises(InputError, match="candidate_pools.yaml: no candidate pool 'orca'"):
        chosen_pools(pools, ["orca"])


def test_a_local_metamathqa_slice_maps_onto_chat_rows(tmp_path):
    path = tmp_path / "MetaMathQA-slice.json"
    path.write_text(json.dumps(METAMATH_SLICE))
    table, counts = build_pool_rows(read_records(path), METAMATH, source="metamathqa", label="MetaMathQA-slice.json")
    assert table.schema == POOL_SCHEMA
    assert counts == {"rows_read": 5, "rows_written": 3, "dropped_empty": 1, "dropped_duplicate": 1}
    rows = table.to_pylist()
    assert rows[0]["messages"] == [
        {"role": "user", "content": METAMATH_SLICE[0]["query"]},
        {"role": "assistant", "content": METAMATH_SLICE[0]["response"]},
    ]
    assert rows[0]["problem_id"] == rows[1]["problem_id"] != rows[2]["problem_id"]  # two rephrasings, one problem
    assert [r["subset"] for r in rows] == ["GSM_Rephrased", "GSM_FOBAR", "MATH_AnsAug"]
    assert {r["license"] for r in rows} == {"MIT"} and {r["kind"] for r in rows} == {"reasoning"}
    assert not any(r["evaluation_split"] for r in rows) and rows[1]["source_record"] == "MetaMathQA-slice.json record 2"


def test_sharegpt_chats_with_renamed_roles(tmp_path):
    spec = CandidatePoolSpec(
        kind="general",
        path="chats.jsonl",
        messages="conversations",
        role_key="from",
        content_key="value",
        roles={"human": "user", "gpt": "assistant"},
        split="test",
        evaluation_split=True,
        license_field="license",
    )
    records = [
        Record(
            "line 1",
            {
                "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}],
                "license": "CC-BY",
            },
        ),
        Record("line 2", {"conversations": [{"from": "human", "value": "Still there?"}]}),
    ]
    table, counts = build_pool_rows(records, spec, source="chats", label="chats.jsonl")
    assert counts["rows_written"] == 1 and counts["dropped_empty"] == 1
    (row,) = table.to_pylist()
    assert row["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert row["evaluation_split"] and row["split"] == "test" and row["license"] == "CC-BY"
    bad_role = Record("line 3", {"conversations": [{"from": "bot", "value": "?"}]})
    with pytest.raises(InputError, match=r"chats.jsonl: line 3: field 'conversations\[0\]': role 'bot'"):
        build_pool_rows([bad_role], spec, source="chats", label="chats.jsonl")


def test_missing_and_mistyped_fields_name_the_record_and_field():
    with pytest.raises(InputError, match="m.json: record 4: field 'response': missing required field"):
        build_pool_rows([Record("record 4", {"query": "q"})], METAMATH, source="m", label="m.json")
    with pytest.raises(InputError, match="m.json: record 2: field 'query': expected str, got int"):
        build_pool_rows([Record("record 2", {"query": 3, "response": "r"})], METAMATH, source="m", label="m.json")


def test_bad_pool_files_are_clear_errors(tmp_path):
    path = tmp_path / "pools.yaml"
    path.write_text(
        "candidate_pools:\n  both:\n    kind: reasoning\n    local: x.json\n    question: q\n    messages: m\n"
    )
    with pytest.raises(InputError, match="pools.yaml: field 'candidate_pools.both'.*either `question` and `response`"):
        load_candidate_pools(path)
    path.write_text("candidate_pools:\n  Open-Set:\n    kind: general\n    local: x.json\n    messages: m\n")
    with pytest.raises(InputError, match="candidate pool name 'Open-Set'"):
        load_candidate_pools(path)
    path.write_text("candidate_pools:\n  nowhere:\n    kind: general\n    messages: m\n")
    with pytest.raises(InputError, match="needs `path`, `local` or `hf`"):
        load_candidate_pools(path)


def test_the_scalequest_sample_reads_from_the_data_folder(data_root):
    spec = load_candidate_pools()["scalequest_math"]
    label, records = open_source(spec, base=data_root)
    table, counts = build_pool_rows(records, spec, source="scalequest_math", label=label)
    assert label == "synth_samples/scalequest_samples.jsonl" and counts["rows_read"] == 100
    assert table.num_rows == counts["rows_written"] == 100 - counts["dropped_empty"] - counts["dropped_duplicate"]
    assert all(
        m[-1]["role"] == "assistant" and "\\boxed" in m[-1]["content"] for m in table["messages"].to_pylist()[:20]
    )
