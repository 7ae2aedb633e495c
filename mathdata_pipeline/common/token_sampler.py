"""The Trainer's batch sampler for batches by a token budget (kept apart from `training` so that
importing the stages does not import transformers)."""

from __future__ import annotations

import numpy as np
from transformers.trainer_pt_utils import BatchRebalanceSampler

from mathdata_pipeline.common.batching import token_budget_batches


class TokenBudgetSampler(BatchRebalanceSampler):
    """Training batches of row indices whose padded size fits a token budget
    (`common.batching.token_budget_batches`; rows of similar length share a batch), in a seeded
    random order that changes with the epoch. One process; the Trainer takes a
    BatchRebalanceSampler subclass as its DataLoader's `batch_sampler`."""

    def __init__(self, lengths: list[int], max_tokens: int, max_rows: int | None, seed: int):
        self.batches = token_budget_batches(lengths, max_tokens, max_rows)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer at the start of each epoch."""
        self.epoch = epoch

    def __iter__(self):
        for index in np.random.default_rng([self.seed, self.epoch]).permutation(len(self.batches)):
            yield list(self.batches[index])

    def __len__(self) -> int:
        return len(self.batches)
