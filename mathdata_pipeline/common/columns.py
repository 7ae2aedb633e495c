"""One registry of column descriptions: `table_metadata` writes them into every table's column
schema, so the UI explains each column. A name shared by several tables means the same in all,
except `kind`, whose description lists its meaning per table."""

COLUMN_DESCRIPTIONS = {
    # problems and provenance
    "problem_id": "stable id of the problem (a hash of its source name and row)",
    "parent_problem_id": "the problem this one was derived from (a MuggleMath rewrite's seed); empty for seeds",
    "source": "seed source, benchmark or general set the row comes from",
    "source_id": "the row's id in its source file, when the source has one",
    "source_record": "where the row was read: file and line (or dataset row)",
    "split": "the source's split (train, test, …)",
    "question": "the problem statement",
    "reference_answer": "the final answer used for grading (extracted from the source's solution or answer field)",
    "reference_solution": "the source's worked solution, when it has one",
    "level": "MATH difficulty level 1-5; empty where the source has none",
    "subject": "MATH subject; empty where the source has none",
    "license": "license of the source the row comes from",
    "origin": "where the question came from: seed, augmented (MuggleMath), synthesized (ScaleQuest) or general",
    "method": "the method that made the row (e.g. a DART rejection sample of a seed question)",
    "method_params_hash": "hash of the method's settings that made the row (same settings, same hash)",
    "config_hash": "hash of the configuration (mixture spec) that made the row",
    "benchmark": "the evaluation benchmark the row belongs to",
    # LLM samples
    "sample_id": "stable id of one LLM sample",
    "model": "the model that wrote the text",
    "template": "the prompt template used",
    "temperature": "sampling temperature",
    "top_p": "nucleus-sampling top_p",
    "max_tokens": "completion token limit of the request",
    "seed": "sampling seed of the request (same seed, same text from the ledger)",
    "round": "sampling round that requested the sample",
    "sample_index": "index of the sample among those of its question and round",
    "text": "the model's completion",
    "response": "the solution text kept for training",
    "finish_reason": "why generation stopped (stop, length, …)",
    "prompt_tokens": "tokens in the prompt",
    "completion_tokens": "tokens in the completion",
    "extracted_answer": "the final answer parsed from the completion; empty when none was found",
    "correct": "whether the extracted answer matches the reference answer",
    "grader": "the grading rule that judged the answer",
    "error": "the request's error message; empty when it succeeded",
    "annotation_ok": "whether every GSM8K calculator annotation <<a*b=c>> in the response is right (parsed, never run)",
    "kept": "whether the row passed every filter and was kept",
    "reward": "the reward model's score of the response",
    "choice": "how the kept response was chosen (reward model or majority agreement)",
    "shard": "ScaleQuest shard that generated the row",
    "generator": "the question generator (base model or trained variant) that wrote the question",
    # selection and mixtures
    "candidate_id": "id of a mixture candidate (a solution or a general conversation)",
    "kind": "candidates, selections, mixtures: reasoning (math solution) or general (conversation); "
    "contamination index: exact or ngram entry; influence examples: sampled or reference response",
    "quality": "QaDS quality: one-shot win rate of the candidate as a demonstration",
    "selected": "whether the selection kept the candidate",
    "selection_rank": "order (0-based) in which the selection picked the candidate; -1 when not selected",
    "min_distance": "embedding distance to the nearest earlier pick when the candidate was picked; "
    "∞ (inf) for the first pick, which has no earlier pick to be near; empty when not selected",
    "influence_score": "influence of the candidate on the reference responses (lower = pruned first)",
    "decision": "why the candidate was selected or not, in words",
    "row_id": "stable id of the mixture row",
    "general_row_id": "id of the general-pool conversation behind the row; empty for reasoning rows",
    "messages": "the conversation in chat form (role, content)",
    "mixture": "the mixture spec the row belongs to",
    "q_label": "measured QaDS win rate of the candidate; empty (NaN) where it was not labelled",
    "q_pred": "the quality scorer's predicted win rate",
    "example_id": "id of an influence validation example",
    # contamination index and audits
    "hash": "8-byte hash of a normalized benchmark text (exact) or of one of its word n-grams",
    "n": "n-gram length (0 for an exact-text entry)",
    "benchmark_problem_id": "the benchmark item the checked row overlaps",
    "match_kind": "exact (same normalized text) or ngram (shared word n-grams)",
    "matched_ngrams": "distinct n-grams of the benchmark item found in the checked row",
    "benchmark_ngrams": "distinct n-grams of the benchmark item (matched / benchmark = coverage)",
    "span": "the checked row's words from the first to the last matched n-gram (cut to 300 characters)",
    "attempt": "0 the first time; a rerun retries an empty or failed completion with a derived seed",
    "prompt": "the prompt exactly as the scoring model saw it (template applied)",
    "scoring_model": "the model whose weights scored the row (the engine profile's checkpoint)",
    "pool_row_id": "the candidate_pool row the mixture row comes from (open datasets); empty otherwise",
    "evaluation_split": "true for a row of an evaluation split (never a candidate unless the spec lists it)",
    "q_measured": "the measured QaDS win rate (empty where not labelled)",
    "q_predicted": "the quality scorer's prediction (empty without a scorer)",
    "grade_reason": "the grader's verdict: exact, numeric, structural, symbolic, mismatch, no_answer, truncated, …",
    # DART strategies served by one sampling run
    "target": "correct samples the run's primary DART strategy keeps for this question (0: every correct one, VRT)",
    "target_uniform": "correct samples DART's Uniform strategy keeps for this question (first by sample index)",
    "target_prop2diff": "correct samples DART's Prop2Diff strategy keeps for this question (first by sample index)",
    "target_vrt": "0: DART's VRT baseline keeps every correct sample of its fixed trials",
    "target_band": "correct samples the band strategy keeps for this question (0 outside the band)",
    "dart_strategies": "the DART strategies whose selection keeps this sample (one row however many); empty for "
    "other methods",
    "dart_primary": "whether the primary strategy of the DART run keeps this sample (mixture specs' default); "
    "empty for other methods",
}


def column_description(name: str) -> str:
    """The description of column `name` from COLUMN_DESCRIPTIONS; empty for a column the registry
    does not know yet."""
    return COLUMN_DESCRIPTIONS.get(name, "")
