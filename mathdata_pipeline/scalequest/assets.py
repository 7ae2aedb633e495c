"""ScaleQuest stages: `question_generator` (QFT, QPO), `synthesized_questions` (prefix trick +
filters) and `synthesized_responses` (best of n)."""

import json
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from mathdata_pipeline.common.devices import Device, DType
from mathdata_pipeline.common.hf_models import chat_template, model_config
from mathdata_pipeline.common.metadata import counts_metadata, generation_metadata, table_metadata
from mathdata_pipeline.common.partitions import synthesis_shards
from mathdata_pipeline.common.plots import bar_chart
from mathdata_pipeline.common.samples import SampleSpec, draw_samples
from mathdata_pipeline.common.subsets import solver_subset
from mathdata_pipeline.common.templates import TemplateName, get_template
from mathdata_pipeline.common.text import params_hash
from mathdata_pipeline.decontamination.checks import contamination_check, contamination_check_spec
from mathdata_pipeline.decontamination.index import ContaminationIndex
from mathdata_pipeline.engines.base import Request, SamplingParams
from mathdata_pipeline.engines.factory import load_profile
from mathdata_pipeline.engines.fingerprint import file_digest
from mathdata_pipeline.engines.local import embedded_gguf_path
from mathdata_pipeline.engines.resources import LLMResource
from mathdata_pipeline.engines.runner import GenerationStats
from mathdata_pipeline.grading import Grader
from mathdata_pipeline.grading.voting import vote_on_samples
from mathdata_pipeline.qads.embeddings import SentenceEmbedder
from mathdata_pipeline.scalequest.best_of_n import RewardScorer
from mathdata_pipeline.scalequest.difficulty import (
    fail_rates_from_samples,
    fit_difficulty_scorer,
    label_table,
    load_scorer,
    scorer_table,
)
from mathdata_pipeline.scalequest.filters import difficulty_scores_from_model
from mathdata_pipeline.scalequest.generator import (
    DEFAULT_VARIANT,
    GeneratorRun,
    QpoPlan,
    gguf_template_for,
    latest_stage,
    train_question_generator,
    variant_dir,
)
from mathdata_pipeline.scalequest.prefix import clean_question, judge_messages, resolve_prefix, synthesis_requests
from mathdata_pipeline.scalequest.reuse import (
    forget_generator,
    generator_fingerprint,
    record_generator,
    reusable_generator,
)
from mathdata_pipeline.scalequest.rows import kept_responses, question_rows
from mathdata_pipeline.scalequest.synthesis import (
    FilterRun,
    FilterSettings,
    earlier_shards,
    filter_questions,
    vectors_table,
)
from mathdata_pipeline.scalequest.training import QftConfig, QpoConfig
from mathdata_pipeline.storage.resources import TableStore

PrefixName = Literal["auto", "qwen2-math", "deepseekmath"]


