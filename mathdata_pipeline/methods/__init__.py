"""Algorithms with no Dagster import: reading, grading, decontamination, selection."""
