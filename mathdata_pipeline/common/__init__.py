"""What several stage families share: text hashing, sample rows, prompt templates, model loading,
fine-tuning helpers, table statistics, plots; Dagster partitions and metadata helpers."""
