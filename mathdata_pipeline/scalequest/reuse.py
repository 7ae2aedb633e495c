"""Reuse of a trained question generator: the same base model, seed questions, prefix, training
settings and engine profiles give the same generator, so `question_generator` trains again only
when one of them changed (like `sft_model`'s fingerprint).

The variant's folder holds `reuse.json` = {"fingerprint", "metadata"}, written only after a
training finished and removed before a new one starts, so a killed training is never reused."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from mathdata_pipeline.common.text import stable_hash
from mathdata_pipeline.scalequest.generator import QpoPlan, latest_stage
from mathdata_pipeline.scalequest.prefix import QuestionPrefix
from mathdata_pipeline.scalequest.training import QftConfig

REUSE_FILE = "reuse.json"
_TRAINING_RECORD = "training.json"


def generator_fingerprint(
    *,
    base_identity: str,
    questions: Sequence[str],
    prefix: QuestionPrefix,
    qft: QftConfig,
    qpo: QpoPlan | None,
    profiles: dict[str, str],
) -> str:
    """The identity of one generator training.

    Inputs: `base_identity`, what names the base model's weights (its name plus a file digest or
    its config); the seed `questions` QFT trains on, in order; the user-turn `prefix`; the QFT
    settings; the QPO plan (None: no QPO); `profiles`, the engine profiles QPO's questions,
    rewrites and judgements come from ({role: profile name}). Output: a 16-hex-digit hash.
    """
    settings = {"qft": asdict(qft), "qpo": asdict(qpo) if qpo else None, "profiles": profiles, "prefix": asdict(prefix)}
    return stable_hash("question_generator", base_identity, json.dumps(settings, sort_keys=True), *questions)


def reusable_generator(root: Path, key: str) -> dict | None:
    """The metadata of the training recorded in the variant folder `root` when it had fingerprint
    `key` and its final stage is still on disk; None otherwise (train)."""
    path = root / REUSE_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("fingerprint") != key:
        return None
    try:
        stage = latest_stage(root)
    except FileNotFoundError:
        return None
    return record["metadata"] if (stage / _TRAINING_RECORD).is_file() else None


def forget_generator(root: Path) -> None:
    """Remove the reuse record of the variant folder `root` (before a training overwrites it)."""
    (root / REUSE_FILE).unlink(missing_ok=True)


def record_generator(root: Path, key: str, metadata: dict) -> None:
    """Record that the variant folder `root` now holds the generator with fingerprint `key`, and
    the JSON-ready `metadata` its training reported (written atomically)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{REUSE_FILE}.tmp"
    tmp.write_text(json.dumps({"fingerprint": key, "metadata": metadata}, sort_keys=True), encoding="utf-8")
    os.replace(tmp, root / REUSE_FILE)
