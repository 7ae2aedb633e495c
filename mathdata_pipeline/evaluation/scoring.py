"""Scoring models on benchmark items: the per-item table of `benchmark_scores`.

For each model (the fine-tuned one and, once, the base model as the reference), on the same items:
- the log-probability of each item's reference solution (`logprob.BatchScorer`, through the
  request ledger), all models first, so no generation engine holds memory meanwhile;
- accuracy on the accuracy sample: one greedy answer per item generated through the engine layer
  (llama.cpp serves the exported `model.gguf` on a CPU, vLLM the `hf/` folder on a GPU), in the
  prompt format the model was trained with, graded by the project's `Grader`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import pyarrow as pa

from mathdata_pipeline.common.hf_models import EMBEDDED
from mathdata_pipeline.common.names import path_component
from mathdata_pipeline.common.ray_map import RayCompute
from mathdata_pipeline.common.samples import GradeFn, SampleSpec, draw_samples
from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.common.training import HF_SUBDIR, TRAINING_JSON, TrainedModel, TrainingSettings
from mathdata_pipeline.engines.base import SamplingParams
from mathdata_pipeline.engines.ledger import RequestLedger
from mathdata_pipeline.engines.runner import GenerateFn, GenerationStats
from mathdata_pipeline.evaluation.conversations import EVAL_TEMPLATES
from mathdata_pipeline.evaluation.items import logprob_target
from mathdata_pipeline.evaluation.logprob import BatchScorer, score_many
from mathdata_pipeline.evaluation.ray_scoring import RayScorer
from mathdata_pipeline.evaluation.sft import export_reference

ITEM_SCHEMA = pa.schema(
    [
        pa.field("spec", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("model_revision", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("benchmark", pa.string(), nullable=False),
        pa.field("level", pa.int8()),
        pa.field("subject", pa.string()),
        pa.field("logprob_target", pa.string(), nullable=False),
        pa.field("logprob_sum", pa.float64()),
        pa.field("logprob_tokens", pa.int32()),
        pa.field("mean_logprob", pa.float64()),
        pa.field("accuracy_sampled", pa.bool_(), nullable=False),
        pa.field("correct", pa.bool_()),
        pa.field("extracted_answer", pa.string()),
        pa.field("response", pa.string()),
        pa.field("finish_reason", pa.string()),
        pa.field("completion_tokens", pa.int32()),
        pa.field("error", pa.string()),
        pa.field("settings", pa.string(), nullable=False),
    ]
)
FINE_TUNED, BASE = "fine-tuned", "base"


@dataclass(frozen=True)
class ScoreSettings:
    """How items are scored: the prompt `template` (the one the model was trained with),
    `max_new_tokens` per greedy answer, `max_score_tokens` (longest prompt + solution scored),
    `batch_tokens` per forward pass of the scorer, and the item selection (`benchmarks`,
    `per_benchmark`, `accuracy_per_benchmark`, `salt`). Two tables can be compared item by item
    only when their `key()` is equal."""

    template: str
    max_new_tokens: int
    max_score_tokens: int
    batch_tokens: int
    benchmarks: tuple[str, ...]
    per_benchmark: int
    accuracy_per_benchmark: int
    salt: str

    def key(self) -> str:
        """A hash of everything that changes a score (the batch size does not)."""
        fields = {k: v for k, v in asdict(self).items() if k != "batch_tokens"}
        return stable_hash("scores", json.dumps(fields, sort_keys=True), length=12)


@dataclass(frozen=True)
class EvalModel:
    """A model to score: its `role` (fine-tuned | base), its folder (`hf/` and, for llama.cpp,
    `model.gguf`), its `model_id` in ledgers and tables, and its `revision` (training fingerprint)."""

    role: str
    model_dir: Path
    model_id: str
    revision: str


def load_trained(root: Path, spec: str) -> TrainedModel:
    """The model `sft_model[spec]` wrote under `root`; FileNotFoundError saying so when there is none."""
    if not (root / spec / TRAINING_JSON).is_file():
        raise FileNotFoundError(f"sft_model[{spec}] has no model under {root / spec}; materialize sft_model first")
    return TrainedModel.load(root / spec)


def models_to_score(root: Path, spec: str, trained: TrainedModel, *, reference: bool) -> list[EvalModel]:
    """The fine-tuned model of `spec` and, when `reference`, its base model exported once under
    `root/_base/` in the same layout and GGUF precision (`sft.export_reference`)."""
    models = [EvalModel(FINE_TUNED, root / spec, f"{root.name}/{spec}", trained.config["fingerprint"])]
    if reference:
        base = trained.config["base"]
        slug = EMBEDDED if base == EMBEDDED else f"{path_component(Path(base).name)}-{stable_hash(base, length=8)}"
        gguf = {key: trained.config[key] for key in ("gguf_template", "gguf_dtype")}
        exported = export_reference(base, root / "_base" / slug, TrainingSettings(**gguf))
        models.append(EvalModel(BASE, root / "_base" / slug, f"_base/{slug}", exported.config["fingerprint"]))
    return models


def score_models(
    spec: str,
    items: pa.Table,
    models: Sequence[EvalModel],
    settings: ScoreSettings,
    *,
    ledger: RequestLedger,
    generate_for: Callable[[Path], GenerateFn],
    grade: GradeFn,
    release: Callable[[], None] = lambda: None,
    log: Callable[[str], None] = print,
    compute: RayCompute | None = None,
) -> tuple[pa.Table, GenerationStats]:
    """The per-item table (ITEM_SCHEMA, one row per model and item) of mixture `spec`.

    Inputs: the items (`items.select_items`); the models; the settings; the ledger for
    log-probabilities; `generate_for(model_dir)`, the engine-layer generate function serving that
    model; `grade` (`Grader.grade_many`); `release`, called before a scorer is loaded (frees the
    generation engine); `log`; `compute`: score log-probabilities on Ray workers
    (`ray_scoring.RayScorer`) instead of in this process. Output: (table, log-probability statistics).
    """
    rows = items.to_pylist()
    targets = [logprob_target(r["reference_solution"], r["reference_answer"]) for r in rows]
    scored = [i for i, (text, _) in enumerate(targets) if text is not None]
    logprobs, stats = {}, []
    for model in models:
        release()
        log(f"log-probabilities of {len(scored)} reference texts under {model.model_id}")
        scorer = (BatchScorer if compute is None else partial(RayScorer, compute))(
            model.model_dir / HF_SUBDIR,
            model_id=model.model_id,
            max_tokens=settings.max_score_tokens,
            batch_tokens=settings.batch_tokens,
        )
        try:
            pairs = [(_prompt(scorer, settings.template, rows[i]["question"]), targets[i][0]) for i in scored]
            scores, run_stats = score_many(scorer, ledger, pairs, log=log)
        finally:
            scorer.close()
        logprobs[model.role] = dict(zip(scored, scores))
        stats.append(run_stats)
    release()
    sampled = [i for i, r in enumerate(rows) if r["accuracy_sampled"]]
    specs = [SampleSpec(rows[i]["problem_id"], rows[i]["question"], 0, 0) for i in sampled]
    references = {rows[i]["problem_id"]: rows[i]["reference_answer"] for i in sampled}
    params = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=settings.max_new_tokens)
    answers = {}
    for model in models:
        log(f"accuracy: {len(specs)} greedy answers from {model.model_id}")
        samples = draw_samples(
            specs,
            template=EVAL_TEMPLATES[settings.template],
            params=params,
            seed_salt="benchmark_scores",
            model=model.model_id,
            generate=generate_for(model.model_dir),
            references=references,
            grade=grade,
        )
        answers[model.role] = dict(zip(sampled, samples.to_pylist()))
    table = pa.Table.from_pylist(
        [
            _row(spec, model, rows[i], targets[i][1], logprobs[model.role].get(i), answers[model.role].get(i), settings)
            for model in models
            for i in range(len(rows))
        ],
        schema=ITEM_SCHEMA,
    )
    return table, GenerationStats.combine(stats)


def another_model(old: pa.Table, new: pa.Table) -> bool:
    """Whether two score tables come from different fine-tuned models (then the old scores are
    worth keeping as the spec's previous ones)."""

    def revisions(table: pa.Table) -> set[str]:
        pairs = zip(table.column("model").to_pylist(), table.column("model_revision").to_pylist())
        return {revision for model, revision in pairs if model == FINE_TUNED}

    return revisions(old) != revisions(new)


def _verdict(sample: dict | None) -> bool | None:
    """The graded verdict; an empty answer is a wrong one; None when there was no answer (not
    sampled, or the request failed: prompt too long, engine error)."""
    if sample is None:
        return None
    if sample["correct"] is None and (sample["error"] or "").startswith("empty_completion"):
        return False
    return sample["correct"]


def _prompt(scorer: BatchScorer | RayScorer, template: str, question: str) -> str:
    """The prompt text in front of the scored solution: what the engine renders for generation."""
    return scorer.chat_prompt(question) if template == "chat" else EVAL_TEMPLATES[template].prompt(question)


def _row(spec: str, model: EvalModel, item: dict, target: str, score, sample: dict | None, settings) -> dict:
    return {
        "spec": spec,
        "model": model.role,
        "model_id": model.model_id,
        "model_revision": model.revision,
        "item_id": item["problem_id"],
        "benchmark": item["benchmark"],
        "level": item["level"],
        "subject": item["subject"],
        "logprob_target": target if score is not None or target == "none" else "too_long",
        "logprob_sum": score.logprob if score else None,
        "logprob_tokens": score.tokens if score else None,
        "mean_logprob": score.logprob / score.tokens if score else None,
        "accuracy_sampled": item["accuracy_sampled"],
        "correct": _verdict(sample),
        "extracted_answer": sample["extracted_answer"] if sample else None,
        "response": sample["text"] if sample else None,
        "finish_reason": sample["finish_reason"] if sample else None,
        "completion_tokens": sample["completion_tokens"] if sample else None,
        "error": sample["error"] if sample else None,
        "settings": settings.key(),
    }