class GeneratorConfig(dg.Config):
    """Question-generator training (METHODS.md §3.3): QFT on seed questions, then QPO on pairs
    (the optimizer LLM's rewrite = chosen, the original = rejected). Paper defaults;
    `configs/demo.yaml` shrinks them to a few CPU steps. Any Hugging Face causal LM can be the
    base; each trained generator is a named `variant`, kept beside the others."""

    base: str = Field(default="embedded", description="model to fine-tune: embedded, a folder or a hub id")
    variant: str = Field(
        default=DEFAULT_VARIANT, description="name of this generator; synthesized_questions picks one by name"
    )
    prefix: PrefixName = Field(
        default="auto", description="user-turn prefix: auto = from the base model's chat template"
    )
    prefix_system: str = Field(
        default="",
        description="auto prefix: system message it opens with (empty = the template's own; not in the paper, "
        "a steer for a small generator; synthesized_questions must use the same)",
    )
    generator_profile: str = Field(
        default="",
        description="engine profile that serves the trained generator (QPO's questions); local (llama.cpp) "
        "needs a GGUF export, vllm loads hf/; empty = the llm resource's",
    )
    gguf_template: str = Field(
        default="embedded", description="GGUF of the base model whose metadata the export copies (llama only)"
    )
    qft_questions: int = Field(default=15000, ge=1, description="seed questions QFT trains on")
    qft_max_steps: int = Field(default=0, ge=0, description="QFT optimizer steps; 0 = one epoch")
    qft_learning_rate: float | None = Field(
        default=None, gt=0, description="QFT learning rate; empty = 2e-5 full fine-tuning, 2e-4 LoRA"
    )
    qft_batch_tokens: int = Field(default=4096, ge=1, description="QFT token budget of one device batch")
    use_lora: bool = Field(
        default=True, description="LoRA adapters (merged after training) instead of full fine-tuning, QFT and QPO"
    )
    qpo: bool = Field(default=True, description="run QPO after QFT")
    qpo_questions: int = Field(default=10000, ge=1, description="questions the QFT model writes for QPO")
    qpo_rewrite: Literal["solvability", "difficulty"] = Field(
        default="solvability", description="what the optimizer improves"
    )
    question_max_tokens: int = Field(default=1024, ge=1, description="tokens per question the QFT model writes")
    optimizer_profile: str = Field(
        default="", description="engine profile of the optimizer LLM; empty = the llm resource's"
    )
    rewrite_max_tokens: int = Field(default=1024, ge=1, description="tokens per optimizer rewrite")
    qpo_max_steps: int = Field(default=0, ge=0, description="QPO optimizer steps; 0 = one epoch")
    qpo_learning_rate: float | None = Field(
        default=None, gt=0, description="QPO learning rate; empty = 5e-7 full fine-tuning (paper), 2.5e-5 LoRA"
    )
    qpo_batch: int = Field(default=8, ge=1, description="QPO pairs per device batch, at most")
    qpo_batch_tokens: int = Field(default=16384, ge=1, description="QPO token budget of one device batch")
    qpo_min_pairs: int = Field(default=2, ge=1, description="skip QPO (with a warning) below this many parsed pairs")
    device: Device = Field(default="auto", description="torch device for training: auto = CUDA when present")
    dtype: DType = Field(default="auto", description="auto = bfloat16 compute on CUDA, float32 on the CPU")
    qpo_judge: bool = Field(
        default=True, description="a judge checks each chosen rewrite: solvable and no easier than the original"
    )
    judge_profile: str = Field(default="", description="engine profile of the QPO judge; empty = the llm resource's")
    judge_max_tokens: int = Field(default=2048, ge=1, description="tokens per QPO judgement")
    reference_verdict: bool = Field(default=False, description='QPO judge: the paper\'s rule, any "yes" passes')
    seed: int = Field(default=0, description="training seed")

    def qft_config(self, gguf_template: str) -> QftConfig:
        """The QFT settings, exporting a GGUF with `gguf_template` ("" = none)."""
        return QftConfig(
            base=self.base,
            max_steps=self.qft_max_steps,
            learning_rate=self.qft_learning_rate,
            use_lora=self.use_lora,
            seed=self.seed,
            device=self.device,
            dtype=self.dtype,
            batch_tokens=self.qft_batch_tokens,
            gguf_template=gguf_template,
        )

    def qpo_plan(self, gguf_template: str) -> QpoPlan | None:
        """The QPO plan (None when QPO is off), exporting a GGUF with `gguf_template` ("" = none)."""
        if not self.qpo:
            return None
        training = QpoConfig(
            max_steps=self.qpo_max_steps,
            learning_rate=self.qpo_learning_rate,
            use_lora=self.use_lora,
            per_device_batch=self.qpo_batch,
            seed=self.seed,
            device=self.device,
            dtype=self.dtype,
            batch_tokens=self.qpo_batch_tokens,
            gguf_template=gguf_template,
        )
        return QpoPlan(
            questions=self.qpo_questions,
            question_max_tokens=self.question_max_tokens,
            rewrite_kind=self.qpo_rewrite,
            rewrite_max_tokens=self.rewrite_max_tokens,
            min_pairs=self.qpo_min_pairs,
            training=training,
            judge_max_tokens=self.judge_max_tokens,
            judge_any_yes=self.reference_verdict,
        )


