"""Dagster resources: the table store, data sources, and (later) engines and selectors."""
