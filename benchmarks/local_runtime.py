"""Which runtime for the embedded CPU model: llama.cpp vs transformers on the same GGUF file.

    .venv/bin/python benchmarks/local_runtime.py [--quick]

Greedy single-stream generation of the same chat prompts; prints tokens/s of each and the ratio
llama.cpp / transformers. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mathdata_pipeline.engines.base import Request, SamplingParams  # noqa: E402
from mathdata_pipeline.engines.local import LocalEngine, embedded_gguf_path  # noqa: E402

PROMPTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether?",
    "What is the sum of the first ten positive integers?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    max_tokens = 32 if args.quick else 128
    with LocalEngine() as engine:
        requests = [
            Request.chat([{"role": "user", "content": p}], SamplingParams(max_tokens=max_tokens)) for p in PROMPTS
        ]
        prompts = [engine.render(r) for r in requests]
        start = time.perf_counter()
        llama_tokens = sum(r.completion_tokens for _, r in engine.generate(requests))
        llama_tps = llama_tokens / (time.perf_counter() - start)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    load_start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32)
    load_seconds = time.perf_counter() - load_start
    hf_tokens, start = 0, time.perf_counter()
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
            hf_tokens += out.shape[1] - ids["input_ids"].shape[1]
    hf_tps = hf_tokens / (time.perf_counter() - start)
    print(f"llama.cpp    : {llama_tps:.1f} tokens/s ({llama_tokens} tokens)")
    print(f"transformers : {hf_tps:.1f} tokens/s ({hf_tokens} tokens; GGUF load and dequantize {load_seconds:.1f}s)")
    print(f"ratio        : {llama_tps / hf_tps:.2f}x")
    print(
        json.dumps(
            {
                "benchmark": "local_runtime",
                "llama_cpp_tokens_per_second": round(llama_tps, 1),
                "transformers_tokens_per_second": round(hf_tps, 1),
                "ratio": round(llama_tps / hf_tps, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
