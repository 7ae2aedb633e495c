"""ScaleQuest's trained difficulty scorer: how well it ranks questions it has not seen.

    .venv/bin/python benchmarks/difficulty_scorer.py [--quick] [--labelled 40] [--samples 2]
        [--max-tokens 128] [--levels 2000] [--ledger-dir DIR]

Two fits of the same scorer (`scalequest/difficulty.py`: ridge regression on MiniLM embeddings,
20 % of the labelled questions held out by a salted hash), reported as held-out Pearson and
Spearman correlations of predicted and measured difficulty:

1. The pipeline's labels: the embedded SmolLM2-135M solver's fail rates on GSM8K and MATH train
   problems (`--labelled` questions x `--samples` samples, graded against the reference answers),
   what `difficulty_scorer` fits in the demo. The tiny model fails nearly everything, so these
   labels are close to constant and the correlation is usually undefined (said in `note`).
2. The scorer's capacity with informative labels: MATH's human difficulty levels (1-5, scaled to
   0-1) on `--levels` MATH train questions stand in for a strong solver's fail rates (DART-Math's
   DeepSeekMath-7B-RL fail rates, the paper's likely labels, are on the hub and not reachable here).
   Baseline: the question's length in characters as the only predictor of the level.

Requests go through a request ledger (`--ledger-dir` to reuse). The last line of output is JSON.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mathdata_pipeline.common.samples import SampleSpec, draw_samples  # noqa: E402
from mathdata_pipeline.common.subsets import solver_subset  # noqa: E402
from mathdata_pipeline.common.templates import get_template  # noqa: E402
from mathdata_pipeline.engines.base import SamplingParams  # noqa: E402
from mathdata_pipeline.engines.resources import LLMResource  # noqa: E402
from mathdata_pipeline.grading import Grader  # noqa: E402
from mathdata_pipeline.qads.embeddings import SentenceEmbedder  # noqa: E402
from mathdata_pipeline.scalequest.difficulty import (  # noqa: E402
    FailRates,
    correlations,
    fail_rates_from_samples,
    fit_difficulty_scorer,
    heldout_split,
)
from mathdata_pipeline.sources.config import data_dir, load_sources_config, open_source  # noqa: E402
from mathdata_pipeline.sources.problems import build_problems  # noqa: E402

SALT = "difficulty-benchmark"


def seed_table(source: str):
    spec = load_sources_config().seed_sources[source]
    label, records = open_source(spec, base=data_dir())
    return build_problems(records, spec, source=source, label=label)[0]


def solver_labels(labelled: int, samples: int, max_tokens: int, ledger_dir: str) -> tuple[FailRates, float]:
    """Fail rates of the embedded solver on `labelled` seed problems (half GSM8K, half MATH)."""
    import pyarrow as pa

    seeds = pa.concat_tables(
        [solver_subset(seed_table(s), max_questions=labelled // 2, salt=SALT) for s in ("gsm8k", "math")]
    ).to_pylist()
    llm = LLMResource(ledger_dir=ledger_dir, progress_interval_s=30)
    started = time.perf_counter()
    with Grader() as grader:
        drawn = draw_samples(
            [SampleSpec(r["problem_id"], r["question"], k, 0) for r in seeds for k in range(samples)],
            template=get_template("chat"),
            params=SamplingParams(temperature=0.7, top_p=0.95, max_tokens=max_tokens),
            seed_salt=SALT,
            model=llm.model_id(),
            generate=llm.generate_fn(None, [], ledger_name="difficulty-benchmark"),
            references={r["problem_id"]: r["reference_answer"] for r in seeds},
            grade=grader.grade_many,
        )
    llm.close_engine()
    labels, _ = fail_rates_from_samples(drawn, {r["problem_id"]: r["question"] for r in seeds})
    return labels, time.perf_counter() - started


def level_labels(count: int, data: Path) -> FailRates:
    """MATH train questions with their level scaled to [0, 1] as the label (level 1 -> 0, 5 -> 1)."""
    with gzip.open(data / "math" / "math_train.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    rows = [r for r in rows if r["level"][-1].isdigit()]
    step = max(1, len(rows) // count)
    rows = rows[::step][:count]
    levels = np.array([int(r["level"][-1]) for r in rows], dtype=np.float64)
    return FailRates(
        [r["unique_id"] for r in rows], [r["problem"] for r in rows], np.full(len(rows), 4.0), 4.0 - (levels - 1.0)
    )


def fit(labels: FailRates, embedder: SentenceEmbedder) -> dict:
    scorer, report, heldout, predicted = fit_difficulty_scorer(
        labels, embedder.embed, embedder=embedder.model, alpha=1.0, heldout_fraction=0.2, salt=SALT
    )
    return {
        "labelled": len(labels.problem_ids),
        "label_mean": round(report.label_mean, 4),
        "label_std": round(float(labels.fail_rates.std()), 4),
        "heldout": report.n_heldout,
        "pearson": None if report.heldout_pearson is None else round(report.heldout_pearson, 4),
        "spearman": None if report.heldout_spearman is None else round(report.heldout_spearman, 4),
        "note": report.note,
    }


def length_baseline(labels: FailRates) -> float | None:
    """Held-out Spearman of question length as the predictor (same split)."""
    heldout = heldout_split(labels.problem_ids, 0.2, SALT)
    lengths = np.array([len(q) for q in labels.questions], dtype=np.float64)
    return correlations(lengths[heldout], labels.fail_rates[heldout])[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 8 labelled questions, 300 MATH levels")
    parser.add_argument("--labelled", type=int, default=40)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--levels", type=int, default=2000)
    parser.add_argument("--ledger-dir", default="")
    args = parser.parse_args()
    if args.quick:
        args.labelled, args.levels = 8, 300
    embedder = SentenceEmbedder("embedded")
    labels, solver_seconds = solver_labels(
        args.labelled, args.samples, args.max_tokens, args.ledger_dir or tempfile.mkdtemp(prefix="difficulty-")
    )
    solver = fit(labels, embedder)
    print(f"solver fail rates ({solver_seconds:.0f} s of sampling): {solver}")
    levels = level_labels(args.levels, data_dir())
    started = time.perf_counter()
    by_level = fit(levels, embedder)
    baseline = length_baseline(levels)
    print(f"MATH levels ({time.perf_counter() - started:.0f} s): {by_level}; length baseline spearman {baseline}")
    print(
        json.dumps(
            {
                "benchmark": "difficulty_scorer",
                "solver_labels": solver,
                "math_levels": by_level,
                "length_baseline_spearman": None if baseline is None else round(baseline, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
