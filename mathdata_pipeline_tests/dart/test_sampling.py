"""DARS through the real embedded engine and ledger with grading beside generation; a rerun is served
entirely from the ledger (no generation, no grading); kept samples are curated by sample index."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mathdata_pipeline.common.samples import SAMPLE_SCHEMA, SampleSink, SampleSpec, solve_request
from mathdata_pipeline.common.templates import get_template
from mathdata_pipeline.curation.solutions import kept_dart_samples
from mathdata_pipeline.dart.dars import DarsConfig
from mathdata_pipeline.dart.sampling import (
    DART_SAMPLE_SCHEMA,
    Problem,
    Solver,
    curate,
    kept_positions,
    solve,
    with_targets,
)
from mathdata_pipeline.engines.base import SamplingParams
from mathdata_pipeline.engines.ledger import RequestLedger
from mathdata_pipeline.engines.local import LocalEngine
from mathdata_pipeline.engines.runner import LedgerStream

PROBLEMS = [
    Problem("p1", "What is 2 + 3?", "5", "Level 1"),
    Problem("p2", "What is 10 - 4?", "6", "Level 2"),
    Problem("p3", "What is 3 times 3?", "9", "Level 1"),
]


@pytest.fixture(scope="module")
def engine():
    with LocalEngine(n_ctx=512) as eng:
        yield eng


CONFIG = DarsConfig("uniform", k_u=1, n_max=3)


def run(engine, ledger, folder, *, config=CONFIG):
    solver = Solver(get_template("chat"), SamplingParams(temperature=0.9, top_p=0.95, max_tokens=24), "t", "smollm2")
    with SampleSink(folder, DART_SAMPLE_SCHEMA, len(PROBLEMS)) as sink:
        with LedgerStream(engine, ledger, log=lambda _: None) as stream:
            planner, report = solve(PROBLEMS, 1, config, solver, stream, sink=sink, log=lambda _: None)
        state = planner.state([p.problem_id for p in PROBLEMS])
        sink.write(folder.parent / "samples.parquet", transform=with_targets(state))
    return pq.read_table(folder.parent / "samples.parquet"), stream.stats, report, state


@pytest.mark.parametrize("template", ["chat", "deepseekmath"])
def test_solver_requests_equal_solve_request_whatever_the_order(template):
    params = SamplingParams(temperature=0.9, top_p=0.95, max_tokens=24, stop=("END",))
    solver = Solver(get_template(template), params, "salt", "smollm2")
    asked = [(problem, index) for index in (3, 0, 1) for problem in PROBLEMS]
    for problem, index in asked:
        spec = SampleSpec(problem.problem_id, problem.question, index, 0)
        expected = solve_request(get_template(template), spec, params, seed_salt="salt")
        assert solver.request(problem, index) == expected
    assert len({solver.request(p, i).params.seed for p, i in asked}) == len(asked)


def test_dars_through_engine_and_ledger_then_a_rerun_from_the_ledger_alone(engine, tmp_path):
    with RequestLedger(tmp_path / "l.sqlite") as ledger:
        first, stats, report, state = run(engine, ledger, tmp_path / "a" / "parts")
        again, stats2, report2, state2 = run(engine, ledger, tmp_path / "b" / "parts")
    assert first.num_rows == int(state.n_trials.sum()) == report.kept and stats.requests >= first.num_rows
    assert set(first.column("problem_id").to_pylist()) == {"p1", "p2", "p3"}
    order = list(zip(first.column("problem_id").to_pylist(), first.column("sample_index").to_pylist()))
    assert order == sorted(order, key=lambda r: (int(r[0][1:]), r[1]))  # problem order, then index
    assert max(first.column("sample_index").to_pylist()) <= 2  # n_max = 3
    completed = first.column("error").null_count  # rows with a completion, each graded once
    assert report.graded + report.verdicts_reused >= completed
    assert all(g == "mathdata-grader" for g in first.column("grader").to_pylist() if g)
    assert first.column("target").to_pylist() == [1] * first.num_rows
    reasons = first.column("grade_reason").to_pylist()  # on every row, counted in the report
    assert None not in reasons and sum(report.grade_reasons.values()) == first.num_rows
    assert all(
        (r.split("@")[0] in ("exact", "numeric", "structural", "symbolic")) == c
        for r, c in zip(reasons, first.column("correct").to_pylist())
        if c is not None
    )
    assert again.equals(first)  # same seed, same table, byte for byte in content
    assert stats2.cache_hits == stats2.requests == first.num_rows  # nothing generated again
    assert report2.graded == 0 and report2.verdicts_reused == completed
    assert report2.overshoot == 0 and state2.stop_reason.tolist() == state.stop_reason.tolist()


def test_sink_writes_rows_in_query_and_index_order_whatever_the_arrival(tmp_path):
    rows = [(q, i) for q in (2, 0, 1) for i in (3, 1, 0, 2)]
    with SampleSink(tmp_path / "parts", SAMPLE_SCHEMA, 3, spill_bytes=1, rows_per_range=5) as sink:
        for q, i in rows:
            sink.append(q, i, {"sample_id": f"{q}-{i}", "problem_id": f"q{q}", "sample_index": i, "text": "x" * i})
        assert len(list((tmp_path / "parts").glob("part-*.parquet"))) == len(rows)
        sink.write(tmp_path / "out.parquet", transform=lambda t, queries: t.append_column("q", pa.array(queries)))
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("sample_id").to_pylist() == [f"{q}-{i}" for q in range(3) for i in range(4)]
    assert table.column("q").to_pylist() == [q for q in range(3) for _ in range(4)]
    assert not (tmp_path / "parts").exists()


def test_curation_keeps_the_first_target_correct_samples_by_index(tmp_path):
    samples = pa.table(
        {
            "problem_id": ["p", "p", "p", "q", "q", "r", "p"],
            "sample_index": [2, 0, 1, 0, 1, 0, 3],
            "correct": [True, True, None, True, True, False, True],
            "target": [2, 2, 2, 0, 0, 1, 2],
        }
    )
    assert kept_positions(*samples.columns).tolist() == [0, 1, 3, 4]
    assert curate(samples).column("sample_index").to_pylist() == [2, 0, 0, 1]
    rows = {n: [f"s{i}" if n == "sample_id" else None for i in range(7)] for n in SAMPLE_SCHEMA.names}
    rows |= {name: samples.column(name) for name in ("problem_id", "sample_index", "correct")}
    table = pa.table(rows, schema=SAMPLE_SCHEMA).append_column("target", samples.column("target"))
    pq.write_table(table, tmp_path / "s.parquet", row_group_size=2)
    assert kept_dart_samples(tmp_path / "s.parquet").column("sample_id").to_pylist() == ["s0", "s1", "s3", "s4"]
