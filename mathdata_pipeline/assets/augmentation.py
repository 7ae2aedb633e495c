"""MuggleMath stages: `augmented_questions` and `augmented_responses`."""

import dagster as dg

from mathdata_pipeline.assets.contamination import contamination_check, contamination_check_spec
from mathdata_pipeline.assets.metadata import counts_metadata, generation_metadata, table_metadata
from mathdata_pipeline.assets.partitions import seed_sources
from mathdata_pipeline.engines.base import SamplingParams
from mathdata_pipeline.methods.augmentation import new_problems, params_hash, rewrite_jobs, vote_columns
from mathdata_pipeline.methods.mugglemath_prompts import REWRITE_TYPES
from mathdata_pipeline.methods.pool import drop_benchmark_overlap, solver_subset
from mathdata_pipeline.methods.samples import SampleSpec, sample_rows, solve_request
from mathdata_pipeline.methods.templates import get_template
from mathdata_pipeline.resources.llm import LLMResource
from mathdata_pipeline.resources.table_store import TableStore


class AugmentConfig(dg.Config):
    """Query augmentation: which rewrite types, how many questions per reply, how many rounds,
    on how many seeds (0 = all), and the sampling settings. `prompt_variant` empty = "math" for a
    source called math, else "gsm8k"."""

    rewrite_types: list[str] = list(REWRITE_TYPES)
    questions_per_rewrite: int = 3
    rounds: int = 1
    max_seeds: int = 0
    prompt_variant: str = ""
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 1024
    seed_salt: str = "mugglemath"


class AugmentResponseConfig(dg.Config):
    """Responses to augmented questions (no gold answer): samples per question, sampling, the
    prompt template, and the majority-vote agreement a question needs to get an answer."""

    samples_per_question: int = 5
    template: str = "chat"
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 1024
    min_agreement: float = 0.5
    seed_salt: str = "mugglemath-responses"


@dg.asset(partitions_def=seed_sources, group_name="augmentation", kinds={"parquet"}, pool="gpu",
          deps=["seed_problems", "contamination_index"],
          check_specs=[contamination_check_spec("augmented_questions", blocking=True)])
def augmented_questions(context: dg.AssetExecutionContext, config: AugmentConfig, llm: LLMResource,
                        store: TableStore) -> dg.MaterializeResult:
    """New questions rewritten from seeds with MuggleMath's five rewrite types; parsed, deduplicated
    against the seeds and each other, and cleared of benchmark overlap (all drops counted)."""
    source = context.partition_key
    seeds = solver_subset(store.read("seed_problems", source), max_questions=config.max_seeds, salt=config.seed_salt)
    variant = config.prompt_variant or ("math" if source == "math" else "gsm8k")
    params = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens)
    jobs = rewrite_jobs(seeds, types=config.rewrite_types, k=config.questions_per_rewrite, rounds=config.rounds,
                        variant=variant, params=params, salt=config.seed_salt)
    results, stats = llm.generate(context, [j.request for j in jobs], ledger_name=f"augment/{source}",
                                  row_ids=[f"{j.parent_id}:{j.rewrite_type}:{j.round}" for j in jobs])
    table, counts = new_problems(seeds, jobs, results, source=source, k=config.questions_per_rewrite,
                                 params_hash=params_hash(config.model_dump()))
    table, counts["dropped_benchmark_overlap"] = drop_benchmark_overlap(table, store.read("contamination_index"))
    path = store.write(table, "augmented_questions", source)
    check = contamination_check(store, table, asset_key="augmented_questions", partition=source,
                                id_column="problem_id", text_column="question")
    return dg.MaterializeResult(metadata={**table_metadata(table, path), **generation_metadata(stats),
                                          **counts_metadata(counts), "seeds_used": seeds.num_rows},
                                check_results=[check])


@dg.asset(partitions_def=seed_sources, group_name="augmentation", kinds={"parquet"}, pool="gpu",
          deps=["augmented_questions"])
def augmented_responses(context: dg.AssetExecutionContext, config: AugmentResponseConfig, llm: LLMResource,
                        store: TableStore) -> dg.MaterializeResult:
    """Sampled responses to every augmented question, with the majority-vote answer, the GSM8K
    calculator-annotation check and deduplication by equation sequence; `kept` marks the
    responses that become solutions."""
    source = context.partition_key
    questions = store.read("augmented_questions", source)
    template = get_template(config.template)
    params = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens)
    specs = [SampleSpec(r["problem_id"], r["question"], k, 0) for r in questions.select(["problem_id", "question"]).to_pylist()
             for k in range(config.samples_per_question)]
    requests = [solve_request(template, s, params, seed_salt=config.seed_salt) for s in specs]
    results, stats = llm.generate(context, requests, ledger_name=f"augment/{source}",
                                  row_ids=[f"{s.problem_id}#{s.sample_index}" for s in specs])
    samples = sample_rows(specs, requests, results, model=llm.engine().info.model_id, template=template.name,
                          extracted=[None] * len(specs), correct=[None] * len(specs), grader="majority-vote")
    table, counts = vote_columns(samples, check_annotations=(source == "gsm8k"), min_agreement=config.min_agreement)
    path = store.write(table, "augmented_responses", source)
    return dg.MaterializeResult(metadata={**table_metadata(table, path), **generation_metadata(stats),
                                          **counts_metadata(counts)})
