"""Influence-based pruning (METHODS.md §5, LESS §5.5): `reference_responses` (V_C and V_I, sampled
on held-out seed problems), `gradient_features` (LoRA warm-up, then Adam-preconditioned training
and SGD validation features per checkpoint, in resumable shards) and `influence_scores` (s_C, s_I
summed over checkpoints, fused rank, the baselines, and the blocking held-out check). Pruning
itself is a decision of the mixture spec (`reasoning.influence_prune`), applied in `selections`."""

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from mathdata_pipeline.common.metadata import counts_metadata, generation_metadata, table_metadata
from mathdata_pipeline.common.resources import ComputeConfig
from mathdata_pipeline.common.samples import SampleSpec, draw_samples
from mathdata_pipeline.common.subsets import solver_subset
from mathdata_pipeline.common.templates import TemplateName, get_template
from mathdata_pipeline.engines.base import SamplingParams
from mathdata_pipeline.engines.factory import load_profile
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.engines.runner import GenerationStats
from mathdata_pipeline.grading import Grader
from mathdata_pipeline.influence.baselines import baseline_scores
from mathdata_pipeline.influence.checks import HELDOUT_CHECK_SPEC, heldout_check
from mathdata_pipeline.influence.datastore import FeatureSettings, compute_checkpoint_features, load_checkpoint_features
from mathdata_pipeline.influence.devices import DeviceName, DtypeName
from mathdata_pipeline.influence.examples import (
    engine_prompts,
    influence_inputs,
    problem_roots,
    scoring_model_for,
    shared_problems,
    validation_rows,
)
from mathdata_pipeline.influence.scores import influence_table
from mathdata_pipeline.storage.resources import TableStore


class ReferenceConfig(dg.Config):
    """The validation set V (METHODS.md §5.4): `problems` seed problems held out for it (a salted
    sample of the question pool's seeds, optionally of some `sources`; no scored training row may
    come from them), `samples` responses each from the engine `profile`, graded. The gradient
    features use the same model (`scoring_model`, the engine's weights for transformers) and the
    same `template`. `include_reference_solutions` adds each held-out gold solution to V_C (for a
    model too weak to have correct responses)."""

    problems: int = Field(default=200, ge=1, description="held-out validation problems")
    samples: int = Field(default=4, ge=1, description="responses sampled per problem")
    sources: list[str] = Field(default_factory=list, description="seed sources to hold problems out of; empty = all")
    template: TemplateName = Field(default="chat", description="prompt template of sampling and of the features")
    temperature: float = Field(default=0.7, ge=0.0, le=5.0, description="sampling temperature")
    top_p: float = Field(default=0.95, gt=0.0, le=1.0, description="nucleus sampling share")
    max_tokens: int = Field(default=1024, ge=1, description="tokens per response")
    profile: str = Field(default="", description="engine profile of the responses; empty = the llm resource's")
    scoring_model: str = Field(default="", description="transformers weights of that engine; empty = from the profile")
    include_reference_solutions: bool = Field(default=False, description="add each held-out gold solution to V_C")
    salt: str = Field(default="influence-validation", description="salt of the problem subset and sample seeds")


@dg.asset(group_name="influence", kinds={"parquet"}, deps=["question_pool"], pool="gpu")
def reference_responses(
    context: dg.AssetExecutionContext, config: ReferenceConfig, llm: LLMResource, store: TableStore
) -> dg.MaterializeResult:
    """Validation responses to held-out seed problems, graded against the gold answer: `correct`
    rows are V_C, the others V_I; each row keeps the prompt the engine rendered, the model and template."""
    pool = store.read_all("question_pool").filter(pc.field("origin") == "seed")
    if config.sources:
        pool = pool.filter(pc.is_in(pc.field("source"), pa.array(config.sources)))
    problems = solver_subset(pool, max_questions=config.problems, salt=config.salt).to_pylist()
    template, stats = get_template(config.template), []
    with Grader() as grader:
        samples = draw_samples(
            [SampleSpec(p["problem_id"], p["question"], k, 0) for p in problems for k in range(config.samples)],
            template=template,
            seed_salt=config.salt,
            params=SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens),
            model=llm.model_id(config.profile),
            generate=llm.generate_fn(context, stats, ledger_name="influence_validation", profile=config.profile),
            references={p["problem_id"]: p["reference_answer"] for p in problems},
            grade=grader.grade_many,
        )
    table = validation_rows(
        problems,
        samples,
        engine_prompts(problems, template, llm.engine(config.profile).render),
        scoring_model=config.scoring_model or scoring_model_for(load_profile(llm.profile_name(config.profile))),
        include_reference_solutions=config.include_reference_solutions,
    )
    path = store.write(table, "reference_responses")
    correct = table.column("correct").to_numpy(zero_copy_only=False)
    sampled = np.asarray(table.column("kind").to_pylist()) == "sampled"
    counts = {"problems": len(problems), "v_correct": int(correct.sum()), "v_incorrect": int((~correct).sum())}
    return dg.MaterializeResult(
        metadata={
            **table_metadata(table, path),
            **generation_metadata(GenerationStats.combine(stats)),
            **counts_metadata({**counts, "v_correct_sampled": int((correct & sampled).sum())}),
        }
    )


