"""Where tables live: the Parquet table store."""
