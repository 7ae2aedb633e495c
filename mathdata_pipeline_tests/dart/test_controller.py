"""The event-driven DARS planner: the samples it keeps do not depend on the order results arrive
in, match the round-based reference loop, never pass the caps, and count overshoot. Then the whole
controller through `sampling.solve` over a scripted engine (a test double, no model): targets per
strategy, caps, stop rules, grader reasons on every sample, and a rerun served from the ledger."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest

from mathdata_pipeline.common.samples import SampleSink
from mathdata_pipeline.common.templates import get_template
from mathdata_pipeline.dart.controller import DarsPlanner
from mathdata_pipeline.dart.dars import DarsConfig, plan_round, start, summary, update
from mathdata_pipeline.dart.sampling import DART_SAMPLE_SCHEMA, Problem, Solver, curate, solve, with_targets
from mathdata_pipeline.engines.base import Completion, Engine, EngineInfo, SamplingParams, SequentialStream, derive_seed
from mathdata_pipeline.engines.ledger import RequestLedger
from mathdata_pipeline.engines.runner import LedgerStream

PASS = [0.9, 0.5, 0.2, 0.05, 0.0, 0.7, 0.35, 0.1]  # per query


def outcome(query: int, index: int) -> bool:
    """A fixed verdict per (query, sample index), like a seeded sample graded against its answer."""
    return random.Random(query * 100_003 + index).random() < PASS[query]


def drain(planner: DarsPlanner, *, slots: int, seed: int) -> tuple[list[tuple[int, int]], int]:
    """Run the planner with up to `slots` samples in flight, each round of arrivals in a seeded
    random order; returns (kept (query, index) pairs in the order they were kept, submissions)."""
    rng, flight, kept, submitted = random.Random(seed), [], [], 0
    while not planner.finished:
        new = planner.take(max(slots - planner.outstanding, 0))
        submitted += len(new)
        flight += new
        assert flight, "stalled with open queries and nothing in flight"
        query, index = flight.pop(rng.randrange(len(flight)))
        kept += [row for row in planner.graded(query, index, outcome(query, index), (query, index))]
    return kept, submitted


def reference(config: DarsConfig, n_d: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The round-based loop of `dars.py` (one sample per open query per round)."""
    trials = np.full(len(PASS), n_d)
    correct = np.array([sum(outcome(q, i) for i in range(n_d)) for q in range(len(PASS))])
    state = start([str(q) for q in range(len(PASS))], config, n_trials=trials, n_correct=correct)
    while plan := plan_round(state):
        graded = []
        for qid, n in plan:
            q = int(qid)
            graded += [(qid, outcome(q, int(state.n_trials[q]) + j)) for j in range(n)]
        state = update(state, graded)
    return state.n_trials, state.n_correct, state.stop_reason.tolist()


@pytest.mark.parametrize(
    "config",
    [
        DarsConfig("prop2diff", k_p=6, n_max=40),
        DarsConfig("uniform", k_u=3, n_max=25, strict_stop=True),
        DarsConfig("vrt", vrt_trials=7),
        DarsConfig("band", k_u=2, band=(0.2, 0.8), n_max=30),
    ],
)
def test_kept_samples_are_the_same_in_any_arrival_order_and_match_the_rounds(config):
    trials, correct, reasons = reference(config, n_d=4)
    outcomes = set()
    for slots, seed in ((1, 0), (3, 1), (16, 2), (64, 3)):
        planner = DarsPlanner(len(PASS), 4, config, speculate=slots > 1)
        kept, submitted = drain(planner, slots=slots, seed=seed)
        outcomes.add(tuple(sorted(kept)))
        state = planner.state([str(q) for q in range(len(PASS))])
        assert state.n_trials.tolist() == trials.tolist() and state.n_correct.tolist() == correct.tolist()
        assert state.stop_reason.tolist() == reasons
        assert submitted == len(kept) + planner.overshoot and planner.outstanding >= 0
        for query in range(len(PASS)):  # a prefix of every query, never past its cap
            indices = sorted(i for q, i in kept if q == query)
            assert indices == list(range(len(indices))) and len(indices) <= max(planner.cap[query], 4)
    assert len(outcomes) == 1


