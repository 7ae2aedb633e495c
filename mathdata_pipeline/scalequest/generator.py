"""The question generator (METHODS.md §3.3 Steps 1–2): QFT on seed questions, then QPO on pairs
of the QFT model's questions and the optimizer's rewrites. Model calls and memory release come
in as functions, so the whole recipe is plain and testable.

Generators live side by side as named variants, `<root>/<variant>/{qft,qpo}/` with
`<root>/<variant>/latest.json` naming the final stage, so a generator trained from Qwen2-Math and
one from DeepSeekMath (the paper's two) can both write questions."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mathdata_pipeline.common.gguf_export import export_plan
from mathdata_pipeline.common.names import check_name
from mathdata_pipeline.common.training import TrainedModel
from mathdata_pipeline.engines.runner import GenerateFn
from mathdata_pipeline.scalequest.prefix import QuestionPrefix
from mathdata_pipeline.scalequest.rewrite_prompts import qpo_preference_data
from mathdata_pipeline.scalequest.training import QftConfig, QpoConfig, train_qft, train_qpo

LATEST_FILE = "latest.json"
DEFAULT_VARIANT = "default"


@dataclass(frozen=True)
class QpoPlan:
    """QPO's data step and training: how many questions the QFT model writes and their token cap,
    the rewrite kind and its token cap, the least number of parsed pairs worth training on, and
    the DPO settings."""

    questions: int
    question_max_tokens: int
    rewrite_kind: str
    rewrite_max_tokens: int
    min_pairs: int
    training: QpoConfig
    judge_max_tokens: int = 2048  # the judge's token cap when a judge checks the pairs
    judge_any_yes: bool = False  # the paper's verdict rule (any "yes") instead of the final verdict


@dataclass
class GeneratorRun:
    """What one training produced: the QFT model, the QPO model (None when QPO was off or
    skipped), the pairs QPO had, rewrites dropped by reason, why QPO was skipped, and the final
    stage ("qft" or "qpo") that `latest.json` names."""

    qft: TrainedModel
    qpo: TrainedModel | None = None
    pairs: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def final(self) -> str:
        """The stage synthesis uses: "qpo" when QPO trained, else "qft"."""
        return "qpo" if self.qpo is not None else "qft"

    def metadata(self) -> dict:
        """Plain figures for the asset's metadata: steps, final QFT loss, seconds, device and
        dtype of each training, QPO pairs and dropped rewrites, and the final stage (`latest`)."""
        out = {
            "qft_steps": self.qft.steps,
            "qft_final_loss": round(float(self.qft.train_loss[-1]), 4) if self.qft.train_loss else None,
            "qft_seconds": round(self.qft.wall_seconds, 1),
            "qft_learning_rate": self.qft.config["learning_rate"],
            "device": self.qft.precision.get("device", ""),
            "weights_dtype": self.qft.precision.get("weights", ""),
            "latest": self.final,
        }
        if self.pairs or self.dropped or self.skipped or self.qpo is not None:
            out.update({"qpo_pairs": self.pairs, **{f"qpo_dropped/{k}": v for k, v in self.dropped.items()}})
        if self.qpo is not None:
            out.update(
                {
                    "qpo_steps": self.qpo.steps,
                    "qpo_seconds": round(self.qpo.wall_seconds, 1),
                    "qpo_learning_rate": self.qpo.config["learning_rate"],
                }
            )
        return out


def train_question_generator(
    questions: list[str],
    prefix: QuestionPrefix,
    root: Path,
    qft: QftConfig,
    qpo: QpoPlan | None,
    *,
    generate_questions: GenerateFn | None = None,
    rewrite: GenerateFn | None = None,
    release: Callable[[], None] = lambda: None,
    judge: GenerateFn | None = None,
) -> GeneratorRun:
    """QFT into `root/qft`, then (with a `qpo` plan) the QPO pairs and DPO into `root/qpo`.

    Inputs: the seed questions; the user-turn prefix; the output root; the QFT settings; the QPO
    plan or None; `generate_questions` (bound to the QFT model at `root/qft`) and `rewrite` (bound
    to the optimizer), needed with a plan; `release`, called before each training so no engine
    holds memory while a model trains; `judge` (bound to the judge's profile), when given, checks
    each pair's chosen rewrite (`rewrite_prompts.judge_pairs`). `root` is the variant's folder
    (`variant_dir`). Writes `root/latest.json` naming the final stage.
    """
    release()
    run = GeneratorRun(qft=train_qft(questions, prefix.prefix, prefix.end_of_turn, root / "qft", qft))
    if qpo is not None:
        pairs, run.dropped = qpo_preference_data(
            prefix,
            questions=qpo.questions,
            question_max_tokens=qpo.question_max_tokens,
            rewrite_kind=qpo.rewrite_kind,
            rewrite_max_tokens=qpo.rewrite_max_tokens,
            generate_questions=generate_questions,
            rewrite=rewrite,
            judge=judge,
            judge_max_tokens=qpo.judge_max_tokens,
            judge_any_yes=qpo.judge_any_yes,
        )
        run.pairs = len(pairs)
        release()
        if len(pairs) >= qpo.min_pairs:
            run.qpo = train_qpo(
                pairs, prefix.prefix, prefix.end_of_turn, str(root / "qft" / "hf"), root / "qpo", qpo.training
            )
        else:
            run.skipped = (
                f"{len(pairs)} preference pairs (< qpo_min_pairs={qpo.min_pairs}); "
                f"the optimizer's rewrites did not parse: {run.dropped}"
            )
    (root / LATEST_FILE).write_text(json.dumps({"stage": run.final}), encoding="utf-8")
    return run


def variant_dir(root: Path, variant: str) -> Path:
    """The folder of generator variant `variant` under `root`; InvalidName for a name that is not
    lower-case letters, digits, '_', '-' and '.'."""
    return root / check_name(variant, what="generator variant")


def latest_stage(root: Path) -> Path:
    """The folder of the generator that `root/latest.json` names (`root/qft` or `root/qpo`);
    `root` is a variant's folder (see `variant_dir`)."""
    path = root / LATEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained question generator variant {root.name!r} under {root.parent}; "
            "materialize question_generator with this variant first"
        )
    return root / json.loads(path.read_text(encoding="utf-8"))["stage"]


def gguf_template_for(backend: str, profile: str, base_config: dict, template: str) -> tuple[str, str]:
    """(gguf_template to train with, why no GGUF is written or "") for a generator served by
    engine profile `profile` of `backend`.

    llama.cpp (`local`) needs `model.gguf`: when `gguf_export.export_plan` refuses the base model
    (its architecture, or no template of its shape) this raises ValueError before any training.
    vLLM loads `hf/`, so no GGUF is written. Any other backend cannot serve a local model:
    ValueError. `base_config` is the base model's transformers config (a dict).
    """
    if backend == "vllm":
        return "", f"skipped: the generator is served by profile {profile!r} (vllm), which loads hf/"
    if backend != "local":
        raise ValueError(
            f"profile {profile!r} ({backend}) cannot serve a trained generator; name a local or vllm "
            "profile in generator_profile"
        )
    path, why = export_plan(base_config, template)
    if path is None:
        raise ValueError(
            f"the generator would be served by profile {profile!r} (llama.cpp), which needs a GGUF file, but {why}; "
            "name a vllm profile in generator_profile"
        )
    return template, ""
