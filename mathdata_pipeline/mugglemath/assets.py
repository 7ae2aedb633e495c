"""MuggleMath stages: `augmented_questions` and `augmented_responses`."""

from typing import Literal

import dagster as dg
import pyarrow as pa
from pydantic import Field

from mathdata_pipeline.common.metadata import counts_metadata, generation_metadata, table_metadata
from mathdata_pipeline.common.partitions import seed_sources
from mathdata_pipeline.common.samples import SampleSpec, draw_samples
from mathdata_pipeline.common.subsets import solver_subset
from mathdata_pipeline.common.templates import TemplateName, get_template
from mathdata_pipeline.common.text import params_hash
from mathdata_pipeline.decontamination.checks import contamination_check, contamination_check_spec
from mathdata_pipeline.decontamination.filter import drop_benchmark_overlap
from mathdata_pipeline.engines.base import SamplingParams
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.engines.runner import GenerationStats
from mathdata_pipeline.grading import Grader
from mathdata_pipeline.mugglemath.prompts import AUGMATH, REWRITE_TYPES, RewriteType
from mathdata_pipeline.mugglemath.responses import solution_ballots, vote_columns
from mathdata_pipeline.mugglemath.rewrites import RewriteJob, new_problems, rewrite_jobs
from mathdata_pipeline.storage.resources import TableStore