def test_rounds_policy_waits_for_each_round_and_keeps_the_same_samples():
    config = DarsConfig("prop2diff", k_p=6, n_max=40)
    planner = DarsPlanner(len(PASS), 4, config, policy="rounds")
    first = planner.take(100)
    assert len(first) == 4 * len(PASS) and planner.take(100) == []  # the next round waits
    for query, index in first[:-1]:
        planner.graded(query, index, outcome(query, index))
    assert planner.take(100) == []
    planner.graded(*first[-1], outcome(*first[-1]))
    second = planner.take(100)
    assert second and all(index == 4 for _, index in second)
    for query, index in second:
        planner.graded(query, index, outcome(query, index), (query, index))
    kept, _ = drain(planner, slots=1000, seed=5)
    stream_planner = DarsPlanner(len(PASS), 4, config)
    stream_kept, _ = drain(stream_planner, slots=32, seed=6)
    assert planner.rounds > 3
    assert planner.state(list("abcdefgh")).n_trials.tolist() == stream_planner.state(list("abcdefgh")).n_trials.tolist()
    assert set(kept) <= set(stream_kept)


def test_speculation_fills_free_slots_and_counts_the_overshoot():
    config = DarsConfig("uniform", k_u=2, n_max=500)
    greedy = DarsPlanner(len(PASS), 2, config, speculate=True)
    _, submitted = drain(greedy, slots=64, seed=7)
    frugal = DarsPlanner(len(PASS), 2, config, speculate=False)
    drain(frugal, slots=64, seed=7)
    assert greedy.overshoot > frugal.overshoot >= 0
    assert submitted > sum(greedy.prefix)


def test_difficulty_pass_only():
    planner = DarsPlanner(3, 5, None)
    kept, submitted = drain(planner, slots=4, seed=8)
    assert submitted == len(kept) == 15 and planner.overshoot == 0
    state = planner.state(["a", "b", "c"])
    assert state.n_trials.tolist() == [5, 5, 5]
    assert state.n_correct.tolist() == [sum(outcome(q, i) for i in range(5)) for q in range(3)]


def test_a_sample_of_a_stopped_query_is_overshoot_and_kept_nowhere():
    planner = DarsPlanner(1, 1, DarsConfig("uniform", k_u=1, n_max=10))
    assert planner.take(1) == [(0, 0)]
    planner.graded(0, 0, False, "r0")
    assert planner.take(3) == [(0, 1), (0, 2), (0, 3)]  # no correct answer yet: it needs several
    assert planner.graded(0, 2, True, "r2") == []  # beyond the prefix: waits
    assert planner.graded(0, 1, True, "r1") == ["r1"]  # sample 1 completes the target; sample 2 is overshoot
    assert planner.finished and planner.overshoot == 2
    assert planner.graded(0, 3, True, "r3") == [] and planner.outstanding == 0


# --- The controller through its public entry point (`sampling.solve`) over a scripted engine ---

SALT = "scripted"
# Per problem, the reference answer and what sample k says: "correct", "wrong" (another number),
# "no_answer" (no number at all) or "truncated" (the right box, cut off at the token limit).
SCRIPTS = {
    "always": ("5", lambda k: "correct"),
    "never": ("7", lambda k: "wrong"),
    "half": ("6", lambda k: "correct" if k % 2 == 0 else "wrong"),
    "quarter": ("9", lambda k: "correct" if k % 4 == 3 else "no_answer"),
    "cut": ("4", lambda k: "correct" if k % 5 == 4 else "truncated"),
}
SCRIPTED_PROBLEMS = [Problem(pid, f"Question {pid}?", answer) for pid, (answer, _) in SCRIPTS.items()]
_SEEDS = {derive_seed(SALT, pid, k): (pid, k) for pid in SCRIPTS for k in range(200)}


class ScriptedEngine(Engine):
    """Test double, no model: answers each request from SCRIPTS by (problem, sample index), found
    from the request's seed; `capacity` requests in flight, returned in a seeded shuffled order so
    the event-driven controller sees results out of order. Counts what it generates."""

    def __init__(self, capacity: int = 4, order_seed: int = 0):
        self.info = EngineInfo("scripted-test-double", "scripted")
        self.capacity, self.order_seed, self.generated = capacity, order_seed, 0

    def render(self, request):
        return None

    def generate(self, requests):
        for position, request in enumerate(requests):
            self.generated += 1
            pid, k = _SEEDS[request.params.seed]
            answer, script = SCRIPTS[pid]
            kind = script(k)
            text = {
                "correct": f"scripted: \\boxed{{{answer}}}",
                "wrong": f"scripted: \\boxed{{{int(answer) + 1}}}",
                "no_answer": "scripted: I cannot tell.",
                "truncated": f"scripted: \\boxed{{{answer}}}",
            }[kind]
            yield position, Completion(text, "length" if kind == "truncated" else "stop", 3, 5)

    def score(self, prompt, completion):
        raise NotImplementedError("the scripted engine does not score")

    def stream(self):
        return _ShuffledStream(self)


