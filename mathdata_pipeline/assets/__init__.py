"""Thin Dagster assets: read inputs, call a method, write a table, report metadata and checks."""
