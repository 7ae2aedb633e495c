"""The examples influence is computed on: the validation set V (graded responses to held-out
problems) and the training rows (QaDS reasoning candidates), both rendered with the one template
V was sampled with, and the lineage that keeps them apart (no training row may come from a
problem of V)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mathdata_pipeline.common.hf_models import EMBEDDED, embedded_checkpoint
from mathdata_pipeline.common.samples import SampleSpec, solve_request
from mathdata_pipeline.common.templates import SolveTemplate, get_template
from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.engines.base import SamplingParams
from mathdata_pipeline.influence.gradient_features import Example

VALIDATION_SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("problem_id", pa.string()),
        ("question", pa.string()),
        ("prompt", pa.string()),
        ("response", pa.string()),
        ("correct", pa.bool_()),
        ("kind", pa.string()),
        ("model", pa.string()),
        ("scoring_model", pa.string()),
        ("template", pa.string()),
    ]
)


def scoring_model_for(profile) -> str:
    """The transformers source of the weights an engine profile serves (`load_causal_lm` loads
    it): `embedded` for the embedded SmolLM2 (llama.cpp or vLLM), the GGUF file of another local
    profile, the hub id or folder of a vLLM profile. Raises ValueError for an OpenAI-compatible
    server, whose weights the pipeline cannot see: name them in `scoring_model`."""
    backend = getattr(profile, "backend", None)
    if backend == "local":
        return profile.model_path or EMBEDDED
    if backend == "vllm":
        return profile.model
    raise ValueError(
        f"cannot tell which weights the {backend!r} engine serves: set reference_responses' scoring_model "
        "to that model's hub id or folder"
    )


def load_tokenizer(source: str):
    """The tokenizer `load_causal_lm(source)` comes with (without loading the weights), with its
    EOS as pad token when it has none."""
    from transformers import AutoTokenizer

    if source == EMBEDDED:
        tokenizer = AutoTokenizer.from_pretrained(embedded_checkpoint())
    elif source.endswith(".gguf") and Path(source).is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(Path(source).parent), gguf_file=Path(source).name)
    else:
        tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def engine_prompts(problems: Sequence[dict], template: SolveTemplate, render) -> dict[str, str | None]:
    """{problem_id: the prompt string the engine sends for the problem's question}: `render` is
    the engine's `render` (None where a server applies its own chat template)."""
    specs = [SampleSpec(p["problem_id"], p["question"], 0, 0) for p in problems]
    return {spec.problem_id: render(solve_request(template, spec, SamplingParams())) for spec in specs}


def render_prompt(template: SolveTemplate, question: str, tokenizer) -> str:
    """The prompt string of `question` under `template`, as the model sees it: a raw template's
    text, or the chat messages rendered with the tokenizer's chat template plus the assistant-turn
    opening (what the llama.cpp and vLLM engines send). Raises ValueError when a chat template is
    asked of a tokenizer without one."""
    if template.kind != "chat":
        return template.prompt(question)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"template {template.name!r} needs a chat template, but the scoring tokenizer has none")
    return tokenizer.apply_chat_template(template.messages(question), tokenize=False, add_generation_prompt=True)


def problem_roots(question_pool: pa.Table) -> dict[str, str]:
    """{problem_id: root problem_id}: the seed problem a question descends from through
    `parent_problem_id` (a MuggleMath rewrite of a rewrite leads back to its seed); a question
    without a parent is its own root."""
    parent = dict(
        zip(question_pool.column("problem_id").to_pylist(), question_pool.column("parent_problem_id").to_pylist())
    )
    roots = {}
    for start in parent:
        node, seen = start, {start}
        while parent.get(node) and parent[node] not in seen:
            node = parent[node]
            seen.add(node)
        roots[start] = node
    return roots


def training_rows(
    solutions: pa.Table, candidate_ids: Iterable[str], roots: dict[str, str], heldout: set[str]
) -> tuple[pa.Table, list[str]]:
    """The training rows whose influence is scored: the solutions that are QaDS reasoning
    candidates (`candidate_ids`, the `embeddings` rows any selection can pick), minus those whose
    root problem is in `heldout` (the problems of V). Output: (solutions rows sorted by sample_id,
    the held-out sample_ids, sorted)."""
    wanted = set(candidate_ids)
    ids = solutions.column("sample_id").to_pylist()
    problems = solutions.column("problem_id").to_pylist()
    keep, held = [], []
    for i in sorted((i for i, s in enumerate(ids) if s in wanted), key=lambda i: ids[i]):
        (held if roots.get(problems[i], problems[i]) in heldout else keep).append(i)
    return solutions.take(pa.array(keep, pa.int64())), [ids[i] for i in held]