class _ShuffledStream(SequentialStream):
    """The scripted engine's stream: its capacity, results in a seeded random order of the pending."""

    def __init__(self, engine: ScriptedEngine):
        super().__init__(engine)
        self.capacity, self._rng = engine.capacity, random.Random(engine.order_seed)

    def next_result(self):
        self._queue.rotate(-self._rng.randrange(len(self._queue)) if self._queue else 0)
        return super().next_result()


def solve_scripted(tmp_path, config, *, n_d=4, capacity=4, order_seed=0, ledger_name="l.sqlite"):
    """One DARS run through `solve` with the scripted engine and a ledger under `tmp_path`: returns
    (kept rows as a table, planner, report, engine)."""
    engine = ScriptedEngine(capacity, order_seed)
    solver = Solver(get_template("deepseekmath"), SamplingParams(temperature=1.0, top_p=0.95, max_tokens=16), SALT, "m")
    folder = tmp_path / f"parts-{uuid.uuid4().hex[:6]}"
    with RequestLedger(tmp_path / ledger_name) as ledger, SampleSink(folder, DART_SAMPLE_SCHEMA, 5) as sink:
        with LedgerStream(engine, ledger, log=lambda _: None) as stream:
            planner, report = solve(SCRIPTED_PROBLEMS, n_d, config, solver, stream, sink=sink, log=lambda _: None)
        state = planner.state(list(SCRIPTS))
        sink.write(folder.parent / f"{folder.name}.parquet", transform=with_targets(state))
    return pq.read_table(folder.parent / f"{folder.name}.parquet"), planner, report, engine


def per_problem(table, column):
    """{problem_id: [column values in sample-index order]}."""
    out = {}
    for pid, value in zip(table.column("problem_id").to_pylist(), table.column(column).to_pylist()):
        out.setdefault(pid, []).append(value)
    return out


def test_uniform_targets_caps_and_stop_rules_through_solve(tmp_path):
    table, planner, report, _ = solve_scripted(tmp_path, DarsConfig("uniform", k_u=2, n_max=12))
    state = planner.state(list(SCRIPTS))
    assert state.target.tolist() == [2] * 5
    # always: its 4 difficulty samples already hold 2 correct; half: 2 of 4 too; quarter: correct at 3, 7;
    # cut: correct at 4, 9; never: the cap.
    assert state.n_trials.tolist() == [4, 12, 4, 8, 10]
    assert state.stop_reason.tolist() == [
        "target_reached",
        "n_max",
        "target_reached",
        "target_reached",
        "target_reached",
    ]
    indices = per_problem(table, "sample_index")
    assert all(indices[pid] == list(range(n)) for pid, n in zip(SCRIPTS, state.n_trials.tolist()))
    assert table.num_rows == report.kept == int(state.n_trials.sum())


def test_prop2diff_targets_follow_the_fail_rate_and_strict_stop_collects_one_more(tmp_path):
    config = DarsConfig("prop2diff", k_p=4, n_max=16)
    _, planner, _, _ = solve_scripted(tmp_path, config)
    state = planner.state(list(SCRIPTS))
    # fail rates 0, 1, .5, .75, 1 -> targets 1, 4, 2, 3, 4 (hardest gets k_p, at least 1 each)
    assert state.fail_rate.tolist() == [0.0, 1.0, 0.5, 0.75, 1.0]
    assert state.target.tolist() == [1, 4, 2, 3, 4]
    assert state.n_trials.tolist() == [4, 16, 4, 12, 16]  # cut: correct at 4, 9, 14 only -> the cap
    assert state.stop_reason.tolist() == ["target_reached", "n_max", "target_reached", "target_reached", "n_max"]
    _, strict, _, _ = solve_scripted(tmp_path, replace(config, strict_stop=True), ledger_name="strict.sqlite")
    assert strict.state(list(SCRIPTS)).n_trials.tolist() == [4, 16, 5, 16, 16]  # target + 1 correct, or the cap


def test_vrt_draws_a_fixed_number_and_counts_reach_as_one_correct(tmp_path):
    _, planner, _, _ = solve_scripted(tmp_path, DarsConfig("vrt", vrt_trials=5), n_d=2)
    state = planner.state(list(SCRIPTS))
    assert state.n_trials.tolist() == [5] * 5 and set(state.stop_reason.tolist()) == {"vrt_done"}
    report = summary(state)
    assert report["with_target"] == 5 and report["reached"] == 4 and report["reach_ratio"] == 0.8  # never: none


