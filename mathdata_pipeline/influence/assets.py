"""Influence-based pruning (METHODS.md §5): `reference_responses` (V_C and V_I),
`gradient_features` (LESS-style projected LoRA gradients, in resumable shards) and
`influence_scores` (s_C, s_I, fused rank, and the baselines). Pruning itself is a decision of the
mixture spec (`reasoning.influence_prune`), applied in `selections`."""

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from mathdata_pipeline.common.metadata import counts_metadata, generation_metadata, table_metadata
from mathdata_pipeline.common.samples import SampleSpec, draw_samples
from mathdata_pipeline.common.subsets import solver_subset
from mathdata_pipeline.common.templates import TemplateName, get_template
from mathdata_pipeline.engines.base import SamplingParams
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.engines.runner import GenerationStats
from mathdata_pipeline.grading import Grader
from mathdata_pipeline.influence.baselines import baseline_scores
from mathdata_pipeline.influence.examples import as_examples, sample_training_rows, validation_rows
from mathdata_pipeline.influence.gradient_features import FeatureSettings, compute_train_and_val_features, load_features
from mathdata_pipeline.influence.scores import influence_table
from mathdata_pipeline.storage.resources import TableStore


class ReferenceConfig(dg.Config):
    """The validation set V: `problems` seed problems (a seeded sample, disjoint from the
    benchmarks because seeds are checked against them) with `samples` responses each, graded.
    `include_reference_solutions` adds each gold solution to V_C, so a weak model still has one."""

    problems: int = Field(default=200, ge=1, description="validation problems")
    samples: int = Field(default=4, ge=1, description="responses sampled per problem")
    template: TemplateName = Field(default="chat")
    temperature: float = Field(default=0.7, ge=0.0, le=5.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(default=1024, ge=1)
    include_reference_solutions: bool = Field(default=True, description="add each gold solution to V_C")
    salt: str = Field(default="influence-validation", description="salt of the problem subset and sample seeds")


@dg.asset(group_name="influence", kinds={"parquet"}, deps=["question_pool"], pool="gpu")
def reference_responses(
    context: dg.AssetExecutionContext, config: ReferenceConfig, llm: LLMResource, store: TableStore
) -> dg.MaterializeResult:
    """Validation responses, graded against the gold answer: `correct` true rows are V_C, false V_I."""
    pool = store.read_all("question_pool").filter(pc.field("origin") == "seed")
    problems = solver_subset(pool, max_questions=config.problems, salt=config.salt).to_pylist()
    specs = [SampleSpec(p["problem_id"], p["question"], k, 0) for p in problems for k in range(config.samples)]
    stats: list[GenerationStats] = []
    with Grader() as grader:
        samples = draw_samples(
            specs,
            template=get_template(config.template),
            seed_salt=config.salt,
            params=SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens),
            model=llm.model_id(),
            generate=llm.generate_fn(context, stats, ledger_name="influence_validation"),
            references={p["problem_id"]: p["reference_answer"] for p in problems},
            grade=grader.grade_many,
        )
    table = validation_rows(problems, samples, include_reference_solutions=config.include_reference_solutions)
    path = store.write(table, "reference_responses")
    correct = table.column("correct").to_numpy(zero_copy_only=False)
    sampled = np.asarray(table.column("kind").to_pylist()) == "sampled"
    return dg.MaterializeResult(
        metadata={
            **table_metadata(table, path),
            **generation_metadata(GenerationStats.combine(stats)),
            **counts_metadata(
                {
                    "v_correct": int(correct.sum()),
                    "v_incorrect": int((~correct).sum()),
                    "v_correct_sampled": int((correct & sampled).sum()),
                }
            ),
        }
    )


