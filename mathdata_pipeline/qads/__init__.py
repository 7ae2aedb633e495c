"""QaDS: embeddings, one-shot quality, k-center diversity and the selection rules."""
