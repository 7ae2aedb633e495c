"""ScaleQuest question-generator training: QFT (SFT on questions) and QPO (DPO on questions).

METHODS.md §3.3 Steps 1 and 2. A solver chat model becomes a question generator:
- QFT trains on `prefix + question + end_of_turn` texts (the chat template's user-turn opening, a
  seed question, the end-of-turn token) with the loss on the whole text, packed (TRL `SFTTrainer`).
- QPO runs DPO (TRL `DPOTrainer`) with the prefix alone as the prompt, a rewritten (better)
  question as "chosen" and the generator's original question as "rejected"; the reference model is
  the starting model (with LoRA: the same model with the adapter disabled).

Any Hugging Face causal LM trains (Llama, Qwen2, DeepSeek, ...). Both train LoRA adapters by
default (full fine-tuning, as in the paper, with `use_lora=False`), merge them into the weights and
write, inside `out_dir`: `hf/` (transformers weights + tokenizer, loadable by transformers or vLLM),
`model.gguf` (for the llama.cpp engine, only when `gguf_export.export_plan` allows it: a llama model
with a template GGUF of the same shape, by default the embedded SmolLM2; otherwise skipped and the
reason recorded) and `training.json`. Everything is written into a sibling folder first and renamed
into place, so `out_dir` never holds a half-written model.

Learning rates: left unset (None), each follows the choice of `use_lora`. Full fine-tuning takes
the paper's values (QFT 2e-5, QPO 5e-7). LoRA moves the model far less per step (a rank-16 adapter
on q/k/v/o that starts at zero), so it takes more: QFT 2e-4, ten times the full rate, as the
alignment-handbook's Zephyr recipes do (SFT full 2e-5, QLoRA 2e-4); QPO 2.5e-5, measured: 8 DPO
steps of SmolLM2 move the preference margin by +1.03 nats with LoRA at 2.5e-5 and +1.07 with full
fine-tuning at 5e-7, but only +0.20 at the handbook's LoRA 5e-6 and +0.02 at 5e-7
(benchmarks/qpo_learning_rate.py; benchmarks/RESULTS.md, "QPO learning rate").

Departures from the paper: the optimizer is `adamw_torch` (the paper's `paged_adamw_32bit` needs
bitsandbytes and a GPU) and there is no DeepSpeed. Device, precision and token-budget batches
follow `common.training` (CPU float32; CUDA bfloat16).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from mathdata_pipeline.common.devices import release_cuda_memory
from mathdata_pipeline.common.hf_models import EMBEDDED
from mathdata_pipeline.common.training import (
    TrainedModel,
    TrainingSettings,
    batch_by_tokens,
    common_training_args,
    finish_training,
    load_for_training,
    lora_config,
    start_output,
)

QFT_LEARNING_RATES = {"full": 2e-5, "lora": 2e-4}
QPO_LEARNING_RATES = {"full": 5e-7, "lora": 2.5e-5}


def _default_learning_rate(config, rates: dict[str, float]) -> None:
    """Fill a frozen config's unset `learning_rate` with the rate of its `use_lora` choice."""
    if config.learning_rate is None:
        object.__setattr__(config, "learning_rate", rates["lora" if config.use_lora else "full"])
    if config.learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {config.learning_rate}")


@dataclass(frozen=True)
class QftConfig(TrainingSettings):
    """QFT settings; defaults are the paper's (METHODS.md §3.3 Step 1).

    `base`: "embedded", a transformers folder or a hub id (see `hf_models.load_causal_lm`).
    `max_steps` > 0 overrides `epochs`. Up to `per_device_batch` sequences of `max_length` tokens
    (packed when `packing`) and at most `batch_tokens` tokens per device batch, `grad_accum`
    batches per optimizer step. `learning_rate` None = QFT_LEARNING_RATES for the `use_lora`
    choice. LoRA, GGUF export, `device` and `dtype`: see `common.training.TrainingSettings`.
    """

    base: str = EMBEDDED
    epochs: float = 1.0
    max_steps: int = 0
    learning_rate: float | None = None
    per_device_batch: int = 1
    grad_accum: int = 4
    max_length: int = 256
    warmup_ratio: float = 0.03
    scheduler: str = "cosine"
    packing: bool = True
    seed: int = 0
    batch_tokens: int = 4096

    def __post_init__(self):
        _default_learning_rate(self, QFT_LEARNING_RATES)


@dataclass(frozen=True)
class QpoConfig(TrainingSettings):
    """QPO (DPO) settings; defaults are the paper's (METHODS.md §3.3 Step 2).

    `beta` and `loss_type` are DPO's. `max_length` caps prompt + question tokens;
    `max_prompt_length` caps the prefix (a longer prefix is an error, since the prompt is never
    truncated). `eval_pairs` pairs are held out for a final evaluation when at least as many remain
    for training. `learning_rate` None = QPO_LEARNING_RATES for the `use_lora` choice. A device
    batch holds up to `per_device_batch` pairs and at most `batch_tokens` tokens (both sequences of
    each pair, padding included). Scheduler, LoRA, GGUF and placement fields as in QftConfig.
    """

    beta: float = 0.1
    loss_type: str = "sigmoid"
    learning_rate: float | None = None
    warmup_steps: int = 20
    scheduler: str = "cosine"
    epochs: float = 1.0
    max_steps: int = 0
    per_device_batch: int = 8
    grad_accum: int = 2
    max_length: int = 1024
    max_prompt_length: int = 1000
    eval_pairs: int = 100
    seed: int = 0
    batch_tokens: int = 16384

    def __post_init__(self):
        _default_learning_rate(self, QPO_LEARNING_RATES)