def _variant_folder(variant: str) -> tuple[str, ...]:
    """The folder of generator variant `variant` under the storage root, as path components."""
    return variant_dir(Path("question_generator"), variant).parts


@dg.asset(group_name="synthesis", kinds={"pytorch"}, deps=["seed_problems"], pool="gpu")
def question_generator(
    context: dg.AssetExecutionContext, config: GeneratorConfig, llm: LLMResource, store: TableStore
) -> dg.MaterializeResult:
    """QFT (and QPO) of the question generator `variant`; the trained model sits under
    `<storage>/question_generator/<variant>/{qft,qpo}/` as merged weights (`hf/`) and, when it is
    served by llama.cpp, `model.gguf`. A variant already trained from the same base, seed questions,
    prefix, settings and engine profiles is reused (metadata `reused`, `fingerprint`)."""
    serving = llm.profile_name(config.generator_profile)
    base_config = model_config(config.base)
    gguf_template, gguf_skipped = gguf_template_for(
        load_profile(serving).backend, serving, base_config, config.gguf_template
    )
    prefix = resolve_prefix(config.prefix, chat_template(config.base), config.prefix_system)
    seeds = store.read_all("seed_problems", columns=["problem_id", "question", "reference_answer"])
    questions = solver_subset(seeds, max_questions=config.qft_questions, salt="qft").column("question").to_pylist()
    stats: list = []
    qft, qpo = config.qft_config(gguf_template), config.qpo_plan(gguf_template)
    key = generator_fingerprint(
        base_identity=_base_identity(config.base, base_config),
        questions=questions,
        prefix=prefix,
        qft=qft,
        qpo=qpo,
        profiles=_qpo_profiles(config, llm),
    )
    with store.folder(*_variant_folder(config.variant), mode="update") as root:
        reused = reusable_generator(root, key)
        if reused is not None:
            context.log.info(f"question generator {config.variant!r} with fingerprint {key} already trained: reused")
        else:
            forget_generator(root)
            run = _train_generator(context, config, llm, questions, prefix, root, qft, qpo, stats)
            record_generator(root, key, run.metadata())
    metadata = {**(reused or run.metadata()), "reused": reused is not None, "fingerprint": key}
    metadata.update({"variant": config.variant, "gguf": gguf_skipped or "model.gguf written"})
    metadata["qft_model"] = dg.MetadataValue.path(str(root / "qft"))
    if config.qpo and reused is None:
        metadata.update(generation_metadata(GenerationStats.combine(stats)))
    if metadata["latest"] == "qpo":
        metadata["qpo_model"] = dg.MetadataValue.path(str(root / "qpo"))
    return dg.MaterializeResult(metadata=metadata)


def _base_identity(base: str, base_config: dict) -> str:
    """What names the base model's weights for the generator's fingerprint: the embedded GGUF's
    digest, or the name with its transformers config."""
    if base == "embedded":
        return f"embedded@{file_digest(embedded_gguf_path())}"
    return base + json.dumps(base_config, sort_keys=True, default=str)


def _qpo_profiles(config: GeneratorConfig, llm: LLMResource) -> dict[str, str]:
    """The engine profiles QPO's questions, rewrites and judgements come from (empty without QPO)."""
    if not config.qpo:
        return {}
    profiles = {"generator": llm.profile_name(config.generator_profile)}
    profiles["optimizer"] = llm.profile_name(config.optimizer_profile)
    if config.qpo_judge:
        profiles["judge"] = llm.profile_name(config.judge_profile)
    return profiles


