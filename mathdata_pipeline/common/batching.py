"""Batches by a token budget: as many rows as fit, so short texts share a batch and long ones do
not run out of memory, whatever the model or the row lengths."""

from __future__ import annotations

from collections.abc import Sequence


def token_budget_batches(lengths: Sequence[int], max_tokens: int, max_rows: int | None = None) -> list[list[int]]:
    """Row indices grouped into batches whose padded size fits `max_tokens`.

    Inputs: `lengths`, the token count of each row; `max_tokens`, the budget of one batch counted
    as rows x the longest row in it (what a right-padded batch holds); `max_rows`, an optional cap
    on rows per batch. Rows are taken longest first (ties in index order), so the first batch is
    the largest and memory trouble shows at once; a row longer than the budget gets a batch of its
    own. Output: lists of indices into `lengths`, every index exactly once, deterministic.
    Raises ValueError for a budget or cap below 1 or a negative length.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    for row, length in enumerate(lengths):
        if length < 0:
            raise ValueError(f"row {row}: negative length {length}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for index in order:
        if batches:
            batch = batches[-1]
            width = max(lengths[batch[0]], 1)  # the first row of a batch is its longest
            if (len(batch) + 1) * width <= max_tokens and (max_rows is None or len(batch) < max_rows):
                batch.append(index)
                continue
        batches.append([index])
    return batches
