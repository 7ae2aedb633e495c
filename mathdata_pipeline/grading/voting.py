"""The one majority vote of the project (self-consistency over sampled responses).

Used wherever a question has no gold answer: MuggleMath's augmented questions, ScaleQuest's
solver majority (the question's reference answer) and its kept response. The rule:

- A response votes unless it was cut off at the token limit (`finish_reason` "length" or
  "abort"): a truncated response neither votes nor can be kept.
- Every voting response is a ballot. Its answer is extracted as the grader extracts it; a ballot
  without an answer counts in the denominator but can never win.
- Answers are grouped by the grader's equivalence (`Grader.same_answer_many`: exact after
  normalization, numeric with tolerance, then symbolic in the worker pool with its hard timeout),
  so `0.5`, `\\frac12` and `1/2` are one answer. Grouping is greedy in sample order: an answer joins
  the first earlier group whose first answer it equals (no chaining through a third answer).
- The largest group wins; a tie goes to the group whose first response comes first in sample
  order. Its `share` is the group's size over all ballots; below `min_share` there is no winner.
- The representative response of the winner is its first member in sample order: it is the
  response a stage keeps when it keeps one, so a kept response always carries the question's
  reference answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from mathdata_pipeline.grading.extract import extract_answer
from mathdata_pipeline.grading.grader import TRUNCATED_FINISH_REASONS, Grader
from mathdata_pipeline.grading.normalize import normalize_answer


@dataclass(frozen=True)
class Vote:
    """The outcome of one question's vote.

    `answer`: the winning answer as its first member wrote it, None without a winner;
    `winner`: index of the winner's first member (the representative response), None without one;
    `votes`: size of the largest group; `ballots`: responses that voted (not truncated);
    `share`: votes / ballots (0.0 without ballots); `extracted`: the extracted answer of every
    response (None when absent or truncated); `in_winner`: per response, whether it is in the
    winning group; `reason`: why, e.g. "majority 3/5", "below min_share 2/5", "no answer".
    """

    answer: str | None
    winner: int | None
    votes: int
    ballots: int
    share: float
    extracted: tuple[str | None, ...]
    in_winner: tuple[bool, ...]
    reason: str


def vote_many(
    groups: Sequence[Sequence[tuple[str | None, str | None]]], grader: Grader, *, min_share: float
) -> list[Vote]:
    """Vote once per question.

    Inputs: `groups`, per question its responses in sample order as (text or None for a failed
    request, finish_reason); `grader`, whose equivalence groups the answers (all questions'
    comparisons go to it in one batch); `min_share`, the least share of ballots the winner needs
    (0 accepts any plurality). Output: one `Vote` per question.
    """
    if not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share must be within [0, 1], got {min_share}")
    extracted = [[_answer(text, finish) for text, finish in group] for group in groups]
    distinct = [list(dict.fromkeys(normalize_answer(a) for a in answers if a is not None)) for answers in extracted]
    pairs = [(g, i, j) for g, keys in enumerate(distinct) for j in range(len(keys)) for i in range(j)]
    verdicts = grader.same_answer_many([(distinct[g][i], distinct[g][j]) for g, i, j in pairs])
    same = {(g, i, j) for (g, i, j), verdict in zip(pairs, verdicts) if verdict.correct}
    return [
        _tally(group, answers, keys, same, g, min_share)
        for g, (group, answers, keys) in enumerate(zip(groups, extracted, distinct))
    ]


def _answer(text: str | None, finish_reason: str | None) -> str | None:
    """The extracted answer of a voting response; None for failed, truncated or answerless ones."""
    if not text or finish_reason in TRUNCATED_FINISH_REASONS:
        return None
    answer = extract_answer(text)
    return answer if answer is not None and normalize_answer(answer) else None


def _tally(
    group: Sequence[tuple[str | None, str | None]],
    answers: list[str | None],
    keys: list[str],
    same: set[tuple[int, int, int]],
    g: int,
    min_share: float,
) -> Vote:
    """The Vote of question `g` (see module docstring for the rule)."""
    leader_of: dict[int, int] = {}  # distinct answer -> the first distinct answer of its group
    for j in range(len(keys)):
        leader_of[j] = next((i for i in range(j) if leader_of[i] == i and (g, i, j) in same), j)
    position = {key: j for j, key in enumerate(keys)}
    member_group = [leader_of[position[normalize_answer(a)]] if a is not None else None for a in answers]
    ballots = sum(text is not None and bool(text) and finish not in TRUNCATED_FINISH_REASONS for text, finish in group)
    sizes: dict[int, int] = {}
    for leader in member_group:
        if leader is not None:
            sizes[leader] = sizes.get(leader, 0) + 1
    extracted = tuple(answers)
    if not sizes:
        return Vote(
            None, None, 0, ballots, 0.0, extracted, (False,) * len(group), "no answer" if ballots else "no ballots"
        )
    first_member = {leader: member_group.index(leader) for leader in sizes}
    best = min(sizes, key=lambda leader: (-sizes[leader], first_member[leader]))
    votes, share = sizes[best], sizes[best] / ballots
    in_winner = tuple(leader == best for leader in member_group)
    if share < min_share:
        return Vote(
            None, None, votes, ballots, share, extracted, (False,) * len(group), f"below min_share {votes}/{ballots}"
        )
    winner = first_member[best]
    return Vote(answers[winner], winner, votes, ballots, share, extracted, in_winner, f"majority {votes}/{ballots}")


def vote_on_samples(samples: pa.Table, grader: Grader, *, min_share: float) -> tuple[pa.Table, dict[str, Vote]]:
    """Vote per question over a table of sample rows (`common.samples.SAMPLE_SCHEMA`).

    Inputs: the samples (grouped by `problem_id`, each group in `sample_index` order); the grader;
    `min_share` (see `vote_many`). Output: (the samples with `extracted_answer`, `correct` (in the
    winning group; null for a failed request), `majority_answer`, `agreement` (the winner's share)
    set, and {problem_id: Vote}).
    """
    ids = samples.column("problem_id").to_pylist()
    order = sorted(range(len(ids)), key=lambda i: (ids[i], samples.column("sample_index")[i].as_py()))
    by_question: dict[str, list[int]] = {}
    for i in order:
        by_question.setdefault(ids[i], []).append(i)
    texts, finishes = samples.column("text").to_pylist(), samples.column("finish_reason").to_pylist()
    questions = list(by_question)
    votes = vote_many(
        [[(texts[i], finishes[i]) for i in by_question[q]] for q in questions], grader, min_share=min_share
    )
    extracted, correct = [None] * len(ids), [None] * len(ids)
    majority, agreement = [None] * len(ids), [0.0] * len(ids)
    for question, vote in zip(questions, votes):
        for position, i in enumerate(by_question[question]):
            extracted[i] = vote.extracted[position]
            correct[i] = vote.in_winner[position] if texts[i] else None
            majority[i], agreement[i] = vote.answer, vote.share
    table = samples
    for name, values, kind in (
        ("extracted_answer", extracted, pa.string()),
        ("correct", correct, pa.bool_()),
        ("majority_answer", majority, pa.string()),
        ("agreement", agreement, pa.float32()),
    ):
        column = pa.array(values, kind)
        table = (
            table.set_column(table.schema.get_field_index(name), name, column)
            if name in table.column_names
            else table.append_column(name, column)
        )
    return table, dict(zip(questions, votes))
