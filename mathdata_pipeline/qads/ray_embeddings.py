"""Embeddings computed by Ray workers (`common.ray_map`), for `embed_with_cache`.

Every worker builds its own embedder with `build_embedder(kind, **settings)` (the model loads on
its node, on a GPU when `gpus_per_worker` asks for one). The Dagster step keeps the cache: it sends
only the texts the cache lacks, and adds each chunk's vectors to the cache as the chunk comes back,
so a worker lost mid-run costs only the chunk it held and a rerun embeds only what is still missing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from mathdata_pipeline.common.ray_map import RayCompute, RayPool
from mathdata_pipeline.qads.embeddings import Embedder, build_embedder


def _embed(embedder: Embedder, texts: list[str]) -> tuple[str, np.ndarray]:
    """(the worker embedder's model_key, its vectors of `texts`) (runs on a worker)."""
    return embedder.model_key, embedder.embed(texts)


class RayEmbedder:
    """An `Embedder` whose vectors come from a pool of Ray workers.

    Parameters: `compute` (the cluster and the workers' resources), `kind` and `settings` as for
    `build_embedder`. `model_key` is the one built here (no model is loaded here); a worker whose
    embedder has another key (e.g. `dtype` "auto" resolving differently on a GPU node) is an error.
    Call `close` (or use as a context manager) to stop the workers.
    """

    def __init__(self, compute: RayCompute, kind: str, **settings):
        self.model_key = build_embedder(kind, **settings).model_key
        self.pool = RayPool(build_embedder, {"kind": kind, **settings}, compute)

    def __enter__(self) -> RayEmbedder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def workers(self) -> int:
        """Workers still alive."""
        return len(self.pool.live())

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 (len(texts), d) unit-norm rows, in input order (all texts as one chunk)."""
        return next(self.embed_in_chunks([(0, list(texts))]))[1]

    def embed_in_chunks(self, chunks: Sequence[tuple[int, list[str]]]) -> Iterator[tuple[int, np.ndarray]]:
        """`(index, vectors)` of each `(index, texts)` chunk, in completion order.
        Raises ValueError when a worker's embedder has another model_key than this one."""
        for index, (key, vectors) in self.pool.map(_embed, chunks):
            if key != self.model_key:
                raise ValueError(
                    f"a Ray worker embeds as {key!r}, this step as {self.model_key!r}: set device and dtype explicitly"
                )
            yield index, vectors

    def close(self) -> None:
        """Stop the workers."""
        self.pool.close()


@contextmanager
def open_embedder(compute: RayCompute | None, kind: str, **settings) -> Iterator[Embedder]:
    """The embedder of `kind` and `settings` (`build_embedder`), built here when `compute` is None,
    else a RayEmbedder on the cluster of `compute`, whose workers stop when the block ends."""
    if compute is None:
        yield build_embedder(kind, **settings)
        return
    with RayEmbedder(compute, kind, **settings) as embedder:
        yield embedder