def _train_generator(context, config, llm, questions, prefix, root, qft, qpo, stats) -> GeneratorRun:
    """Train the generator variant at `root` (QFT, then QPO with the engines of `config`); the
    engines' generation stats go to `stats`."""
    run = train_question_generator(
        questions,
        prefix,
        root,
        qft,
        qpo,
        generate_questions=llm.generate_fn(
            context, stats, ledger_name="qpo", profile=config.generator_profile, model_dir=root / "qft"
        ),
        rewrite=llm.generate_fn(context, stats, ledger_name="qpo_rewrite", profile=config.optimizer_profile),
        release=llm.close_engine,
        judge=llm.generate_fn(context, stats, ledger_name="qpo_judge", profile=config.judge_profile)
        if config.qpo_judge
        else None,
    )
    if run.skipped:
        context.log.warning(f"QPO skipped: {run.skipped}")
    return run


class SynthesisConfig(dg.Config):
    """Question synthesis and filters (METHODS.md §3.3 steps 3–5; paper defaults). Question filters
    run in order: language, near-duplicates (MiniLM cosine) within the shard and against every
    question earlier shards kept (a FAISS index), benchmark overlap, solvability (LLM judge; the
    final Yes/No verdict, or any "yes" with `reference_verdict`), difficulty (the trained
    `difficulty_scorer`'s predicted fail rate, or a one-scalar `scorer_model`) with
    `difficulty_rule`. Only the questions left get `solver_samples` responses, saved in
    `synthesis_samples/<shard>`; their majority answer (the project's vote) becomes the reference
    answer, and `majority_gate` optionally drops the questions without one. Kept questions join
    `question_pool[pool_source]`."""

    generator: Literal["base", "trained"] = Field(
        default="base", description="base = the generator profile's model; trained = a question_generator variant"
    )
    generator_variant: str = Field(
        default=DEFAULT_VARIANT, description="generator: trained: the question_generator variant that writes"
    )
    generator_profile: str = Field(
        default="", description="engine profile that writes the questions; empty = the llm resource's"
    )
    prefix: PrefixName = Field(
        default="auto", description="user-turn prefix: auto = from the generator's chat template"
    )
    prefix_system: str = Field(
        default="",
        description="auto prefix: system message it opens with (empty = the template's own; not in the paper, "
        "a steer for a small generator; use the question_generator's)",
    )
    questions_per_shard: int = Field(default=2000, ge=1, description="questions generated per shard")
    temperature: float = Field(default=1.0, ge=0.0, le=5.0)
    top_p: float = Field(default=0.99, gt=0.0, le=1.0)
    max_tokens: int = Field(default=1024, ge=1, description="tokens per generated question")
    language: str = Field(
        default="ascii",
        pattern=r"^(ascii|latin|regex:.+)$",
        description="characters a question may use: ascii (the paper), latin (Latin-1, Greek, math symbols) "
        "or regex:<pattern>",
    )
    near_duplicate_threshold: float = Field(
        default=0.95, gt=0.0, le=1.0, description="cosine at which two questions are duplicates"
    )
    solvability: bool = Field(default=True, description="run the LLM judge")
    judge_profile: str = Field(default="", description="engine profile of the judge; empty = the llm resource's")
    judge_max_tokens: int = Field(default=2048, ge=1)
    reference_verdict: bool = Field(default=False, description='the paper\'s rule: any "yes" in the judgement passes')
    difficulty: Literal["trained", "scorer", "none"] = Field(
        default="trained",
        description="trained = the difficulty_scorer asset's model; scorer = scorer_model; none = no difficulty filter",
    )
    scorer_model: str = Field(default="", description="one-scalar model (folder or hub id) for difficulty: scorer")
    scorer_trust_remote_code: bool = Field(
        default=False, description="let scorer_model run its own Python code (README: what this allows)"
    )
    scorer_device: Device = Field(default="auto", description="torch device of the scorer: auto = CUDA when present")
    scorer_dtype: DType = Field(default="auto", description="auto = bfloat16 on CUDA, float32 on the CPU")
    solver_profile: str = Field(default="", description="engine profile of the solver; empty = the llm resource's")
    solver_template: TemplateName = Field(default="chat")
    solver_samples: int = Field(default=5, ge=1, description="solver samples per question (votes)")
    solver_temperature: float = Field(default=0.7, ge=0.0, le=5.0)
    solver_top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    solver_max_tokens: int = Field(default=2048, ge=1)
    min_agreement: float = Field(
        default=0.4, ge=0.0, le=1.0, description="share of the votes the majority answer needs"
    )
    majority_gate: bool = Field(
        default=False, description="drop questions whose responses have no majority answer (not in the paper)"
    )
    difficulty_rule: Literal["none", "drop_easy_fraction", "min_difficulty"] = Field(
        default="min_difficulty", description="how difficulty filters (the paper's sampling rule is unpublished)"
    )
    difficulty_fraction: float = Field(default=0.2, ge=0.0, le=1.0, description="drop_easy_fraction: share dropped")
    difficulty_threshold: float = Field(
        default=0.1, description="min_difficulty: least difficulty (predicted fail rate) kept"
    )
    pool_source: str = Field(default="math", description="question_pool partition the kept questions join")

    def filter_settings(self) -> FilterSettings:
        """The plain settings of `scalequest.synthesis.filter_questions`."""
        return FilterSettings(
            language=self.language,
            near_duplicate_threshold=self.near_duplicate_threshold,
            solvability=self.solvability,
            reference_verdict=self.reference_verdict,
            difficulty_rule=self.difficulty_rule,
            difficulty_fraction=self.difficulty_fraction,
            difficulty_threshold=self.difficulty_threshold,
            majority_gate=self.majority_gate,
        )


