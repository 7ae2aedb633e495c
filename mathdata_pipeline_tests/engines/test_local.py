"""The embedded llama.cpp engine, the request ledger and the runner, on the real SmolLM2 model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from mathdata_pipeline.engines.base import (
    Completion,
    Engine,
    Request,
    RequestError,
    SamplingParams,
    derive_seed,
    retry_seed,
)
from mathdata_pipeline.engines.ledger import RequestLedger
from mathdata_pipeline.engines.local import LocalEngine
from mathdata_pipeline.engines.runner import ErrorBudgetExceeded, LedgerStream, run_requests, run_scores

QUESTION = [{"role": "user", "content": "What is 2 + 3? Answer with a number."}]


@pytest.fixture(scope="module")
def engine():
    with LocalEngine(n_ctx=512) as eng:
        yield eng


def _request(seed: int, max_tokens: int = 12, temperature: float = 0.8) -> Request:
    return Request.chat(QUESTION, SamplingParams(temperature=temperature, top_p=0.95, max_tokens=max_tokens, seed=seed))


def test_chat_template_comes_from_the_gguf(engine):
    rendered = engine.render(_request(1))
    assert rendered.startswith("<|im_start|>system") or rendered.startswith("<|im_start|>user")
    assert rendered.endswith("<|im_start|>assistant\n") and "What is 2 + 3?" in rendered
    assert engine.info.backend == "local" and len(engine.info.revision) == 12


def test_seeded_sampling_is_reproducible_and_seeds_differ(engine):
    requests = [_request(7), _request(7)] + [_request(s) for s in range(100, 106)]
    results = dict(engine.generate(requests))
    texts = [results[i].text for i in range(len(requests))]
    assert texts[0] == texts[1]
    assert len(set(texts[2:])) > 1
    first = results[0]
    assert isinstance(first, Completion) and first.prompt_tokens > 5 and 0 < first.completion_tokens <= 12


def test_length_finish_reason_and_prompt_too_long(engine):
    ((_, capped),) = engine.generate([_request(3, max_tokens=4)])
    assert capped.finish_reason == "length" and capped.completion_tokens == 4
    huge = Request(prompt="word " * 2000, params=SamplingParams(max_tokens=4))
    ((_, error),) = engine.generate([huge])
    assert isinstance(error, RequestError) and error.reason == "prompt_too_long" and not error.retryable


def test_score_prefers_the_likely_continuation(engine):
    prompt = "The capital of France is"
    likely, unlikely = engine.score(prompt, " Paris."), engine.score(prompt, " banana spaceship.")
    assert likely.tokens >= 2 and likely.logprob > unlikely.logprob


class CountingEngine(Engine):
    """Wraps the real engine and counts the requests it is actually asked to generate."""

    def __init__(self, inner: Engine):
        self.inner, self.info, self.generated, self.scored = inner, inner.info, 0, 0

    def render(self, request):
        return self.inner.render(request)

    def generate(self, requests: Sequence[Request]) -> Iterator:
        self.generated += len(requests)
        yield from self.inner.generate(requests)

    def score(self, prompt, completion):
        self.scored += 1
        return self.inner.score(prompt, completion)


class EmptyCompletionInjectingEngine(CountingEngine):
    """Fault injection: blanks the completion of every request whose seed is in `seeds` (default:
    every request)."""

    def __init__(self, inner: Engine, seeds: set[int] | None = None):
        super().__init__(inner)
        self.seeds = seeds

    def generate(self, requests):
        for index, result in super().generate(requests):
            if self.seeds is None or requests[index].params.seed in self.seeds:
                result = Completion("  ", "stop", result.prompt_tokens, 1)
            yield index, result


def test_ledger_reuses_finished_requests_and_new_params_are_new_keys(engine, tmp_path):
    requests = [_request(derive_seed("p1", 0, i)) for i in range(4)]
    counting = CountingEngine(engine)
    with RequestLedger(tmp_path / "l.sqlite") as ledger:
        first, stats1 = run_requests(counting, ledger, requests, log=lambda _: None)
        again, stats2 = run_requests(counting, ledger, requests, log=lambda _: None)
        assert counting.generated == 4 and stats1.cache_hits == 0 and stats2.cache_hits == 4
        assert first == again and stats2.tokens_per_second == 0.0
        changed = [_request(r.params.seed, max_tokens=13) for r in requests[:2]]
        run_requests(counting, ledger, changed, log=lambda _: None)
        assert counting.generated == 6 and len(ledger) == 6
    metadata = stats1.as_metadata()
    assert set(metadata) == {
        "requests",
        "cache_hits",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        "tokens_per_second",
        "wall_seconds",
        "retries",
    }
    assert metadata["completion_tokens"] > 0 and metadata["tokens_per_second"] > 0


def test_bad_rows_are_recorded_and_skipped_until_the_error_budget(engine, tmp_path):
    long_prompt = Request(prompt="word " * 2000, params=SamplingParams(max_tokens=4))
    requests = [_request(2 * i) for i in range(19)] + [long_prompt]  # 1 of 20 = 5%: allowed
    lines: list[str] = []
    with RequestLedger(tmp_path / "l.sqlite") as ledger:
        results, stats = run_requests(engine, ledger, requests, log=lines.append, progress_interval=0)
        assert stats.errors == 1 and isinstance(results[-1], RequestError)
        assert any("20/20 done" in line and "ETA" in line for line in lines)
        with pytest.raises(ErrorBudgetExceeded, match=r"2 of 3 requests failed.*after up to 2 attempts") as failed:
            run_requests(
                EmptyCompletionInjectingEngine(engine),
                ledger,
                [_request(1), long_prompt, _request(4)],
                row_ids=["row-a", "row-b", "row-c"],
                log=lambda _: None,
            )
        assert "row-a: empty_completion" in str(failed.value) and "row-b: prompt_too_long" in str(failed.value)


def test_an_empty_completion_heals_with_a_derived_seed_now_and_on_a_rerun(engine, tmp_path):
    requests = [_request(derive_seed("heal", i)) for i in range(3)]
    blank_first = EmptyCompletionInjectingEngine(engine, seeds={requests[0].params.seed, requests[1].params.seed})
    with RequestLedger(tmp_path / "l.sqlite") as ledger:
        results, stats = run_requests(blank_first, ledger, requests, log=lambda _: None)  # retried in this run
        assert [r.attempt for r in results] == [1, 1, 0] and stats.retries == 2 and stats.errors == 0
        assert blank_first.generated == 5 and all(isinstance(r, Completion) for r in results)
        again, stats = run_requests(CountingEngine(engine), ledger, requests, log=lambda _: None)
        assert again == results and stats.cache_hits == 3  # the stored empty attempts lead to the stored retries
    with RequestLedger(tmp_path / "one.sqlite") as ledger:
        once = EmptyCompletionInjectingEngine(engine, seeds={requests[0].params.seed})
        [failed], stats = run_requests(once, ledger, requests[:1], attempts_per_run=1, max_error_share=1.0)
        assert failed.reason == "empty_completion" and stats.errors == 1
        rerun = CountingEngine(engine)
        [healed], stats = run_requests(rerun, ledger, requests[:1], log=lambda _: None)
    assert isinstance(healed, Completion) and healed.attempt == 1 and rerun.generated == 1  # only the new seed
    seed = retry_seed(requests[0].params.seed, 1)
    ((_, direct),) = engine.generate([Request.chat(QUESTION, SamplingParams(0.8, 0.95, 12, seed=seed))])
    assert direct.text == healed.text


def test_a_stream_serves_cached_requests_at_once_and_takes_more_while_running(engine, tmp_path):
    with RequestLedger(tmp_path / "l.sqlite") as ledger:
        run_requests(engine, ledger, [_request(21)], log=lambda _: None)
        with LedgerStream(engine, ledger, log=lambda _: None) as stream:
            stream.submit("cached", _request(21))
            stream.submit("new", _request(22))
            assert stream.pending == 2 and stream.next_result()[0] == "cached"
            stream.submit("late", _request(23))
            assert {stream.next_result()[0], stream.next_result()[0]} == {"new", "late"}
            assert stream.pending == 0 and stream.stats.cache_hits == 1 and stream.stats.requests == 3


def test_same_seed_same_text_whatever_ran_before(engine):
    target = _request(11, max_tokens=16)
    ((_, alone),) = engine.generate([target])
    results = dict(engine.generate([_request(12, max_tokens=16), target]))
    assert results[1].text == alone.text


def test_stats_of_several_rounds_add_up():
    from mathdata_pipeline.engines.runner import GenerationStats

    total = GenerationStats.combine(
        [
            GenerationStats(requests=2, completion_tokens=10, generated_tokens=10, wall_seconds=1.0),
            GenerationStats(requests=3, cache_hits=3, completion_tokens=7, wall_seconds=1.0),
        ]
    )
    assert (total.requests, total.cache_hits, total.completion_tokens) == (5, 3, 17)
    assert total.tokens_per_second == 5.0


def test_scores_go_through_the_ledger_and_are_reused(engine, tmp_path):
    pairs = [("Question: 2+2?\nAnswer:", " 4"), ("Question: 3+3?\nAnswer:", " 6"), ("Question: 2+2?\nAnswer:", " 4")]
    counting = CountingEngine(engine)
    with RequestLedger(tmp_path / "l.sqlite") as ledger:
        first, stats1 = run_scores(counting, ledger, pairs, log=lambda _: None)
        assert counting.scored == 2 and stats1.cache_hits == 0  # the repeated pair is scored once
        again, stats2 = run_scores(counting, ledger, pairs, log=lambda _: None)
    assert counting.scored == 2 and stats2.cache_hits == 3
    assert first == again and first[0] == first[2]
    direct = engine.score(*pairs[1])
    assert first[1].tokens == direct.tokens and abs(first[1].logprob - direct.logprob) < 1e-6


def test_batched_scoring_reuses_the_shared_prefix_and_gives_the_same_scores(engine, tmp_path):
    demo = "Question: Tom has 3 apples and buys 4 more. How many apples does he have?\nAnswer:\n3 + 4 = 7. The answer is 7.\n\n"
    pairs = [(demo + f"Question: What is {i} + {i}?\nAnswer:\n", f"{i} + {i} = {2 * i}.") for i in range(4)]
    pairs.append(("word " * 600, "too long for the context"))
    one_by_one = [engine.score(*pair) for pair in pairs[:4]]
    batched = engine.score_many(pairs)
    assert [s.tokens for s in batched[:4]] == [s.tokens for s in one_by_one]
    assert max(abs(a.logprob - b.logprob) for a, b in zip(batched, one_by_one)) < 1e-3
    assert isinstance(batched[4], RequestError) and batched[4].reason == "prompt_too_long"
    with RequestLedger(tmp_path / "l.sqlite") as ledger:
        scores, stats = run_scores(engine, ledger, pairs, log=lambda _: None)
    assert scores[4] is None and stats.errors == 1 and scores[:4] == batched[:4]
