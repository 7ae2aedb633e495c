"""Seed problems, benchmarks and general sets: the sources config, file readers, the problem schema."""
