"""The question generator (METHODS.md §3.3 Steps 1–2): QFT on seed questions, then QPO on pairs
of the QFT model's questions and the optimizer's rewrites. Model calls and memory release come
in as functions, so the whole recipe is plain and testable."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mathdata_pipeline.common.training import TrainedModel
from mathdata_pipeline.engines.runner import GenerateFn
from mathdata_pipeline.scalequest.prefix import QuestionPrefix
from mathdata_pipeline.scalequest.rewrite_prompts import qpo_preference_data
from mathdata_pipeline.scalequest.training import QftConfig, QpoConfig, train_qft, train_qpo

LATEST_FILE = "latest.json"


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
    variant ("qft" or "qpo") that `latest.json` names."""

    qft: TrainedModel
    qpo: TrainedModel | None = None
    pairs: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def final(self) -> str:
        """The variant synthesis uses: "qpo" when QPO trained, else "qft"."""
        return "qpo" if self.qpo is not None else "qft"


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
    each pair's chosen rewrite (`rewrite_prompts.judge_pairs`). Writes `root/latest.json` naming
    the final variant.
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
    (root / LATEST_FILE).write_text(json.dumps({"variant": run.final}), encoding="utf-8")
    return run


def latest_variant(root: Path) -> Path:
    """The folder of the generator `latest.json` names (`root/qft` or `root/qpo`)."""
    path = root / LATEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no trained question generator under {root}; materialize question_generator first")
    return root / json.loads(path.read_text(encoding="utf-8"))["variant"]