def qft_texts(questions: list[str], prefix: str, end_of_turn: str) -> list[str]:
    """QFT training texts `prefix + question + end_of_turn`, questions stripped of surrounding
    whitespace. Raises ValueError naming the first empty (or non-string) question."""
    texts = []
    for row, question in enumerate(questions):
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"questions[{row}]: empty or not a string")
        texts.append(prefix + question.strip() + end_of_turn)
    return texts


def train_qft(
    questions: list[str], prefix: str, end_of_turn: str, out_dir: str | Path, config: QftConfig = QftConfig()
) -> TrainedModel:
    """Question fine-tuning: SFT of `config.base` on `qft_texts(questions, prefix, end_of_turn)`.

    The texts are tokenized as they are (special tokens written in `prefix`/`end_of_turn` are parsed;
    no BOS/EOS is added, matching what the generation engine sends), packed into `max_length`-token
    blocks, and the loss covers every token. Writes `out_dir` (see module doc) and returns its
    TrainedModel. Deterministic for a given `config.seed` on the same machine.
    """
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    started = time.perf_counter()
    if not prefix:
        raise ValueError("prefix is empty")
    texts = qft_texts(questions, prefix, end_of_turn)
    model, tokenizer = load_for_training(config.base, config.use_lora, device=config.device, dtype=config.dtype)
    dataset = Dataset.from_dict({"input_ids": [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]})
    out_dir, work = start_output(out_dir)
    args = SFTConfig(
        max_length=config.max_length,
        packing=config.packing,
        warmup_steps=config.warmup_ratio,
        num_train_epochs=config.epochs,
        **common_training_args(config, work),
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora_config(config)
    )
    batch_by_tokens(trainer, config)
    trainer.train()
    trained = finish_training(trainer, tokenizer, "qft", config, len(texts), {}, out_dir, work, started)
    del trainer, model
    release_cuda_memory()
    return trained


def train_qpo(
    pairs: list[tuple[str, str]],
    prefix: str,
    end_of_turn: str,
    base: str,
    out_dir: str | Path,
    config: QpoConfig = QpoConfig(),
) -> TrainedModel:
    """Question preference optimisation: DPO of `base` on (chosen, rejected) question `pairs`.

    `base` is the QFT model's `hf/` folder (or "embedded", or any `load_causal_lm` source). Each row
    has prompt = `prefix`, chosen = `chosen + end_of_turn`, rejected = `rejected + end_of_turn`. The
    reference model is `base` (with LoRA: the adapter-disabled model; otherwise a second copy).
    `config.eval_pairs` pairs, picked with `config.seed`, are held out and evaluated after training
    when at least that many remain for training. Writes `out_dir` (see module doc) and returns its
    TrainedModel. Raises ValueError for an empty pair list or field, or a prefix longer than
    `max_prompt_length` tokens.
    """
    import numpy as np
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    started = time.perf_counter()
    if not pairs:
        raise ValueError("no preference pairs")
    if not prefix:
        raise ValueError("prefix is empty")
    for row, pair in enumerate(pairs):
        if len(pair) != 2 or not all(isinstance(q, str) and q.strip() for q in pair):
            raise ValueError(f"pairs[{row}]: expected (chosen, rejected), two non-empty strings")
    model, tokenizer = load_for_training(base, config.use_lora, device=config.device, dtype=config.dtype)
    prompt = _prompt_without_auto_bos(prefix, tokenizer)
    prompt_tokens = len(tokenizer(prompt)["input_ids"])
    if prompt_tokens > config.max_prompt_length:
        raise ValueError(f"prefix is {prompt_tokens} tokens, max_prompt_length is {config.max_prompt_length}")
    rows = {
        "prompt": [prompt] * len(pairs),
        "chosen": [chosen.strip() + end_of_turn for chosen, _ in pairs],
        "rejected": [rejected.strip() + end_of_turn for _, rejected in pairs],
    }
    dataset = Dataset.from_dict(rows)
    eval_dataset = None
    if config.eval_pairs > 0 and len(pairs) >= 2 * config.eval_pairs:
        order = np.random.default_rng(config.seed).permutation(len(pairs))
        eval_dataset = dataset.select(sorted(order[: config.eval_pairs].tolist()))
        dataset = dataset.select(sorted(order[config.eval_pairs :].tolist()))
    ref_model = None
    if not config.use_lora:
        ref_model = load_for_training(base, use_lora=False, device=config.device, dtype=config.dtype)[0]
    out_dir, work = start_output(out_dir)
    args = DPOConfig(
        beta=config.beta,
        loss_type=[config.loss_type],
        max_length=config.max_length,
        warmup_steps=config.warmup_steps,
        num_train_epochs=config.epochs,
        per_device_eval_batch_size=config.per_device_batch,
        **common_training_args(config, work),
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=lora_config(config),
    )
    batch_by_tokens(trainer, config)
    trainer.train()
    eval_metrics = {k: float(v) for k, v in trainer.evaluate().items()} if eval_dataset is not None else {}
    config_record = {"base": base, "eval_examples": 0 if eval_dataset is None else len(eval_dataset)}
    trained = finish_training(
        trainer, tokenizer, "qpo", config, len(dataset), eval_metrics, out_dir, work, started, extra=config_record
    )
    del trainer, model, ref_model
    release_cuda_memory()
    return trained


def _prompt_without_auto_bos(prefix: str, tokenizer) -> str:
    """`prefix` minus a leading BOS text when the tokenizer adds BOS itself (TRL's DPO tokenizes the
    prompt with special tokens), so the model sees exactly one BOS, as in generation."""
    bos = tokenizer.bos_token
    adds_bos = bos is not None and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    return prefix[len(bos) :] if adds_bos and prefix.startswith(bos) else prefix
