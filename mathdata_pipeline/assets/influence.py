"""Influence-based pruning (METHODS.md §5): `reference_responses` (V_C and V_I),
`gradient_features` (LESS-style projected LoRA gradients, in resumable shards) and
`influence_scores` (s_C, s_I, fused rank, and the baselines). Pruning itself is a decision of the
mixture spec (`reasoning.influence_prune`), applied in `selections`."""

from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.assets.metadata import counts_metadata, generation_metadata, table_metadata
from mathdata_pipeline.engines.base import SamplingParams
from mathdata_pipeline.methods import influence as inf
from mathdata_pipeline.methods.embeddings import SentenceEmbedder, render_for_embedding
from mathdata_pipeline.methods.gradient_features import Example, GradientFeaturizer, compute_feature_shards, load_features, warmup_lora
from mathdata_pipeline.methods.grading import Grader
from mathdata_pipeline.methods.hf_models import load_causal_lm
from mathdata_pipeline.methods.pool import solver_subset
from mathdata_pipeline.methods.samples import SampleSpec, sample_rows, solve_request
from mathdata_pipeline.methods.templates import get_template
from mathdata_pipeline.methods.text import stable_hash
from mathdata_pipeline.resources.llm import LLMResource
from mathdata_pipeline.resources.table_store import TableStore


class ReferenceConfig(dg.Config):
    """The validation set V: `problems` seed problems (a seeded sample, disjoint from the
    benchmarks because seeds are checked against them) with `samples` responses each, graded.
    `include_reference_solutions` adds each gold solution to V_C, so a weak model still has one."""

    problems: int = 200
    samples: int = 4
    template: str = "chat"
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 1024
    include_reference_solutions: bool = True
    salt: str = "influence-validation"


@dg.asset(group_name="influence", kinds={"parquet"}, deps=["question_pool"], pool="gpu")
def reference_responses(context: dg.AssetExecutionContext, config: ReferenceConfig, llm: LLMResource,
                        store: TableStore) -> dg.MaterializeResult:
    """Validation responses, graded against the gold answer: `correct` true rows are V_C, false V_I."""
    pool = store.read_all("question_pool").filter(pc.field("origin") == "seed")
    problems = solver_subset(pool, max_questions=config.problems, salt=config.salt).to_pylist()
    template = get_template(config.template)
    params = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens)
    specs = [SampleSpec(p["problem_id"], p["question"], k, 0) for p in problems for k in range(config.samples)]
    requests = [solve_request(template, s, params, seed_salt=config.salt) for s in specs]
    results, stats = llm.generate(context, requests, ledger_name="influence_validation",
                                  row_ids=[f"{s.problem_id}#{s.sample_index}" for s in specs])
    reference = {p["problem_id"]: p["reference_answer"] for p in problems}
    with Grader() as grader:
        grades = grader.grade_many([(getattr(r, "text", "") or "", reference[s.problem_id] or "", getattr(r, "finish_reason", None))
                                    for s, r in zip(specs, results)])
    samples = sample_rows(specs, requests, results, model=llm.engine().info.model_id, template=template.name,
                          extracted=[g.extracted for g in grades], correct=[g.correct for g in grades], grader="mathdata")
    rows = [{"example_id": r["sample_id"], "problem_id": r["problem_id"], "question": next(s.question for s in specs if s.problem_id == r["problem_id"]),
             "response": r["text"], "correct": bool(r["correct"]), "kind": "sampled"} for r in samples.to_pylist() if r["text"]]
    if config.include_reference_solutions:
        rows += [{"example_id": f"ref-{p['problem_id']}", "problem_id": p["problem_id"], "question": p["question"],
                  "response": p["reference_solution"], "correct": True, "kind": "reference"} for p in problems if p["reference_solution"]]
    table = pa.Table.from_pylist(rows)
    path = store.write(table, "reference_responses")
    correct = int(pc.sum(table.column("correct")).as_py() or 0)
    return dg.MaterializeResult(metadata={**table_metadata(table, path), **generation_metadata(stats),
                                          **counts_metadata({"v_correct": correct, "v_incorrect": table.num_rows - correct,
                                                             "v_correct_sampled": sum(r["correct"] and r["kind"] == "sampled" for r in rows)})})


class FeatureConfig(dg.Config):
    """Gradient features (METHODS.md §5.5): LoRA rank/alpha on q/k/v/o of the scoring model,
    projection dimension and seed, truncation, shard size; `warmup_steps` > 0 trains a LoRA
    warm-up on `warmup_fraction` of the training rows first and uses Adam-preconditioned features
    for training rows (plain gradients otherwise). `max_examples` caps training rows (0 = all)."""

    model: str = "embedded"
    lora_r: int = 8
    lora_alpha: int = 16
    proj_dim: int = 8192
    proj_seed: int = 0
    max_length: int = 2048
    shard_size: int = 16
    warmup_steps: int = 0
    warmup_fraction: float = 0.05
    warmup_lr: float = 2e-5
    max_examples: int = 0
    seed: int = 0


def _features_dir(store: TableStore) -> Path:
    root = store.root_path()
    if root.protocol not in ("", "file", "local"):
        raise ValueError("gradient_features writes shard files and needs a local MATHDATA_STORAGE")
    return Path(root.path) / "gradient_features"