def sample_training_rows(solutions: pa.Table, max_examples: int, salt: str = "influence") -> pa.Table:
    """The solutions whose influence is scored: all, or a seeded sample of `max_examples` (0 = all)."""
    if not max_examples or solutions.num_rows <= max_examples:
        return solutions
    ids = solutions.column("sample_id").to_pylist()
    order = sorted(range(len(ids)), key=lambda i: stable_hash(salt, ids[i]))
    return solutions.take(pa.array(sorted(order[:max_examples]), pa.int64()))


def warmup_rows(table: pa.Table, fraction: float, seed: int) -> pa.Table:
    """LESS's warm-up share: a seeded random `fraction` of the training rows (at least one), in
    table order."""
    if table.num_rows == 0:
        raise ValueError("the warm-up needs at least one training row, but there are none")
    chosen = np.random.default_rng(seed).choice(table.num_rows, max(1, round(table.num_rows * fraction)), replace=False)
    return table.take(pa.array(np.sort(chosen), pa.int64()))


def as_examples(table: pa.Table, id_column: str, template: SolveTemplate, tokenizer) -> list[Example]:
    """Examples (id, prompt rendered with `template`, response) of a table with `question` and
    `response`."""
    return [
        Example(r[id_column], render_prompt(template, r["question"], tokenizer), r["response"])
        for r in table.select([id_column, "question", "response"]).to_pylist()
    ]


def drop_too_long(examples: Sequence[Example], tokenizer, max_length: int) -> tuple[list[Example], list[str]]:
    """(examples whose prompt leaves at least one response token within `max_length`, the ids of
    those that do not): a prompt that fills the window gives no loss to take a gradient of."""
    kept, dropped = [], []
    for example in examples:
        fits = len(tokenizer(example.prompt, add_special_tokens=False).input_ids) < max_length
        (kept if fits else dropped).append(example if fits else example.example_id)
    return kept, dropped


def check_validation_prompts(validation: pa.Table, examples: Sequence[Example]) -> None:
    """The prompts the scoring tokenizer renders for V must be the ones the engine rendered when V
    was sampled (`prompt`, null when a server rendered it): ValueError naming the first row that
    differs, since then the features would not see what the model saw."""
    for row, example in zip(validation.select(["example_id", "prompt"]).to_pylist(), examples):
        if row["prompt"] is not None and row["prompt"] != example.prompt:
            raise ValueError(
                f"reference_responses row {row['example_id']!r}: field 'prompt' was rendered by the engine as "
                f"{row['prompt'][:80]!r}..., the scoring model renders {example.prompt[:80]!r}...: "
                "the engine and the scoring model do not share the template"
            )


def single_value(table: pa.Table, column: str) -> str:
    """The one value of `column` in `table` (e.g. the scoring model of V); ValueError when the
    table is empty or holds several."""
    values = sorted({v for v in table.column(column).to_pylist() if v is not None})
    if len(values) != 1:
        raise ValueError(f"reference_responses: column {column!r} must hold one value, found {values or 'none'}")
    return values[0]


