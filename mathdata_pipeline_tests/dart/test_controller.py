"""The event-driven DARS planner: the samples it keeps do not depend on the order results arrive
in, match the round-based reference loop, never pass the caps, and count overshoot."""

from __future__ import annotations

import random

import numpy as np
import pytest

from mathdata_pipeline.dart.controller import DarsPlanner
from mathdata_pipeline.dart.dars import DarsConfig, plan_round, start, update

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
