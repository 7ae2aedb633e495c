"""mathdata-pipeline: math-reasoning training-data mixtures built as Dagster assets."""

__version__ = "0.1.0"