def _generate_questions(
    context, config: SynthesisConfig, llm: LLMResource, store: TableStore, shard: str, stats: list[GenerationStats]
) -> pa.Table:
    """One shard of raw questions from the base or trained generator, as problem rows."""
    trained = config.generator == "trained"
    model_dir = latest_stage(store.fetch_folder(*_variant_folder(config.generator_variant))) if trained else None
    engine = llm.engine(config.generator_profile, model_dir)
    prefix = resolve_prefix(config.prefix, engine.chat_template(), config.prefix_system)
    generator_id = engine.info.model_id + (f"@{engine.info.revision}" if model_dir else "")
    requests = synthesis_requests(
        prefix,
        config.questions_per_shard,
        generator_id=generator_id,
        shard=shard,
        temperature=config.temperature,
        top_p=config.top_p,
        max_tokens=config.max_tokens,
    )
    results = llm.generate_fn(
        context, stats, ledger_name="synthesis", profile=config.generator_profile, model_dir=model_dir
    )(requests, None)
    return question_rows(
        [clean_question(getattr(r, "text", ""), prefix) for r in results],
        [r.params.seed for r in requests],
        [getattr(r, "completion_tokens", 0) for r in results],
        generator=generator_id,
        shard=shard,
        source=config.pool_source,
        params_hash=params_hash(config.model_dump()),
    )


def _judge(context, config: SynthesisConfig, llm: LLMResource, stats: list[GenerationStats]):
    """(questions, row ids) -> the judge's raw judgements ("" for a failed request)."""
    params = SamplingParams(temperature=0.0, max_tokens=config.judge_max_tokens, seed=0)
    generate = llm.generate_fn(context, stats, ledger_name="judge", profile=config.judge_profile)
    return lambda questions, ids: [
        getattr(r, "text", "") for r in generate([Request.chat(judge_messages(q), params) for q in questions], ids)
    ]