def validation_rows(
    problems: list[dict],
    samples: pa.Table,
    prompts: dict[str, str | None],
    *,
    scoring_model: str,
    include_reference_solutions: bool,
) -> pa.Table:
    """The validation set V: every sampled response with text (V_C when graded correct, V_I
    otherwise), plus, when `include_reference_solutions`, each problem's gold solution in V_C
    (kind "reference": a held-out problem's solution, not a model response).

    Inputs: the problems (rows with problem_id, question, reference_solution); the graded
    samples (SAMPLE_SCHEMA); {problem_id: the prompt the engine rendered (None: a server rendered
    it)}; the transformers source of the sampling model. Output: VALIDATION_SCHEMA rows.
    """
    question = {p["problem_id"]: p["question"] for p in problems}
    rows = [
        {
            "example_id": r["sample_id"],
            "problem_id": r["problem_id"],
            "question": question[r["problem_id"]],
            "prompt": prompts.get(r["problem_id"]),
            "response": r["text"],
            "correct": bool(r["correct"]),
            "kind": "sampled",
            "model": r["model"],
            "scoring_model": scoring_model,
            "template": r["template"],
        }
        for r in samples.select(["sample_id", "problem_id", "text", "correct", "model", "template"]).to_pylist()
        if r["text"]
    ]
    if include_reference_solutions and rows:
        first = rows[0]
        rows += [
            {
                "example_id": f"ref-{p['problem_id']}",
                "problem_id": p["problem_id"],
                "question": p["question"],
                "prompt": prompts.get(p["problem_id"]),
                "response": p["reference_solution"],
                "correct": True,
                "kind": "reference",
                "model": first["model"],
                "scoring_model": scoring_model,
                "template": first["template"],
            }
            for p in problems
            if p["reference_solution"]
        ]
    return pa.Table.from_pylist(rows, schema=VALIDATION_SCHEMA)


def shared_problems(
    scored_ids: Iterable[str], solutions: pa.Table, roots: dict[str, str], validation_problems: Iterable[str]
) -> list[str]:
    """Descriptions of every scored training row whose root problem is the root of a problem of V
    (empty when V is held out), e.g. "sample s1 (problem p7)"."""
    problem = dict(zip(solutions.column("sample_id").to_pylist(), solutions.column("problem_id").to_pylist()))
    held = {roots.get(p, p) for p in validation_problems}
    out = []
    for sample in scored_ids:
        root = roots.get(problem.get(sample, ""), problem.get(sample, ""))
        if root in held:
            out.append(f"sample {sample} (problem {root})")
    return out


@dataclass(frozen=True)
class InfluenceInputs:
    """What one influence run computes features of: the scored training rows, V, and the warm-up
    share, rendered as examples under V's model and template (examples whose prompt alone fills
    `max_length` are dropped and counted); the ids of training rows held out because their
    problem is in V; counts for metadata."""

    scoring_model: str
    train: list[Example]
    val: list[Example]
    warmup: list[Example]
    heldout_ids: list[str]
    counts: dict[str, int]


def influence_inputs(
    solutions: pa.Table,
    embeddings: pa.Table,
    question_pool: pa.Table,
    validation: pa.Table,
    *,
    max_examples: int,
    max_length: int,
    warmup_fraction: float,
    seed: int,
) -> InfluenceInputs:
    """The examples of one run (see InfluenceInputs).

    Inputs: all `solutions` (sample_id, problem_id, question, response); the `embeddings` rows
    (candidate_id, kind: the QaDS pool); the `question_pool` (problem_id, parent_problem_id);
    `reference_responses` (V, with its scoring model and template); `max_examples` scored rows
    (a seeded sample, 0 = all), the token window, the warm-up share and seed. Raises ValueError
    when V's prompts are not what the scoring tokenizer renders.
    """
    scoring_model = single_value(validation, "scoring_model")
    template = get_template(single_value(validation, "template"))
    roots = problem_roots(question_pool)
    reasoning = embeddings.filter(pc.field("kind") == "reasoning").column("candidate_id").to_pylist()
    heldout_roots = {roots.get(p, p) for p in validation.column("problem_id").to_pylist()}
    rows, held = training_rows(solutions, reasoning, roots, heldout_roots)
    scored = sample_training_rows(rows, max_examples)
    tokenizer = load_tokenizer(scoring_model)
    val = as_examples(validation, "example_id", template, tokenizer)
    check_validation_prompts(validation, val)
    sets = {
        "train": as_examples(scored, "sample_id", template, tokenizer),
        "val": val,
        "warmup": as_examples(warmup_rows(rows, warmup_fraction, seed), "sample_id", template, tokenizer),
    }
    counts = {"training_rows": rows.num_rows, "scored_rows": scored.num_rows, "heldout_rows": len(held)}
    for name, examples in sets.items():
        sets[name], too_long = drop_too_long(examples, tokenizer, max_length)
        counts[f"dropped_too_long_{name}"] = len(too_long)
    if not sets["train"] or not sets["val"]:
        raise ValueError(f"nothing to score within max_length={max_length} tokens: {counts}")
    return InfluenceInputs(scoring_model, sets["train"], sets["val"], sets["warmup"], held, counts)
