"""Benchmark decontamination: the n-gram index, the overlap filter and the in-asset check."""