def _solve(context, config: SynthesisConfig, llm: LLMResource, grader: Grader, stats: list[GenerationStats]):
    """kept questions -> (the solver's samples with the vote's columns, {problem_id: Vote})."""
    params = SamplingParams(
        temperature=config.solver_temperature, top_p=config.solver_top_p, max_tokens=config.solver_max_tokens
    )
    generate = llm.generate_fn(context, stats, ledger_name="solver/synthesized", profile=config.solver_profile)

    def solve(kept: pa.Table):
        specs = [
            SampleSpec(r["problem_id"], r["question"], k, 0)
            for r in kept.select(["problem_id", "question"]).to_pylist()
            for k in range(config.solver_samples)
        ]
        samples = draw_samples(
            specs,
            template=get_template(config.solver_template),
            params=params,
            seed_salt="scalequest-solver",
            model=llm.model_id(config.solver_profile),
            generate=generate,
        )
        return vote_on_samples(samples, grader, min_share=config.min_agreement)

    return solve


def _difficulty_model(config: SynthesisConfig, store: TableStore, embedder: SentenceEmbedder):
    """questions -> difficulty scores: the trained `difficulty_scorer` (on `embedder` when it is the
    scorer's own), `scorer_model`, or None (no difficulty filter)."""
    if config.difficulty == "trained":
        stored = store.read_if_exists("difficulty_scorer_model")
        if stored is None:
            raise ValueError("difficulty: trained needs a trained scorer: materialize difficulty_scorer first")
        scorer = load_scorer(stored)
        embed = embedder.embed if scorer.embedder == embedder.model else SentenceEmbedder(scorer.embedder).embed
        return lambda questions: scorer.score(questions, embed)
    if config.difficulty != "scorer":
        return None
    return lambda questions: difficulty_scores_from_model(
        questions,
        config.scorer_model,
        device=config.scorer_device,
        dtype=config.scorer_dtype,
        trust_remote_code=config.scorer_trust_remote_code,
    )


class DifficultyScorerConfig(dg.Config):
    """The trained difficulty scorer (METHODS.md §3.3 step 4, the paper's way): the solver's fail
    rates on a salted subset of seed problems, graded against their reference answers, regressed
    from the questions' sentence embeddings (ridge); a held-out share measures how well it ranks
    questions it has not seen. `synthesized_questions` (difficulty: trained) scores with it."""

    labelled_questions: int = Field(default=2000, ge=2, description="seed problems the solver labels")
    samples_per_question: int = Field(
        default=8, ge=1, description="solver samples per labelled question (fail rate = wrong / samples)"
    )
    solver_profile: str = Field(default="", description="engine profile of the solver; empty = the llm resource's")
    template: TemplateName = Field(default="chat", description="prompt template of the solver")
    temperature: float = Field(default=0.7, ge=0.0, le=5.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(default=1024, ge=1, description="new tokens per solver sample")
    heldout_fraction: float = Field(default=0.2, ge=0.0, lt=1.0, description="share of labels held out to measure it")
    ridge_alpha: float = Field(default=1.0, gt=0.0, description="ridge regularisation of the regressor")
    seed_salt: str = Field(default="difficulty-scorer", description="salt of the subset, the split and the seeds")


@dg.asset(group_name="synthesis", kinds={"parquet"}, deps=["seed_problems"], pool="gpu")
def difficulty_scorer(
    context: dg.AssetExecutionContext, config: DifficultyScorerConfig, llm: LLMResource, store: TableStore
) -> dg.MaterializeResult:
    """Per labelled seed problem: the solver's samples, correct answers and fail rate, the split and
    the fitted scorer's prediction; the scorer itself goes to `difficulty_scorer_model`. Metadata:
    the held-out Pearson and Spearman correlations of predicted and measured fail rates."""
    seeds = solver_subset(
        store.read_all("seed_problems", columns=["problem_id", "question", "reference_answer"]),
        max_questions=config.labelled_questions,
        salt=config.seed_salt,
    ).to_pylist()
    specs = [
        SampleSpec(r["problem_id"], r["question"], k, 0) for r in seeds for k in range(config.samples_per_question)
    ]
    stats: list[GenerationStats] = []
    with Grader() as grader:
        samples = draw_samples(
            specs,
            template=get_template(config.template),
            params=SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens),
            seed_salt=config.seed_salt,
            model=llm.model_id(config.solver_profile),
            generate=llm.generate_fn(context, stats, ledger_name="difficulty_scorer", profile=config.solver_profile),
            references={r["problem_id"]: r["reference_answer"] for r in seeds},
            grade=grader.grade_many,
        )
    labels, unlabelled = fail_rates_from_samples(samples, {r["problem_id"]: r["question"] for r in seeds})
    embedder = SentenceEmbedder("embedded")
    scorer, report, heldout, predicted = fit_difficulty_scorer(
        labels,
        embedder.embed,
        embedder=embedder.model,
        alpha=config.ridge_alpha,
        heldout_fraction=config.heldout_fraction,
        salt=config.seed_salt,
    )
    store.write(scorer_table(scorer, report), "difficulty_scorer_model")
    table = label_table(labels, heldout, predicted)
    path = store.write(table, "difficulty_scorer")
    return dg.MaterializeResult(
        metadata={
            **table_metadata(table, path),
            **generation_metadata(GenerationStats.combine(stats)),
            **{k: v for k, v in asdict(report).items() if k != "note"},
            "correlation_note": report.note or "measured",
            "unlabelled_questions": unlabelled,
        }
    )


