"""ScaleQuest stages: `question_generator` (QFT, QPO), `synthesized_questions` (prefix trick +
filters) and `synthesized_responses` (best of n)."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.assets.contamination import contamination_check, contamination_check_spec
from mathdata_pipeline.assets.metadata import counts_metadata, generation_metadata, table_metadata
from mathdata_pipeline.assets.partitions import synthesis_shards
from mathdata_pipeline.assets.plots import bar_chart
from mathdata_pipeline.engines.base import Request, SamplingParams
from mathdata_pipeline.engines.factory import build_engine, load_profile
from mathdata_pipeline.engines.ledger import RequestLedger
from mathdata_pipeline.engines.runner import GenerationStats, run_requests
from mathdata_pipeline.methods import question_filters as qf
from mathdata_pipeline.methods.augmentation import params_hash, vote_columns
from mathdata_pipeline.methods.decontamination import ContaminationIndex
from mathdata_pipeline.methods.embeddings import SentenceEmbedder
from mathdata_pipeline.methods.generator_training import QftConfig, QpoConfig, train_qft, train_qpo
from mathdata_pipeline.methods.pool import solver_subset
from mathdata_pipeline.methods.qpo_prompts import parse_rewrite, preference_pairs, rewrite_messages
from mathdata_pipeline.methods.response_selection import RewardScorer
from mathdata_pipeline.methods.samples import SampleSpec, sample_rows, solve_request
from mathdata_pipeline.methods.scalequest import (PREFIX_PRESETS, clean_question, judge_messages,
                                                  prefix_from_chat_template, synthesis_requests)
from mathdata_pipeline.methods.synthesized import kept_responses, question_rows
from mathdata_pipeline.methods.templates import get_template
from mathdata_pipeline.resources.llm import LLMResource
from mathdata_pipeline.resources.table_store import TableStore


class GeneratorConfig(dg.Config):
    """Question-generator training (METHODS.md §3.3): QFT on seed questions, then QPO on pairs
    (question rewritten by the optimizer LLM = chosen, original = rejected; `optimizer_profile`
    names its engine profile, empty = the llm resource's, e.g. an OpenAI-compatible GPT-4o-mini
    profile as in the paper; `question_max_tokens` and `rewrite_max_tokens` cap the QFT model's
    questions and the rewrites); QPO is skipped, and
    says why, when fewer than `qpo_min_pairs` rewrites parse. Paper defaults;
    `configs/demo.yaml` shrinks them to a few dozen CPU steps."""

    base: str = "embedded"
    prefix: str = "auto"
    qft_questions: int = 15000
    qft_max_steps: int = 0
    qft_learning_rate: float = 2e-5
    use_lora: bool = True
    qpo: bool = True
    qpo_questions: int = 10000
    qpo_rewrite: str = "solvability"
    question_max_tokens: int = 1024
    optimizer_profile: str = ""
    rewrite_max_tokens: int = 1024
    qpo_max_steps: int = 0
    qpo_learning_rate: float = 5e-7
    qpo_batch: int = 8
    qpo_min_pairs: int = 2
    seed: int = 0


def _prefix(name: str, engine):
    if name != "auto":
        return PREFIX_PRESETS[name]
    template = getattr(engine, "_llm", None) and engine._llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise ValueError("prefix 'auto' needs an engine with a chat template (the local backend); name a preset instead")
    return prefix_from_chat_template(template)


def generator_root(store: TableStore) -> Path:
    """Local folder of trained question generators (`<storage>/question_generator/`)."""
    root = store.root_path()
    if root.protocol not in ("", "file", "local"):
        raise ValueError("question_generator writes model files and needs a local MATHDATA_STORAGE")
    return Path(root.path) / "question_generator"


def trained_engine(llm: LLMResource, model_dir: Path):
    """An engine of the llm profile's backend on a trained generator: GGUF for `local`, the merged
    transformers folder for `vllm`."""
    settings = load_profile(llm.profile_name())
    if settings["backend"] == "local":
        settings["model_path"], settings["model_id"] = str(model_dir / "model.gguf"), f"qgen-{model_dir.name}"
    elif settings["backend"] == "vllm":
        settings["model"] = str(model_dir / "hf")
    else:
        raise ValueError(f"a trained generator runs on the local or vllm backend, not {settings['backend']!r}")
    return build_engine(settings)


@dg.asset(group_name="synthesis", kinds={"pytorch"}, deps=["seed_problems"], pool="gpu")
def question_generator(context: dg.AssetExecutionContext, config: GeneratorConfig, llm: LLMResource,
                       store: TableStore) -> dg.MaterializeResult:
    """QFT (and QPO) of the question generator; the trained model sits under
    `<storage>/question_generator/{qft,qpo}/` as merged weights (`hf/`) and `model.gguf`."""
    prefix = _prefix(config.prefix, llm.engine())
    seeds = solver_subset(store.read_all("seed_problems", columns=["problem_id", "question", "reference_answer"]),
                          max_questions=config.qft_questions, salt="qft")
    root = generator_root(store)
    qft = train_qft(seeds.column("question").to_pylist(), prefix.prefix, prefix.end_of_turn, root / "qft",
                    QftConfig(base=config.base, max_steps=config.qft_max_steps, learning_rate=config.qft_learning_rate,
                              use_lora=config.use_lora, seed=config.seed))
    metadata = {"qft_steps": qft.steps, "qft_final_loss": float(qft.train_loss[-1]) if qft.train_loss else float("nan"),
                "qft_seconds": qft.wall_seconds, "qft_model": dg.MetadataValue.path(str(root / "qft"))}
    final = "qft"
    if config.qpo:
        stats: list[GenerationStats] = []
        with trained_engine(llm, root / "qft") as engine, RequestLedger(llm.ledger_path("qpo")) as ledger:
            requests = synthesis_requests(prefix, config.qpo_questions, generator_id="qft", shard="qpo",
                                          max_tokens=config.question_max_tokens)
            results, run_stats = run_requests(engine, ledger, requests, log=context.log.info)
            stats.append(run_stats)
        originals = [clean_question(r.text, prefix) if hasattr(r, "text") else "" for r in results]
        originals = [q for q in originals if q]
        optimizer = LLMResource(profile=config.optimizer_profile, ledger_dir=llm.ledger_dir) if config.optimizer_profile else llm
        rewrites, rewrite_stats = optimizer.generate(context, [rewrite_messages_request(q, config.qpo_rewrite, config.rewrite_max_tokens)
                                                               for q in originals],
                                                     ledger_name="qpo_rewrite")
        if optimizer is not llm:
            optimizer.engine().close()
        stats.append(rewrite_stats)
        pairs, dropped = preference_pairs(originals, [parse_rewrite(r.text, config.qpo_rewrite) if hasattr(r, "text") else None
                                                      for r in rewrites])
        metadata.update({"qpo_pairs": len(pairs), **{f"qpo_dropped/{k}": v for k, v in dropped.items()},
                         **generation_metadata(GenerationStats.combine(stats))})
        if len(pairs) >= config.qpo_min_pairs:
            qpo = train_qpo(pairs, prefix.prefix, prefix.end_of_turn, str(root / "qft" / "hf"), root / "qpo",
                            QpoConfig(max_steps=config.qpo_max_steps, learning_rate=config.qpo_learning_rate,
                                      per_device_batch=config.qpo_batch, seed=config.seed))
            metadata.update({"qpo_steps": qpo.steps, "qpo_seconds": qpo.wall_seconds,
                             "qpo_model": dg.MetadataValue.path(str(root / "qpo"))})
            final = "qpo"
        else:
            context.log.warning(f"QPO skipped: {len(pairs)} preference pairs (< qpo_min_pairs={config.qpo_min_pairs}); "
                                f"the optimizer's rewrites did not parse: {dropped}")
    (root / "latest.json").write_text(json.dumps({"variant": final}), encoding="utf-8")
    return dg.MaterializeResult(metadata={**metadata, "latest": final})


def rewrite_messages_request(question: str, kind: str, max_tokens: int) -> Request:
    """The optimizer LLM's request for one rewrite (greedy, as the paper's temperature 0)."""
    return Request.chat(rewrite_messages(question, kind), SamplingParams(temperature=0.0, max_tokens=max_tokens, seed=0))


class SynthesisConfig(dg.Config):
    """Question synthesis and filters (METHODS.md §3.3 steps 3–4; paper defaults).

    `generator`: `base` (the llm profile's model) or `trained` (the latest `question_generator`).
    Filters run in order: language, near-duplicates (MiniLM cosine), benchmark overlap,
    solvability (LLM judge; the final Yes/No verdict, or any "yes" with `reference_verdict`),
    difficulty (`solver`: fail rate = 1 − majority share of `solver_samples` answers; `scorer`: a
    sequence-classification model at `scorer_model`), then `difficulty_rule`
    (none | drop_easy_fraction | min_difficulty). The solver samples are always drawn (their
    majority answer is the reference) and saved in `synthesis_samples/<shard>`. Kept questions join `question_pool[pool_source]`
    with the majority answer as reference (questions without one are dropped and counted)."""

    generator: str = "base"
    prefix: str = "auto"
    questions_per_shard: int = 2000
    temperature: float = 1.0
    top_p: float = 0.99
    max_tokens: int = 1024
    language: str = "ascii"
    near_duplicate_threshold: float = 0.95
    solvability: bool = True
    judge_max_tokens: int = 2048
    reference_verdict: bool = False
    difficulty: str = "solver"
    scorer_model: str = ""
    solver_template: str = "chat"
    solver_samples: int = 5
    solver_temperature: float = 0.7
    solver_top_p: float = 0.95
    solver_max_tokens: int = 2048
    min_agreement: float = 0.4
    difficulty_rule: str = "drop_easy_fraction"
    difficulty_fraction: float = 0.2
    difficulty_threshold: float = 0.0
    pool_source: str = "math"


def _solver_samples(context, config: SynthesisConfig, llm: LLMResource, questions: pa.Table, stats: list):
    """n solver samples per question (same requests for difficulty and responses: ledger hits)."""
    template = get_template(config.solver_template)
    params = SamplingParams(temperature=config.solver_temperature, top_p=config.solver_top_p, max_tokens=config.solver_max_tokens)
    specs = [SampleSpec(r["problem_id"], r["question"], k, 0) for r in questions.select(["problem_id", "question"]).to_pylist()
             for k in range(config.solver_samples)]
    requests = [solve_request(template, s, params, seed_salt="scalequest-solver") for s in specs]
    results, run_stats = llm.generate(context, requests, ledger_name="solver/synthesized",
                                      row_ids=[f"{s.problem_id}#{s.sample_index}" for s in specs])
    stats.append(run_stats)
    samples = sample_rows(specs, requests, results, model=llm.engine().info.model_id, template=template.name,
                          extracted=[None] * len(specs), correct=[None] * len(specs), grader="majority-vote")
    return vote_columns(samples, check_annotations=False, min_agreement=config.min_agreement)[0]


def _generate_questions(context, config: SynthesisConfig, llm: LLMResource, store: TableStore, shard: str, stats: list):
    variant = json.loads((generator_root(store) / "latest.json").read_text())["variant"] if config.generator == "trained" else None
    engine = trained_engine(llm, generator_root(store) / variant) if variant else llm.engine()
    prefix = _prefix(config.prefix, engine)
    generator_id = engine.info.model_id + (f"@{engine.info.revision}" if variant else "")
    requests = synthesis_requests(prefix, config.questions_per_shard, generator_id=generator_id, shard=shard,
                                  temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens)
    if variant:
        with engine, RequestLedger(llm.ledger_path("synthesis")) as ledger:
            results, run_stats = run_requests(engine, ledger, requests, log=context.log.info, max_error_share=llm.max_error_share)
    else:
        results, run_stats = llm.generate(context, requests, ledger_name="synthesis")
    stats.append(run_stats)
    texts = [clean_question(r.text, prefix) if hasattr(r, "text") else "" for r in results]
    tokens = [getattr(r, "completion_tokens", 0) for r in results]
    return question_rows(texts, [r.params.seed for r in requests], tokens, generator=generator_id, shard=shard,
                         source=config.pool_source, params_hash=params_hash(config.model_dump()))


@dg.asset(partitions_def=synthesis_shards, group_name="synthesis", kinds={"parquet"}, pool="gpu",
          deps=["question_generator", "contamination_index"],
          check_specs=[contamination_check_spec("synthesized_questions", blocking=True)])
def synthesized_questions(context: dg.AssetExecutionContext, config: SynthesisConfig, llm: LLMResource,
                          store: TableStore) -> dg.MaterializeResult:
    """Questions written from scratch with the prefix trick, one shard at a time, through the
    filters; rejected rows go to `synthesis_audit/<shard>` with the step and the reason."""
    shard, stats = context.partition_key, []
    table = _generate_questions(context, config, llm, store, shard, stats)
    generated_tokens = int(pc.sum(table.column("completion_tokens")).as_py() or 0)
    steps = [qf.apply_mask(table, [bool(q) for q in table.column("question").to_pylist()],
                           [None if q else "empty after cleaning" for q in table.column("question").to_pylist()], "empty")]
    steps.append(qf.language_filter(steps[-1].kept, allowed=config.language))
    vectors = SentenceEmbedder("embedded").embed(steps[-1].kept.column("question").to_pylist())
    steps.append(qf.near_duplicate_filter(steps[-1].kept, vectors, threshold=config.near_duplicate_threshold, id_column="problem_id"))
    index = ContaminationIndex.from_table(store.read("contamination_index"))
    steps.append(qf.contamination_filter(steps[-1].kept, index, id_column="problem_id", text_column="question"))
    if config.solvability:
        kept = steps[-1].kept
        judge_params = SamplingParams(temperature=0.0, max_tokens=config.judge_max_tokens, seed=0)
        results, run_stats = llm.generate(context, [Request.chat(judge_messages(q), judge_params) for q in kept.column("question").to_pylist()],
                                          ledger_name="judge", row_ids=kept.column("problem_id").to_pylist())
        stats.append(run_stats)
        steps.append(qf.solvability_filter(kept, [getattr(r, "text", "") for r in results], reference_behaviour=config.reference_verdict))
    kept = steps[-1].kept
    votes = _solver_samples(context, config, llm, kept, stats)
    store.write(votes, "synthesis_samples", shard)
    first = {}
    for r in votes.select(["problem_id", "majority_answer", "agreement"]).to_pylist():
        first.setdefault(r["problem_id"], r)
    answers = [first[p]["majority_answer"] for p in kept.column("problem_id").to_pylist()]
    kept = kept.set_column(kept.schema.get_field_index("reference_answer"), "reference_answer", pa.array(answers, pa.string()))
    steps.append(qf.apply_mask(kept, [a is not None for a in answers],
                               [None if a is not None else "no majority answer among the solver's samples" for a in answers],
                               "solver_answer"))
    kept = steps[-1].kept
    difficulty = (np.asarray([1.0 - first[p]["agreement"] for p in kept.column("problem_id").to_pylist()])
                  if config.difficulty == "solver" or kept.num_rows == 0
                  else qf.difficulty_scores_from_model(kept.column("question").to_pylist(), config.scorer_model))
    steps.append(qf.difficulty_sampling(kept, difficulty, rule=config.difficulty_rule, fraction=config.difficulty_fraction,
                                        threshold=config.difficulty_threshold, seed=0, id_column="problem_id"))
    final = steps[-1].kept
    audit = pa.concat_tables([s.rejected.select(["problem_id", "question", "filter_step", "reason"]) for s in steps])
    audit_path = store.write(audit, "synthesis_audit", shard)
    path = store.write(final, "synthesized_questions", shard)
    check = contamination_check(store, final, asset_key="synthesized_questions", partition=shard,
                                id_column="problem_id", text_column="question")
    step_counts = {f"filter/{s.step}": f"{s.n_in} -> {s.n_out}" for s in steps}
    chart = bar_chart("questions left after each filter", [s.step for s in steps], {"kept": [s.n_out for s in steps]})
    total = GenerationStats.combine(stats)
    return dg.MaterializeResult(metadata={
        **table_metadata(final, path), **generation_metadata(total), **step_counts, "filter_chart": chart,
        "generated": table.num_rows, "kept": final.num_rows,
        "generator": table.column("generator")[0].as_py() if table.num_rows else "", "audit_path": dg.MetadataValue.path(str(audit_path)),
        "question_tokens": generated_tokens,
        "tokens_per_kept_question": float(total.completion_tokens / final.num_rows) if final.num_rows else float("nan")},
        check_results=[check])


class SynthResponseConfig(dg.Config):
    """Best of n (METHODS.md §3.3 steps 5–6) over the solver samples that `synthesized_questions`
    drew (n = its `solver_samples`, temperature 0.7 by default): one kept response per question, by
    a reward model (`reward_model`: any Hugging Face sequence-classification model) among the
    responses with a final-answer marker, or else the first response with the majority answer
    (which needs `min_votes` votes)."""

    reward_model: str = ""
    reward_batch_size: int = 4
    min_votes: int = 2


@dg.asset(partitions_def=synthesis_shards, group_name="synthesis", kinds={"parquet"}, deps=["synthesized_questions"])
def synthesized_responses(context: dg.AssetExecutionContext, config: SynthResponseConfig, store: TableStore) -> dg.MaterializeResult:
    """Every solver sample of the kept synthesized questions, graded for self-consistency against
    the majority answer; `kept` marks the chosen response, `choice` says why."""
    shard = context.partition_key
    kept_ids = pa.array(store.read("synthesized_questions", shard, columns=["problem_id"]).column("problem_id").to_pylist(), pa.string())
    samples = store.read("synthesis_samples", shard).filter(pc.is_in(pc.field("problem_id"), kept_ids))
    questions = dict(zip(*store.read("synthesized_questions", shard, columns=["problem_id", "question"]).to_pydict().values()))
    scorer = RewardScorer(config.reward_model, batch_size=config.reward_batch_size) if config.reward_model else None
    table, counts = kept_responses(samples, questions, scorer, min_agreement=config.min_votes)
    path = store.write(table, "synthesized_responses", shard)
    return dg.MaterializeResult(metadata={**table_metadata(table, path), **counts_metadata(counts),
                                          "rule": "reward" if scorer else "majority"})