class FeatureConfig(dg.Config):
    """Gradient features (METHODS.md §5.5; see `influence.datastore.FeatureSettings`). The model and
    template are V's (`reference_responses`). Defaults are LESS's except the LoRA size, which is
    kept CPU-sized (r 8, alpha 32: LESS's alpha/r = 4); configs/influence-paper.yaml has r 128, alpha 512."""

    lora_r: int = Field(default=8, ge=1, description="LoRA rank (LESS: 128)")
    lora_alpha: int = Field(default=32, ge=1, description="LoRA alpha (LESS: 512)")
    lora_dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="LoRA dropout during the warm-up")
    proj_dim: int = Field(default=8192, ge=4, description="random projection dimension (a multiple of 4)")
    proj_seed: int = Field(default=0, description="projection seed")
    max_length: int = Field(default=2048, ge=8, description="tokens per example")
    shard_size: int = Field(default=16, ge=1, description="examples per resumable shard")
    max_batch_tokens: int = Field(default=4096, ge=8, description="token budget of one forward/backward pass")
    warmup_epochs: int = Field(default=4, ge=0, description="warm-up epochs, one checkpoint each; 0 = no warm-up")
    warmup_fraction: float = Field(default=0.05, gt=0.0, le=1.0, description="share of training rows warmed up on")
    warmup_batch_size: int = Field(default=32, ge=1, description="examples per warm-up optimizer step")
    warmup_lr: float = Field(default=2e-5, gt=0.0, description="warm-up peak learning rate (linear schedule)")
    max_examples: int = Field(default=0, ge=0, description="a seeded sample of this many training rows; 0 = all")
    seed: int = Field(default=0, description="seed of the warm-up share, adapter init and dropout")
    device: DeviceName = Field(default="auto", description="auto = cuda when present, else cpu")
    dtype: DtypeName = Field(default="auto", description="auto = bfloat16 on cuda, float32 on cpu")
    compute: ComputeConfig = Field(
        default_factory=ComputeConfig, description="local, or chunks on Ray workers (README Scale out)"
    )

    def settings(self, model: str) -> FeatureSettings:
        """The plain settings of `compute_checkpoint_features` for the scoring `model`."""
        return FeatureSettings(model=model, **self.model_dump(exclude={"max_examples", "compute"}))


