"""Influence pruning: LESS-style gradient features, s_C/s_I scores and baselines."""
