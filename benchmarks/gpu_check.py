"""The GPU check in one command: every torch and vLLM path of the pipeline on a CUDA machine.

    .venv/bin/python benchmarks/gpu_check.py [--quick] [--skip PART ...] [--kcenter-n 1000000]
        [--kcenter-k 10000] [--kcenter-cpu-k 1000] [--model SOURCE | --random-model CONFIG.json
        --tokenizer FOLDER] [--no-cpu]

It installs nothing: it needs a GPU machine with the `gpu` extra installed (README, "GPU machine").
Parts (`--skip` any of them):

- vllm: vLLM generation on the embedded SmolLM2 GGUF (output tokens/s over many seeded chat
  requests), then batched scoring on the same engine: pairs/s of `score_many` (one call with prompt
  log-probabilities) against one `score` call per pair on a subset, and the largest difference of
  the log-probabilities between the two.
- gradients: LESS gradient features (`influence.gradient_features.GradientFeaturizer`, used as it
  is) on CUDA in bfloat16 (float32 when the featurizer takes no dtype) and on the CPU in float32:
  examples/s each and the cosine between the two feature sets on the same examples.
- kcenter: k-center greedy on n x 384 clustered unit rows, k picks on the GPU; the CPU path on the
  first `--kcenter-cpu-k` picks (the traversal is sequential, so a shorter run's picks are a prefix
  of a longer one's): seconds of each for those picks, and whether the picks are the same.
- reward: the reward scorer (a one-output head on the embedded SmolLM2) on CUDA in bfloat16 vs the
  CPU in float32: pairs/s and the largest score difference.
- qft: a few QFT steps of the embedded SmolLM2 (LoRA) on CUDA: seconds per step, precision, loss.

`--model` runs gradients, reward and qft on another causal LM (a transformers folder or hub id)
instead of the embedded SmolLM2. `--random-model` builds one with random weights from a
transformers `config.json` (e.g. a 7B model's, to measure speed and memory at the papers' size on
a machine that has no copy of the weights) and the tokenizer in `--tokenizer`. `--no-cpu` leaves
out the CPU comparisons (a 7B model in float32 on the CPU takes hours).

Without CUDA every part is skipped with its reason and the script exits 0. The last line of stdout
is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import gzip
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mathdata_pipeline.common.devices import release_cuda_memory  # noqa: E402
from mathdata_pipeline.common.hf_models import embedded_checkpoint  # noqa: E402
from mathdata_pipeline.sources.config import data_dir  # noqa: E402

PARTS = ("vllm", "gradients", "kcenter", "reward", "qft")


def log(message: str) -> None:
    """A progress line on stderr (stdout ends with the JSON line)."""
    print(message, file=sys.stderr, flush=True)


def gsm8k(n: int) -> list[dict]:
    """The first `n` GSM8K train records."""
    with gzip.open(data_dir() / "gsm8k" / "gsm8k_train.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(n), handle)]


def check_vllm(requests_n: int, max_tokens: int, score_pairs: int) -> dict:
    """vLLM tokens/s on the embedded GGUF, then score_many vs one score call per pair."""
    from mathdata_pipeline.engines.base import Request, SamplingParams
    from mathdata_pipeline.engines.factory import build_engine

    profile = {
        "backend": "vllm",
        "model": "embedded",
        "tokenizer": str(embedded_checkpoint()),
        "max_model_len": 2048,
        "gpu_memory_utilization": 0.5,
    }
    started = time.perf_counter()
    engine = build_engine(profile)
    load_seconds = time.perf_counter() - started
    rows = gsm8k(max(requests_n, score_pairs))
    requests = [
        Request.chat(
            [{"role": "user", "content": r["question"]}],
            SamplingParams(temperature=0.7, top_p=0.95, max_tokens=max_tokens, seed=i),
        )
        for i, r in enumerate(rows[:requests_n])
    ]
    started = time.perf_counter()
    results = [result for _, result in engine.generate(requests)]
    seconds = time.perf_counter() - started
    tokens = sum(getattr(r, "completion_tokens", 0) for r in results)
    out = {
        "load_seconds": round(load_seconds, 1),
        "requests": len(requests),
        "errors": sum(not hasattr(r, "completion_tokens") for r in results),
        "output_tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 1),
    }
    log(f"vllm generation: {tokens} tokens in {seconds:.1f} s = {out['tokens_per_second']} tokens/s")
    pairs = [
        (engine.render(Request.chat([{"role": "user", "content": r["question"]}], SamplingParams())), r["answer"])
        for r in rows[:score_pairs]
    ]
    out["scoring"] = _compare_scoring(engine, pairs)
    engine.close()
    release_cuda_memory()
    return out


def _compare_scoring(engine, pairs: list[tuple[str, str]]) -> dict:
    """pairs/s of the engine's batched `score_many` (if it has one) and of one `score` per pair."""
    subset = pairs[: max(1, len(pairs) // 8)]
    started = time.perf_counter()
    single = [engine.score(p, c) for p, c in subset]
    single_rate = len(subset) / (time.perf_counter() - started)
    out = {"pairs": len(pairs), "one_per_call_pairs_per_second": round(single_rate, 1)}
    if not hasattr(engine, "score_many"):
        out["batched"] = "skipped: this engine has no score_many"
        return out
    started = time.perf_counter()
    batched = engine.score_many(pairs)
    rate = len(pairs) / (time.perf_counter() - started)
    diffs = [abs(a.logprob - b.logprob) for a, b in zip(single, batched) if hasattr(b, "logprob")]
    out.update(
        {
            "batched_pairs_per_second": round(rate, 1),
            "ratio": round(rate / single_rate, 2),
            "max_abs_logprob_diff": round(max(diffs), 4) if diffs else None,
        }
    )
    log(f"vllm scoring: batched {rate:.1f} pairs/s vs {single_rate:.1f} one per call")
    return out


def check_gradients(model: str, n_gpu: int, n_cpu: int) -> dict:
    """GradientFeaturizer on CUDA (bfloat16 where it takes a dtype) vs the CPU in float32 (no
    CPU run when `n_cpu` is 0)."""
    from mathdata_pipeline.common.templates import get_template
    from mathdata_pipeline.influence.gradient_features import Example, GradientFeaturizer

    template = get_template("alpaca")
    rows = gsm8k(max(n_gpu, n_cpu))
    examples = [Example(f"gsm8k-{i}", template.prompt(r["question"]), r["answer"]) for i, r in enumerate(rows)]
    takes_dtype = "dtype" in inspect.signature(GradientFeaturizer).parameters
    out = {}
    features = {}
    runs = (("cuda", "bfloat16", n_gpu), ("cpu", "float32", n_cpu))
    for device, dtype, n in [run for run in runs if run[2] > 0]:
        kwargs = {"device": device, "max_length": 512, "max_batch_tokens": 16384 if device == "cuda" else 4096}
        if takes_dtype:
            kwargs["dtype"] = dtype
        featurizer = GradientFeaturizer(model, **kwargs)
        featurizer.features(examples[:2])  # warm-up (CUDA kernels, allocator)
        started = time.perf_counter()
        features[device] = featurizer.features(examples[:n])
        rate = n / (time.perf_counter() - started)
        weights = str(next(featurizer.model.parameters()).dtype).replace("torch.", "")
        out[device] = {"examples": n, "examples_per_second": round(rate, 2), "weights": weights, **_peak_memory()}
        log(f"gradient features on {device} ({weights}): {rate:.2f} examples/s")
        del featurizer
        release_cuda_memory()
    out["featurizer_takes_dtype"] = takes_dtype
    if not n_cpu:
        return out
    common = min(n_gpu, n_cpu)
    cosines = np.sum(features["cuda"][:common] * features["cpu"][:common], axis=1)
    out.update(
        {
            "ratio": round(out["cuda"]["examples_per_second"] / out["cpu"]["examples_per_second"], 1),
            "cosine_mean": round(float(cosines.mean()), 4),
            "cosine_min": round(float(cosines.min()), 4),
        }
    )
    return out


def clustered_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """n unit float32 rows around 300 random centres (so picks are not decided by rounding ties)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(300, dim)).astype(np.float32)
    x = centres[rng.integers(0, 300, size=n)] + 0.35 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def check_kcenter(n: int, k: int, cpu_k: int) -> dict:
    """k-center greedy on the GPU (k picks, and the first cpu_k) vs the CPU path (cpu_k picks)."""
    from mathdata_pipeline.qads.kcenter import kcenter_greedy

    x = clustered_rows(n, 384)
    cpu_k = min(cpu_k, k)
    timings = {}
    started = time.perf_counter()
    full = kcenter_greedy(x, k, device="cuda")
    timings["gpu_k_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    gpu_prefix = kcenter_greedy(x, cpu_k, device="cuda")
    timings["gpu_cpu_k_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    cpu = kcenter_greedy(x, cpu_k, device="cpu", prune=False)  # the selector's CPU default: the plain scan
    timings["cpu_cpu_k_seconds"] = time.perf_counter() - started
    same = np.array_equal(cpu.indices, full.indices[:cpu_k]) and np.array_equal(cpu.indices, gpu_prefix.indices)
    mismatch = np.flatnonzero(cpu.indices != full.indices[:cpu_k])
    out = {
        "n": n,
        "k": k,
        "cpu_k": cpu_k,
        **{key: round(value, 2) for key, value in timings.items()},
        "ratio": round(timings["cpu_cpu_k_seconds"] / timings["gpu_cpu_k_seconds"], 1),
        "same_picks": bool(same),
        "first_differing_pick": int(mismatch[0]) if mismatch.size else None,
        "gpu_final_radius": round(full.final_radius, 5),
    }
    log(
        f"k-center: GPU {k} picks in {timings['gpu_k_seconds']:.1f} s; {cpu_k} picks GPU "
        f"{timings['gpu_cpu_k_seconds']:.1f} s vs CPU {timings['cpu_cpu_k_seconds']:.1f} s; same picks {same}"
    )
    return out


def check_reward(model: str, pairs_n: int, cpu: bool) -> dict:
    """RewardScorer with a one-output head on `model`: CUDA bfloat16 vs CPU float32 (when `cpu`)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from mathdata_pipeline.scalequest.best_of_n import RewardScorer

    rows = gsm8k(pairs_n)
    pairs = [(r["question"], r["answer"]) for r in rows]
    out = {"pairs": pairs_n}
    with tempfile.TemporaryDirectory() as folder:
        source = str(embedded_checkpoint()) if model == "embedded" else model
        tokenizer = AutoTokenizer.from_pretrained(source)
        torch.manual_seed(0)
        head = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=torch.bfloat16)
        head.config.pad_token_id = tokenizer.pad_token_id
        head.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        del head
        scores = {}
        for device in ("cuda", "cpu") if cpu else ("cuda",):
            scorer = RewardScorer(folder, device=device)
            scorer.score(pairs[:4])  # warm-up
            started = time.perf_counter()
            scores[device] = scorer.score(pairs)
            rate = pairs_n / (time.perf_counter() - started)
            out[device] = {"pairs_per_second": round(rate, 1), "dtype": scorer.dtype, **_peak_memory()}
            log(f"reward model on {device} ({scorer.dtype}): {rate:.1f} pairs/s")
            del scorer
            release_cuda_memory()
    if not cpu:
        return out
    out["ratio"] = round(out["cuda"]["pairs_per_second"] / out["cpu"]["pairs_per_second"], 1)
    out["max_abs_score_diff"] = round(float(np.abs(scores["cuda"] - scores["cpu"]).max()), 4)
    out["score_correlation"] = round(float(np.corrcoef(scores["cuda"], scores["cpu"])[0, 1]), 4)
    return out


def check_qft(model: str, steps: int) -> dict:
    """A few LoRA QFT steps of `model` on CUDA (no GGUF export)."""
    from mathdata_pipeline.common.hf_models import chat_template
    from mathdata_pipeline.scalequest.prefix import resolve_prefix
    from mathdata_pipeline.scalequest.training import QftConfig, train_qft

    prefix = resolve_prefix("auto", chat_template(model))
    questions = [r["question"] for r in gsm8k(256)]
    config = QftConfig(base=model, max_steps=steps, per_device_batch=8, grad_accum=1, device="cuda", gguf_template="")
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        trained = train_qft(questions, prefix.prefix, prefix.end_of_turn, Path(folder) / "qft", config)
        seconds = time.perf_counter() - started
    out = {
        "steps": trained.steps,
        "wall_seconds": round(seconds, 1),
        "seconds_per_step_incl_load_and_save": round(seconds / max(trained.steps, 1), 2),
        "precision": trained.precision,
        "first_loss": round(trained.train_loss[0], 4),
        "last_loss": round(trained.train_loss[-1], 4),
        **_peak_memory(),
    }
    log(f"QFT on CUDA: {trained.steps} steps in {seconds:.1f} s, loss {out['first_loss']} -> {out['last_loss']}")
    release_cuda_memory()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a minute or two of GPU time)")
    parser.add_argument("--skip", nargs="*", default=[], choices=PARTS, help="parts to leave out")
    parser.add_argument("--kcenter-n", type=int, default=1_000_000)
    parser.add_argument("--kcenter-k", type=int, default=10_000)
    parser.add_argument("--kcenter-cpu-k", type=int, default=1_000)
    parser.add_argument("--model", default="embedded", help="causal LM for gradients, reward and qft")
    parser.add_argument("--random-model", default="", metavar="CONFIG.json", help="random weights from this config")
    parser.add_argument("--tokenizer", default="", metavar="FOLDER", help="tokenizer for --random-model")
    parser.add_argument("--no-cpu", action="store_true", help="leave out the CPU comparisons")
    args = parser.parse_args()
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    skipped = {part: "left out with --skip" for part in args.skip}
    results, failed = {}, {}
    if gpu is None:
        skipped.update(
            {part: "no CUDA GPU (torch.cuda.is_available() is False)" for part in PARTS if part not in skipped}
        )
        print(f"gpu_check: no CUDA GPU here; skipped {', '.join(PARTS)} (run it on a GPU machine with the gpu extra)")
    quick, cpu = args.quick, not args.no_cpu
    model, model_info = args.model, {"model": args.model}
    if gpu is not None and args.random_model:
        model, model_info = random_model(args.random_model, args.tokenizer)
    plan = {
        "vllm": lambda: check_vllm(64 if quick else 512, 128 if quick else 256, 64 if quick else 512),
        "gradients": lambda: check_gradients(model, 32 if quick else 256, (8 if quick else 32) if cpu else 0),
        "kcenter": lambda: check_kcenter(
            100_000 if quick else args.kcenter_n,
            1_000 if quick else args.kcenter_k,
            200 if quick else args.kcenter_cpu_k,
        ),
        "reward": lambda: check_reward(model, 64 if quick else 512, cpu),
        "qft": lambda: check_qft(model, 4 if quick else 20),
    }
    for part in PARTS:
        if part in skipped:
            continue
        if part == "vllm" and not _has_module("vllm"):
            skipped[part] = "vllm is not installed (pip install the gpu extra)"
            continue
        log(f"--- {part}")
        try:
            results[part] = plan[part]()
        except Exception as exc:  # one failed part must not hide the others' figures
            failed[part] = f"{type(exc).__name__}: {exc}"
            log(f"{part} failed: {failed[part]}")
            release_cuda_memory()
    for part, why in skipped.items():
        print(f"skipped {part}: {why}")
    for part, why in failed.items():
        print(f"FAILED {part}: {why}")
    summary = {
        "benchmark": "gpu_check",
        "gpu": gpu,
        "quick": quick,
        **model_info,
        **results,
        "skipped": skipped,
        "failed": failed,
    }
    print(json.dumps(summary))
    sys.exit(1 if failed else 0)


def random_model(config_json: str, tokenizer_folder: str) -> tuple[str, dict]:
    """Save a causal LM with random weights (seed 0, bfloat16) built from `config_json` and the
    tokenizer of `tokenizer_folder` into a temporary folder; returns (folder, description)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(config_json)
    started = time.perf_counter()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    parameters = sum(p.numel() for p in model.parameters())
    folder = tempfile.mkdtemp(prefix="gpu_check_model_")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_folder).save_pretrained(folder)
    del model
    release_cuda_memory()
    seconds = time.perf_counter() - started
    log(f"random {config.model_type} with {parameters / 1e9:.2f}B parameters saved in {seconds:.0f} s")
    return folder, {"model": f"random {config.model_type} from {Path(config_json).name}", "parameters": parameters}


def _peak_memory() -> dict:
    """The peak CUDA memory since the last reading, in GiB (and resets the counter)."""
    import torch

    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return {"peak_cuda_gib": round(peak, 2)}


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    main()