def test_grader_reasons_are_kept_on_every_sample_and_counted(tmp_path):
    table, planner, report, _ = solve_scripted(tmp_path, DarsConfig("uniform", k_u=2, n_max=12))
    reasons = per_problem(table, "grade_reason")
    assert set(reasons["always"]) == {"exact"} and set(reasons["never"]) == {"mismatch"}
    assert reasons["quarter"] == ["no_answer", "no_answer", "no_answer", "exact"] * 2
    assert reasons["cut"] == ["truncated"] * 4 + ["exact"] + ["truncated"] * 4 + ["exact"]
    assert table.column("grade_reason").null_count == 0
    assert dict(report.grade_reasons) == {"exact": 10, "mismatch": 14, "no_answer": 6, "truncated": 8}


@pytest.mark.parametrize("capacity, order_seed", [(1, 0), (8, 3)])
def test_a_rerun_is_served_from_the_ledger_with_the_same_rows(tmp_path, capacity, order_seed):
    config = DarsConfig("prop2diff", k_p=4, n_max=16)
    first, _, report, engine = solve_scripted(tmp_path, config, capacity=capacity, order_seed=order_seed)
    again, _, report2, engine2 = solve_scripted(tmp_path, config, capacity=capacity, order_seed=order_seed + 1)
    assert engine.generated == report.submitted - report.cancelled >= first.num_rows
    assert engine2.generated == 0 and report2.graded == 0 and report2.verdicts_reused == again.num_rows
    assert again.equals(first)


def test_one_run_serves_uniform_and_prop2diff_and_each_curation_is_its_own_runs(tmp_path):
    # fail rates 0, 1, .5, .75, 1: uniform wants 3 each, prop2diff 1, 4, 2, 3, 4; the run samples to the larger
    both = DarsConfig("uniform", k_u=3, k_p=4, n_max=16, serve=("prop2diff",))
    table, planner, _, _ = solve_scripted(tmp_path, both, ledger_name="both.sqlite")
    state = planner.state(list(SCRIPTS))
    assert state.target.tolist() == [3, 4, 3, 3, 4]
    # half: its 3rd correct is sample 4; quarter: 3rd correct at 11; cut: only 3 correct (4, 9, 14) before the cap
    assert state.n_trials.tolist() == [4, 16, 5, 12, 16]
    assert per_problem(table, "target_uniform") == {pid: [3] * n for pid, n in zip(SCRIPTS, state.n_trials.tolist())}
    wanted = dict(zip(SCRIPTS, [1, 4, 2, 3, 4]))
    assert {pid: set(v) for pid, v in per_problem(table, "target_prop2diff").items()} == {
        pid: {t} for pid, t in wanted.items()
    }
    assert table.column("target").equals(table.column("target_uniform"))  # the primary's
    kept = {name: per_problem(curate(table, name), "sample_index") for name in ("uniform", "prop2diff")}
    assert kept["uniform"] == {"always": [0, 1, 2], "half": [0, 2, 4], "quarter": [3, 7, 11], "cut": [4, 9, 14]}
    assert kept["prop2diff"] == {"always": [0], "half": [0, 2], "quarter": [3, 7, 11], "cut": [4, 9, 14]}
    for name, alone in (
        ("uniform", replace(both, serve=())),
        ("prop2diff", replace(both, strategy="prop2diff", serve=())),
    ):
        single, single_planner, _, _ = solve_scripted(tmp_path, alone, ledger_name=f"{name}.sqlite")
        assert per_problem(curate(single), "sample_index") == kept[name]  # the same rows as a run of its own
        assert (single_planner.state(list(SCRIPTS)).n_trials <= state.n_trials).all()


class RestatingEngine(ScriptedEngine):
    """Test double, no model: every sample answers with the question's own expression."""

    def generate(self, requests):
        for position, _ in enumerate(requests):
            self.generated += 1
            yield position, Completion("so it is \\boxed{\\sin 0^\\circ}", "stop", 3, 5)


def test_the_grader_sees_the_question_and_refuses_a_restated_answer(tmp_path):
    problems = [Problem("sin0", "Compute $\\sin 0^\\circ$.", "0")]
    solver = Solver(get_template("deepseekmath"), SamplingParams(temperature=1.0, top_p=0.95, max_tokens=16), SALT, "m")
    folder = tmp_path / "parts"
    with RequestLedger(tmp_path / "l.sqlite") as ledger, SampleSink(folder, DART_SAMPLE_SCHEMA, 5) as sink:
        with LedgerStream(RestatingEngine(), ledger, log=lambda _: None) as stream:
            planner, report = solve(problems, 2, None, solver, stream, sink=sink, log=lambda _: None)
        sink.write(tmp_path / "rows.parquet", transform=with_targets(planner.state(["sin0"])))
    table = pq.read_table(tmp_path / "rows.parquet")
    assert table.column("grade_reason").to_pylist() == ["restated", "restated"]
    assert table.column("correct").to_pylist() == [False, False]
    assert dict(report.grade_reasons) == {"restated": 2}