class AugmentConfig(dg.Config):
    """Query augmentation (METHODS.md §4): which rewrites, how many questions per reply, the rounds
    (one engine profile each: the paper runs three rounds on the same seeds with GPT-3.5, GPT-4 and
    GPT-3.5), on how many seeds, and the sampling settings."""

    rewrite_types: list[RewriteType] = Field(
        default=list(REWRITE_TYPES), validate_default=True, description="rewrite types to run"
    )
    questions_per_rewrite: int = Field(
        default=3, ge=1, le=20, description="new questions per reply (per type; AugMATH: variations per seed)"
    )
    round_profiles: list[str] = Field(
        default=["", "", ""],
        min_length=1,
        description="one engine profile per round, in order; empty = the llm resource's profile",
    )
    max_seeds: int = Field(default=0, ge=0, description="a salted subset of this many seeds; 0 = all")
    prompt_variant: Literal["", "gsm8k", "math", "augmath"] = Field(
        default="",
        description='empty = "augmath" (question + solution, the paper\'s AugMATH) for a source called math, '
        'else "gsm8k"; "math" rewrites MATH questions without solutions',
    )
    temperature: float = Field(default=0.7, ge=0.0, le=5.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(default=1024, ge=1, description="new tokens per reply")
    seed_salt: str = Field(default="mugglemath", description="salt of request seeds and of the seed subset")


class AugmentResponseConfig(dg.Config):
    """Responses to augmented questions (no gold answer): samples per question, sampling, the
    prompt template, and the share of the votes the majority answer needs (`grading.voting`)."""

    samples_per_question: int = Field(default=5, ge=1, description="responses sampled per question")
    template: TemplateName = Field(default="chat", description="prompt template")
    temperature: float = Field(default=0.7, ge=0.0, le=5.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(default=1024, ge=1, description="new tokens per response")
    min_agreement: float = Field(
        default=0.5, ge=0.0, le=1.0, description="share of the votes (responses not cut off) the majority answer needs"
    )
    seed_salt: str = Field(default="mugglemath-responses", description="salt of the sample seeds")


def _generate_rounds(
    context: dg.AssetExecutionContext, llm: LLMResource, jobs: list[RewriteJob], profiles: list[str], ledger: str
) -> tuple[list, dict[int, str], GenerationStats]:
    """Every round's requests on that round's engine profile: (results aligned with `jobs`,
    {round: model id}, the combined statistics)."""
    results: list = [None] * len(jobs)
    models, stats = {}, []
    for round_, profile in enumerate(profiles):
        indices = [i for i, job in enumerate(jobs) if job.round == round_]
        models[round_] = llm.model_id(profile)
        done, round_stats = llm.generate(
            context,
            [jobs[i].request for i in indices],
            ledger_name=ledger,
            row_ids=[f"{jobs[i].parent_id}:{jobs[i].rewrite_type}:{round_}" for i in indices],
            profile=profile,
        )
        stats.append(round_stats)
        for i, result in zip(indices, done):
            results[i] = result
    return results, models, GenerationStats.combine(stats)


@dg.asset(
    partitions_def=seed_sources,
    group_name="augmentation",
    kinds={"parquet"},
    pool="gpu",
    deps=["seed_problems", "contamination_index"],
    check_specs=[contamination_check_spec("augmented_questions", blocking=True, partitions_def=seed_sources)],
)
def augmented_questions(
    context: dg.AssetExecutionContext, config: AugmentConfig, llm: LLMResource, store: TableStore
) -> dg.MaterializeResult:
    """New questions rewritten from seeds with MuggleMath's five rewrite types, one round per engine
    profile (AugMATH: new questions with their solutions); parsed, deduplicated against the seeds
    and each other, and cleared of benchmark overlap (all drops counted)."""
    source = context.partition_key
    seeds = solver_subset(store.read("seed_problems", source), max_questions=config.max_seeds, salt=config.seed_salt)
    params = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens)
    jobs, skipped = rewrite_jobs(
        seeds,
        types=[RewriteType(t).value for t in config.rewrite_types],
        k=config.questions_per_rewrite,
        rounds=len(config.round_profiles),
        variant=config.prompt_variant or (AUGMATH if source == "math" else "gsm8k"),
        params=params,
        salt=config.seed_salt,
    )
    results, models, stats = _generate_rounds(context, llm, jobs, config.round_profiles, f"augment/{source}")
    table, counts = new_problems(
        seeds,
        jobs,
        results,
        source=source,
        k=config.questions_per_rewrite,
        params_hash=params_hash(config.model_dump(mode="json")),
        models=models,
    )
    counts.update(skipped)
    table, counts["dropped_benchmark_overlap"] = drop_benchmark_overlap(table, store.read("contamination_index"))
    path = store.write(table, "augmented_questions", source)
    check = contamination_check(
        store, table, asset_key="augmented_questions", partition=source, id_column="problem_id", text_column="question"
    )
    return dg.MaterializeResult(
        metadata={
            **table_metadata(table, path),
            **generation_metadata(stats),
            **counts_metadata(counts),
            "seeds_used": seeds.num_rows,
            "round_models": dg.MetadataValue.json({str(r): m for r, m in models.items()}),
        },
        check_results=[check],
    )


@dg.asset(
    partitions_def=seed_sources, group_name="augmentation", kinds={"parquet"}, pool="gpu", deps=["augmented_questions"]
)
def augmented_responses(
    context: dg.AssetExecutionContext, config: AugmentResponseConfig, llm: LLMResource, store: TableStore
) -> dg.MaterializeResult:
    """Sampled responses to every augmented question, with the majority-vote answer (an AugMATH
    question's own solution is its first ballot), the GSM8K calculator-annotation check and
    deduplication by equation sequence; `kept` marks the responses that become solutions."""
    source = context.partition_key
    augmented = store.read("augmented_questions", source)
    questions = augmented.select(["problem_id", "question"]).to_pylist()
    specs = [
        SampleSpec(q["problem_id"], q["question"], k, 0) for q in questions for k in range(config.samples_per_question)
    ]
    stats: list[GenerationStats] = []
    samples = draw_samples(
        specs,
        template=get_template(config.template),
        seed_salt=config.seed_salt,
        params=SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens),
        model=llm.model_id(),
        generate=llm.generate_fn(context, stats, ledger_name=f"augment/{source}"),
    )
    with Grader() as grader:
        table, counts = vote_columns(
            pa.concat_tables([solution_ballots(augmented), samples]),
            grader,
            check_annotations=(source == "gsm8k"),
            min_share=config.min_agreement,
        )
    path = store.write(table, "augmented_responses", source)
    return dg.MaterializeResult(
        metadata={
            **table_metadata(table, path),
            **generation_metadata(GenerationStats.combine(stats)),
            **counts_metadata(counts),
        }
    )