@dg.asset(
    group_name="influence",
    kinds={"numpy"},
    deps=["solutions", "embeddings", "question_pool", "reference_responses"],
    pool="gpu",
)
def gradient_features(
    context: dg.AssetExecutionContext, config: FeatureConfig, store: TableStore
) -> dg.MaterializeResult:
    """LESS's datastore: a LoRA warm-up on a share of the training rows (the QaDS reasoning
    candidates whose problem is not in V), then per checkpoint the unit projected gradients of the
    scored rows (Adam) and of V (SGD). Shards are written as they finish and warm-up checkpoints
    per epoch, so a rerun after a crash computes only what is missing."""
    inputs = influence_inputs(
        store.read_all("solutions", columns=["sample_id", "problem_id", "question", "response"]),
        store.read("embeddings", columns=["candidate_id", "kind"]),
        store.read_all("question_pool", columns=["problem_id", "parent_problem_id"]),
        store.read("reference_responses"),
        max_examples=config.max_examples,
        max_length=config.max_length,
        warmup_fraction=config.warmup_fraction,
        seed=config.seed,
    )
    with store.folder("gradient_features", mode="update") as root:
        report = compute_checkpoint_features(
            inputs.train,
            inputs.val,
            root,
            config.settings(inputs.scoring_model),
            inputs.warmup,
            compute=config.compute.ray(),
        )
    splits = [("train", e.example_id) for e in inputs.train] + [("val", e.example_id) for e in inputs.val]
    splits += [("heldout", i) for i in inputs.heldout_ids]
    table = pa.table({"example_id": [i for _, i in splits], "split": [s for s, _ in splits]})
    path = store.write(table, "gradient_features")
    return dg.MaterializeResult(
        metadata={
            **table_metadata(table, path),
            **counts_metadata({**inputs.counts, **{k: v for k, v in report.items() if isinstance(v, int)}}),
            "features_dir": dg.MetadataValue.path(store.folder_url("gradient_features")),
            "scoring_model": inputs.scoring_model,
            "grad_type_train": report["grad_type_train"],
            "lora": f"r={config.lora_r}, alpha={config.lora_alpha}",
            "proj_dim": config.proj_dim,
        }
    )


class InfluenceConfig(dg.Config):
    """The perplexity baseline's settings (its model and template are V's, as for the features)."""

    max_length: int = Field(default=2048, ge=8, description="tokens per example")
    max_batch_tokens: int = Field(default=4096, ge=8, description="token budget of one forward pass")
    device: DeviceName = Field(default="auto", description="auto = cuda when present, else cpu")
    dtype: DtypeName = Field(default="auto", description="auto = bfloat16 on cuda, float32 on cpu")


@dg.asset(
    group_name="influence",
    kinds={"parquet"},
    deps=["gradient_features", "reference_responses", "solutions", "question_pool"],
    pool="gpu",
    check_specs=[HELDOUT_CHECK_SPEC],
)
def influence_scores(
    context: dg.AssetExecutionContext, config: InfluenceConfig, store: TableStore
) -> dg.MaterializeResult:
    """Per training row: s_C (influence toward correct validation responses) and s_I (toward
    incorrect ones; positive = pushes toward them), mean and max over V, each a learning-rate
    weighted sum over the warm-up checkpoints; the fused rank; the baselines (perplexity,
    embedding similarity to V's questions, random); held-out rows flagged. Positive influence
    means a gradient step on the example lowers the validation loss (see `influence/scores.py`)."""
    checkpoints = load_checkpoint_features(store.fetch_folder("gradient_features"))
    refs, features = store.read("reference_responses"), store.read("gradient_features")
    solutions = store.read_all("solutions", columns=["sample_id", "problem_id", "question", "response"])
    train_ids, by_id = checkpoints[0].train_ids, {r["example_id"]: r for r in refs.to_pylist()}
    perplexity, similarity = baseline_scores(train_ids, solutions, refs, **config.model_dump())
    table, notes = influence_table(
        train_ids,
        [(c.weight, c.train, c.val) for c in checkpoints],
        np.asarray([by_id[i]["correct"] for i in checkpoints[0].val_ids], dtype=bool),
        [by_id[i]["problem_id"] for i in checkpoints[0].val_ids],
        perplexity=perplexity,
        similarity=similarity,
        heldout_ids=features.filter(pc.field("split") == "heldout").column("example_id").to_pylist(),
    )
    for note in notes:
        context.log.warning(note)
    path = store.write(table, "influence_scores")
    roots = problem_roots(store.read_all("question_pool", columns=["problem_id", "parent_problem_id"]))
    shared = shared_problems(train_ids, solutions, roots, refs.column("problem_id").to_pylist())
    v_correct = int(sum(by_id[i]["correct"] for i in checkpoints[0].val_ids))
    return dg.MaterializeResult(
        metadata={
            **table_metadata(table, path),
            **counts_metadata({"v_correct": v_correct, "v_incorrect": len(checkpoints[0].val_ids) - v_correct}),
            "checkpoint_weights": dg.MetadataValue.json({c.name: c.weight for c in checkpoints}),
        },
        check_results=[heldout_check(shared)],
    )