@dg.asset(
    partitions_def=synthesis_shards,
    group_name="synthesis",
    kinds={"parquet"},
    pool="gpu",
    deps=["question_generator", "difficulty_scorer", "contamination_index"],
    check_specs=[contamination_check_spec("synthesized_questions", blocking=True, partitions_def=synthesis_shards)],
)
def synthesized_questions(
    context: dg.AssetExecutionContext, config: SynthesisConfig, llm: LLMResource, store: TableStore
) -> dg.MaterializeResult:
    """Questions written from scratch with the prefix trick, one shard at a time, through the
    filters (near-duplicates also against the questions earlier shards kept); rejected rows go to
    `synthesis_audit/<shard>` with the step and the reason, kept questions' embeddings to
    `synthesis_vectors/<shard>` for the shards after it."""
    shard, stats, embedder = context.partition_key, [], SentenceEmbedder("embedded")
    table = _generate_questions(context, config, llm, store, shard, stats)
    earlier = earlier_shards(store.read_all_if_exists("synthesis_vectors"), shard, embedder.model)
    with Grader() as grader:
        run = filter_questions(
            table,
            config.filter_settings(),
            index=ContaminationIndex.from_table(store.read("contamination_index")),
            embed=embedder.embed,
            judge=_judge(context, config, llm, stats),
            solve=_solve(context, config, llm, grader, stats),
            difficulty_model=_difficulty_model(config, store, embedder),
            earlier=earlier,
        )
    store.write(vectors_table(run.kept, run.vectors, shard=shard, embedder=embedder.model), "synthesis_vectors", shard)
    store.write(run.samples, "synthesis_samples", shard)
    audit_path = store.write(run.audit(), "synthesis_audit", shard)
    path = store.write(run.kept, "synthesized_questions", shard)
    check = contamination_check(
        store,
        run.kept,
        asset_key="synthesized_questions",
        partition=shard,
        id_column="problem_id",
        text_column="question",
    )
    return dg.MaterializeResult(
        metadata={
            **table_metadata(run.kept, path),
            **_synthesis_metadata(run, table, GenerationStats.combine(stats)),
            "earlier_shard_questions": len(earlier.ids),
            "audit_path": dg.MetadataValue.path(str(audit_path)),
        },
        check_results=[check],
    )


