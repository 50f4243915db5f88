"""Model specs (generators and teachers) from plain dicts, with errors that name the key and the fix.

One spec = one endpoint + its sampling parameters + its prompt template. The same shape is used by
the CLI flags, the build configs (configs/critique/*.json) and the Python API.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cft_jax.critique.client import ConfigError, Endpoint, RetryPolicy
from cft_jax.critique.prompts import SOLVER, TEACHER, PromptTemplate

# Parameters forwarded to the chat-completions request (and to vLLM's SamplingParams).
SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "seed", "stop")
ENDPOINT_KEYS = ("model", "base_url", "api_key_env", "concurrency", "timeout", "price_input", "price_output")
# vLLM offline only: the longest prompt + completion in tokens, which sizes the engine's KV cache.
VLLM_KEYS = ("max_model_len",)
SPEC_KEYS = ("name", "backend", "k", "strip_reasoning", "prompt", *SAMPLING_KEYS, *ENDPOINT_KEYS, *VLLM_KEYS)
BACKENDS = ("openai", "vllm")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A generator (samples `k` solutions per problem) or a teacher (one critique per solution)."""

    endpoint: Endpoint
    params: dict[str, Any]
    template: PromptTemplate
    backend: str = "openai"
    k: int = 1
    strip_reasoning: bool = False
    max_model_len: int | None = None

    @property
    def name(self) -> str:
        return self.endpoint.name

    def provenance(self) -> dict[str, Any]:
        return {
            **self.endpoint.public(),
            "backend": self.backend,
            "params": self.params,
            "prompt_sha256": self.template.sha256,
            "strip_reasoning": self.strip_reasoning,
        }


def spec_from_dict(obj: dict[str, Any], *, role: str, where: str, base: Path | None = None) -> ModelSpec:
    """A ModelSpec from a config dict; `role` ("generator" / "teacher") picks defaults and template."""
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: a {role} is a JSON object with at least 'model'")
    unknown = sorted(set(obj) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown} for a {role}; known keys are {sorted(SPEC_KEYS)}"
        )
    if "model" not in obj:
        raise ConfigError(f"{where}: a {role} needs 'model' (the model name the endpoint serves)")
    backend = obj.get("backend", "openai")
    if backend not in BACKENDS or (role == "teacher" and backend != "openai"):
        allowed = BACKENDS if role == "generator" else ("openai",)
        raise ConfigError(f"{where}: backend {backend!r} is not one of {allowed}")
    defaults = {"temperature": 0.3, "top_p": 0.95, "max_tokens": 3200} if role == "teacher" else {}
    if role == "generator":
        defaults = {"temperature": 0.6, "top_p": 0.95, "max_tokens": 16384}
    params = {**defaults, **{k: obj[k] for k in SAMPLING_KEYS if k in obj}}
    endpoint_kwargs = {k: obj[k] for k in ENDPOINT_KEYS if k in obj}
    try:
        endpoint = Endpoint(name=str(obj.get("name", obj["model"])), **endpoint_kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    default_template = TEACHER if role == "teacher" else SOLVER
    needs = ("question", "solution") if role == "teacher" else ("question",)
    template = default_template
    if obj.get("prompt") is not None:
        path = Path(obj["prompt"])
        template = PromptTemplate.load(base / path if base and not path.is_absolute() else path, needs=needs)
    k = obj.get("k", 1)
    if not isinstance(k, int) or k < 1 or (role == "teacher" and k != 1):
        raise ConfigError(f"{where}: 'k' must be a positive integer (teachers: 1), got {k!r}")
    max_model_len = obj.get("max_model_len")
    if max_model_len is not None and (
        backend != "vllm" or not isinstance(max_model_len, int) or max_model_len < 1
    ):
        raise ConfigError(
            f"{where}: 'max_model_len' is a positive integer for backend 'vllm' only, got {max_model_len!r} "
            f"with backend {backend!r}"
        )
    if not isinstance(endpoint.concurrency, int) or endpoint.concurrency < 1:
        raise ConfigError(f"{where}: 'concurrency' must be a positive integer, got {endpoint.concurrency!r}")
    return ModelSpec(
        endpoint=endpoint,
        params=params,
        template=template,
        backend=backend,
        k=k,
        strip_reasoning=bool(obj.get("strip_reasoning", role == "generator")),
        max_model_len=max_model_len,
    )


def retry_from_dict(obj: dict[str, Any] | None, where: str) -> RetryPolicy:
    obj = obj or {}
    try:
        return RetryPolicy(**obj)
    except TypeError as e:
        fields = [f.name for f in dataclasses.fields(RetryPolicy)]
        raise ConfigError(f"{where}: bad 'retry' ({e}); its keys are {fields}") from None