class FeatureConfig(dg.Config):
    """Gradient features (METHODS.md §5.5); see `influence.gradient_features.FeatureSettings`."""

    model: str = Field(default="embedded", description="scoring model: embedded, a folder or a hub id")
    lora_r: int = Field(default=8, ge=1, description="LoRA rank")
    lora_alpha: int = Field(default=16, ge=1, description="LoRA alpha")
    proj_dim: int = Field(default=8192, ge=1, description="random projection dimension")
    proj_seed: int = Field(default=0, description="projection seed")
    max_length: int = Field(default=2048, ge=8, description="tokens per example")
    shard_size: int = Field(default=16, ge=1, description="examples per resumable shard")
    warmup_steps: int = Field(default=0, ge=0, description="LoRA warm-up steps; 0 = no warm-up (plain gradients)")
    warmup_fraction: float = Field(default=0.05, gt=0.0, le=1.0, description="share of training rows the warm-up sees")
    warmup_lr: float = Field(default=2e-5, gt=0.0, description="warm-up learning rate")
    max_examples: int = Field(default=0, ge=0, description="a seeded sample of this many training rows; 0 = all")
    seed: int = Field(default=0)

    def settings(self) -> FeatureSettings:
        """The plain settings of `compute_train_and_val_features`."""
        return FeatureSettings(**self.model_dump(exclude={"max_examples"}))


@dg.asset(group_name="influence", kinds={"numpy"}, deps=["solutions", "reference_responses"], pool="gpu")
def gradient_features(
    context: dg.AssetExecutionContext, config: FeatureConfig, store: TableStore
) -> dg.MaterializeResult:
    """Unit-normalized projected gradients of every solution (train) and validation response;
    shards are written as they finish, so a rerun after a crash computes only the missing ones."""
    train = as_examples(sample_training_rows(store.read_all("solutions"), config.max_examples), "sample_id")
    root = store.local_dir("gradient_features", purpose="gradient_features")
    report = compute_train_and_val_features(
        train, as_examples(store.read("reference_responses"), "example_id"), root, config.settings()
    )
    ids, _ = load_features(root / "train")
    table = pa.table({"example_id": ids, "split": ["train"] * len(ids)})
    path = store.write(table, "gradient_features")
    return dg.MaterializeResult(
        metadata={
            **table_metadata(table, path),
            **counts_metadata({k: v for k, v in report.items() if isinstance(v, int)}),
            "features_dir": dg.MetadataValue.path(str(root)),
            "grad_type_train": report["grad_type_train"],
            "proj_dim": config.proj_dim,
        }
    )


class InfluenceConfig(dg.Config):
    """The scoring model for the perplexity baseline (the same one that made the features)."""

    model: str = Field(default="embedded", description="scoring model: embedded, a folder or a hub id")
    max_length: int = Field(default=2048, ge=8, description="tokens per example")


@dg.asset(group_name="influence", kinds={"parquet"}, deps=["gradient_features", "reference_responses"])
def influence_scores(
    context: dg.AssetExecutionContext, config: InfluenceConfig, store: TableStore
) -> dg.MaterializeResult:
    """Per training solution: s_C (mean influence toward correct validation responses), s_I
    (toward incorrect ones; positive = pushes toward them), their fused rank, and the baselines
    (random, embedding similarity to the validation questions, perplexity). Positive influence
    means a gradient step on the example lowers the validation loss (see `influence/scores.py`)."""
    root = store.local_dir("gradient_features", purpose="influence_scores")
    (train_ids, train), (val_ids, val) = load_features(root / "train"), load_features(root / "val")
    refs = store.read("reference_responses")
    perplexity, similarity = baseline_scores(
        train_ids,
        store.read_all("solutions", columns=["sample_id", "question", "response"]),
        refs,
        model=config.model,
        max_length=config.max_length,
    )
    correct = dict(zip(refs.column("example_id").to_pylist(), refs.column("correct").to_pylist()))
    table, notes = influence_table(
        train_ids, train, val_ids, val, correct, perplexity=perplexity, similarity=similarity
    )
    for note in notes:
        context.log.warning(note)
    path = store.write(table, "influence_scores")
    v_correct = sum(bool(correct[i]) for i in val_ids)
    return dg.MaterializeResult(
        metadata={
            **table_metadata(table, path),
            **counts_metadata({"v_correct": v_correct, "v_incorrect": len(val_ids) - v_correct}),
        }
    )