def _synthesis_metadata(run: FilterRun, generated: pa.Table, total: GenerationStats) -> dict:
    """Token costs, the filter counts and their chart, and the generator of one shard."""
    chart = bar_chart(
        "questions left after each filter", [s.step for s in run.steps], {"kept": [s.n_out for s in run.steps]}
    )
    return {
        **generation_metadata(total),
        **run.step_counts(),
        "filter_chart": dg.MetadataValue.md(chart),
        "generated": generated.num_rows,
        "kept": run.kept.num_rows,
        "with_majority_answer": int(pc.sum(pc.is_valid(run.kept.column("reference_answer"))).as_py() or 0),
        "generator": generated.column("generator")[0].as_py() if generated.num_rows else "",
        "question_tokens": int(pc.sum(generated.column("completion_tokens")).as_py() or 0),
        "tokens_per_kept_question": round(total.completion_tokens / run.kept.num_rows, 1)
        if run.kept.num_rows
        else None,
    }


class SynthResponseConfig(dg.Config):
    """Best of n (METHODS.md §3.3 steps 5–6) over the solver samples that `synthesized_questions`
    drew: one kept response per question among those with its majority answer, by a reward model
    (`reward_model`: any model giving one scalar per response; the paper's internlm2-7b-reward
    needs `trust_remote_code: true`) or else the first of them."""

    reward_model: str = Field(default="", description="reward model folder or hub id; empty = the majority rule")
    trust_remote_code: bool = Field(
        default=False, description="let reward_model run its own Python code (README: what this allows)"
    )
    reward_batch_tokens: int = Field(default=16384, ge=1, description="token budget of one reward-model batch")
    reward_max_length: int = Field(
        default=2048, ge=2, description="tokens per pair; longer pairs lose their middle, never the response's end"
    )
    device: Device = Field(default="auto", description="torch device of the reward model: auto = CUDA when present")
    dtype: DType = Field(default="auto", description="auto = bfloat16 on CUDA, float32 on the CPU")

    final_answer_marker: bool = Field(
        default=True, description="only responses with a final-answer marker (boxed, 'the answer is') are eligible"
    )

    def scorer(self) -> RewardScorer | None:
        """The reward scorer, None for the majority rule."""
        if not self.reward_model:
            return None
        return RewardScorer(
            self.reward_model,
            batch_tokens=self.reward_batch_tokens,
            max_length=self.reward_max_length,
            device=self.device,
            dtype=self.dtype,
            trust_remote_code=self.trust_remote_code,
        )


@dg.asset(
    partitions_def=synthesis_shards,
    group_name="synthesis",
    kinds={"parquet"},
    pool="gpu",
    deps=["synthesized_questions"],
)
def synthesized_responses(
    context: dg.AssetExecutionContext, config: SynthResponseConfig, store: TableStore
) -> dg.MaterializeResult:
    """Every solver sample of the kept synthesized questions, graded for self-consistency against
    the majority answer; `kept` marks the chosen response, `choice` says why."""
    shard = context.partition_key
    questions = store.read("synthesized_questions", shard, columns=["problem_id", "question"])
    kept_ids = questions.column("problem_id").combine_chunks()
    samples = store.read("synthesis_samples", shard).filter(pc.is_in(pc.field("problem_id"), kept_ids))
    scorer = config.scorer()
    table, counts = kept_responses(
        samples, dict(zip(*questions.to_pydict().values())), scorer, config.final_answer_marker
    )
    path = store.write(table, "synthesized_responses", shard)
    reward = {"reward_truncated": scorer.truncated, "device": scorer.device, "dtype": scorer.dtype} if scorer else {}
    return dg.MaterializeResult(
        metadata={
            **table_metadata(table, path),
            **counts_metadata(counts),
            **reward,
            "rule": "reward" if scorer else "majority",
        }
    )