def training_rows(store: TableStore, max_examples: int) -> pa.Table:
    """The solutions whose influence is scored: all, or a seeded sample of `max_examples`."""
    solutions = store.read_all("solutions")
    if not max_examples or solutions.num_rows <= max_examples:
        return solutions
    order = sorted(range(solutions.num_rows), key=lambda i: stable_hash("influence", solutions.column("sample_id")[i].as_py()))
    return solutions.take(pa.array(sorted(order[:max_examples]), pa.int64()))


def scoring_prompt(question: str) -> str:
    """The prompt every training and validation example is scored under (loss on the response only)."""
    return f"Question: {question}\nAnswer: "


def _examples(table: pa.Table, id_col: str) -> list[Example]:
    return [Example(r[id_col], scoring_prompt(r["question"]), r["response"])
            for r in table.select([id_col, "question", "response"]).to_pylist()]


@dg.asset(group_name="influence", kinds={"numpy"}, deps=["solutions", "reference_responses"], pool="gpu")
def gradient_features(context: dg.AssetExecutionContext, config: FeatureConfig, store: TableStore) -> dg.MaterializeResult:
    """Unit-normalized projected gradients of every solution (train) and validation response;
    shards are written as they finish, so a rerun after a crash computes only the missing ones."""
    solutions = training_rows(store, config.max_examples)
    train, val = _examples(solutions, "sample_id"), _examples(store.read("reference_responses"), "example_id")
    root = _features_dir(store)
    adapter = None
    if config.warmup_steps:
        rng = np.random.default_rng(config.seed)
        subset = [train[i] for i in sorted(rng.choice(len(train), max(1, int(len(train) * config.warmup_fraction)), replace=False))]
        adapter = warmup_lora(config.model, subset, root / "warmup", steps=config.warmup_steps, lr=config.warmup_lr,
                              r=config.lora_r, alpha=config.lora_alpha, seed=config.seed)
    common = dict(model_source=config.model, adapter_dir=adapter, r=config.lora_r, alpha=config.lora_alpha,
                  proj_dim=config.proj_dim, proj_seed=config.proj_seed, max_length=config.max_length)
    counts = {}
    for split, examples, grad_type in (("train", train, "adam" if adapter else "sgd"), ("val", val, "sgd")):
        featurizer = GradientFeaturizer(grad_type=grad_type, **common)
        shards = compute_feature_shards(featurizer, examples, root / split, shard_size=config.shard_size)
        counts[f"{split}_examples"], counts[f"{split}_shards"] = len(examples), len(shards)
    ids, _ = load_features(root / "train")
    table = pa.table({"example_id": ids, "split": ["train"] * len(ids)})
    path = store.write(table, "gradient_features")
    return dg.MaterializeResult(metadata={**table_metadata(table, path), **counts_metadata(counts),
                                          "features_dir": dg.MetadataValue.path(str(root)),
                                          "grad_type_train": "adam" if adapter else "sgd", "proj_dim": config.proj_dim})


class InfluenceConfig(dg.Config):
    """The scoring model for the perplexity baseline (the same one that made the features)."""

    model: str = "embedded"
    max_length: int = 2048


@dg.asset(group_name="influence", kinds={"parquet"}, deps=["gradient_features", "reference_responses"])
def influence_scores(context: dg.AssetExecutionContext, config: InfluenceConfig, store: TableStore) -> dg.MaterializeResult:
    """Per training solution: s_C (mean influence toward correct validation responses), s_I
    (toward incorrect ones; positive = pushes toward them), their fused rank, and the baselines
    (random, and embedding similarity to the validation questions). Positive influence means a
    gradient step on the example lowers the validation loss (see `methods/influence.py`)."""
    root = _features_dir(store)
    train_ids, train = load_features(root / "train")
    val_ids, val = load_features(root / "val")
    refs = store.read("reference_responses")
    correct = dict(zip(refs.column("example_id").to_pylist(), refs.column("correct").to_pylist()))
    mask = np.asarray([correct[i] for i in val_ids], dtype=bool)
    scores = inf.influence_scores(train, val[mask], val[~mask])
    s_c, s_i = scores.s_c, scores.s_i
    fused = inf.fuse_ranks(s_c, s_i)
    for note in scores.notes:
        context.log.warning(note)
    solutions = store.read_all("solutions").select(["sample_id", "question", "response"]).to_pylist()
    text_pair = {r["sample_id"]: (r["question"], r["response"]) for r in solutions}
    text = {i: render_for_embedding(*pair) for i, pair in text_pair.items()}
    embedder = SentenceEmbedder("embedded")
    similarity = inf.embedding_similarity(embedder.embed([text[i] for i in train_ids]),
                                          embedder.embed(refs.filter(pc.field("kind") == "sampled").column("question").to_pylist() or
                                                         refs.column("question").to_pylist()))
    model, tokenizer = load_causal_lm(config.model)
    perplexity = inf.perplexity_scores(model, tokenizer, [Example(i, scoring_prompt(text_pair[i][0]), text_pair[i][1]) for i in train_ids], max_length=config.max_length)
    table = pa.table({"sample_id": train_ids, "perplexity": pa.array(perplexity, pa.float32()), "s_correct": pa.array(s_c, pa.float32()), "s_incorrect": pa.array(s_i, pa.float32()),
                      "fused_rank": pa.array(fused, pa.float32()), "embedding_similarity": pa.array(similarity, pa.float32()),
                      "random": pa.array(inf.random_scores(train_ids, 0), pa.float32())})
    path = store.write(table, "influence_scores")
    return dg.MaterializeResult(metadata={**table_metadata(table, path),
                                          **counts_metadata({"v_correct": int(mask.sum()), "v_incorrect": int((~mask).sum())})})
