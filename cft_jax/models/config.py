"""`ModelConfig`: the decoder's hyperparameters, read from and written to a Hugging Face `config.json`.

One frozen dataclass covers the three families the decoder reproduces exactly (Llama, Qwen2, Qwen3).
`from_hf` refuses, with a `ConfigError` naming the field, every setting the decoder cannot reproduce
(a sliding window, an MLP bias, an activation other than SiLU, an unknown RoPE type, ...): a config
is either computed exactly as transformers computes it, or not at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from etils import epath

from cft_jax.errors import InputError


class ConfigError(InputError):
    """A Hugging Face config this decoder cannot reproduce exactly; the message names the field."""


# model_type -> the one architecture name transformers uses for its causal LM.
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}

# RoPE scaling types and the keys each one needs, exactly as transformers' `ROPE_INIT_FUNCTIONS` reads them.
ROPE_SCALING_KEYS = {
    "linear": ("factor",),
    "dynamic": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of one decoder.

    `rope_scaling` is None for plain RoPE, else a dict with `rope_type` in `ROPE_SCALING_KEYS` and that
    type's keys. `attention_bias` means biases on the q/k/v projections (Qwen2 always has them; the
    output projection never has one here). `qk_norm` is Qwen3's per-head RMSNorm on queries and keys.
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: Mapping[str, Any] | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    qk_norm: bool = False
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    torch_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.model_type not in ARCHITECTURES:
            raise ConfigError(
                f"model_type={self.model_type!r} is not supported; use one of {sorted(ARCHITECTURES)}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_heads} is not a multiple of "
                f"num_key_value_heads={self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.rope_scaling is not None:
            _check_rope_scaling(self.rope_scaling)
        if isinstance(self.eos_token_id, list):
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))

    def __hash__(self) -> int:
        # jit caches on the module's static fields, this config among them; the rope_scaling dict is
        # not hashable, its sorted items are.
        fields = dataclasses.astuple(dataclasses.replace(self, rope_scaling=None))
        return hash((fields, tuple(sorted((self.rope_scaling or {}).items()))))

    @property
    def architecture(self) -> str:
        return ARCHITECTURES[self.model_type]

    @property
    def rope_type(self) -> str:
        return "default" if self.rope_scaling is None else self.rope_scaling["rope_type"]

    @classmethod
    def from_hf(cls, config: Mapping[str, Any] | str | os.PathLike) -> ModelConfig:
        """Reads an HF config: a dict, a `config.json` path, or a checkpoint directory holding one
        (local or `gs://`).

        Accepts both the transformers v4 keys (`rope_theta`, `rope_scaling`) and the v5 key
        `rope_parameters`. Raises `ConfigError` naming the field for anything not reproduced exactly.
        """
        source = "config"
        if isinstance(config, (str, os.PathLike)):
            path = epath.Path(config)
            path = path / "config.json" if path.is_dir() else path
            if not path.is_file():
                raise ConfigError(f"{path}: no such config file; pass an HF checkpoint directory")
            source = str(path)
            try:
                config = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise ConfigError(
                    f"{path}: invalid JSON ({e.msg} at line {e.lineno}, column {e.colno}); fix the file or "
                    "copy the checkpoint's config.json again"
                ) from None
        try:
            return _from_hf_dict(dict(config))
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_hf(self) -> dict[str, Any]:
        """The `config.json` dict transformers (v4 and v5) and vLLM load into the same model."""
        out: dict[str, Any] = {
            "architectures": [self.architecture],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": None if self.rope_scaling is None else dict(self.rope_scaling),
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_id)
            if isinstance(self.eos_token_id, tuple)
            else self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": self.torch_dtype,
            "attention_dropout": 0.0,
        }
        if self.model_type == "llama":
            out.update(attention_bias=False, mlp_bias=False)
        if self.model_type == "qwen3":
            out["attention_bias"] = False
        if self.model_type in ("qwen2", "qwen3"):
            out.update(use_sliding_window=False, sliding_window=None)
        return out

    def _layer_matmul_params(self) -> int:
        """One layer's matmul kernels: q and o ([hidden, heads * head_dim]), k and v ([hidden, kv_heads *
        head_dim]), and the MLP's gate, up and down ([hidden, intermediate])."""
        d, h, k, dh = self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim
        return d * h * dh * 2 + d * k * dh * 2 + 3 * d * self.intermediate_size

    def num_params(self) -> int:
        """Number of parameters, counting a tied embedding once."""
        d, h, k, dh = self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim
        layer = self._layer_matmul_params() + 2 * d  # + the two norms' scales
        if self.attention_bias:
            layer += (h + 2 * k) * dh
        if self.qk_norm:
            layer += 2 * dh
        embed = self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * layer + embed + d

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward) for sequences of `seq_len`, as MaxText counts.

        6 * (matmul weights: attention and MLP kernels of every layer plus the [hidden, vocab] LM head,
        tied or not; the embedding lookup is free), plus causal attention: QK^T and AV are
        2 * 2 * seq * heads * head_dim FLOPs per token and layer forward, halved for the causal mask,
        times 3 for forward + backward.
        """
        matmul_params = self.num_layers * self._layer_matmul_params() + self.hidden_size * self.vocab_size
        attention = 3 * (4 * seq_len * self.num_heads * self.head_dim * self.num_layers) / 2
        return 6.0 * matmul_params + attention


def _check_rope_scaling(rope_scaling: Mapping[str, Any]) -> None:
    rope_type = rope_scaling.get("rope_type")
    if rope_type not in ROPE_SCALING_KEYS:
        raise ConfigError(
            f"rope_scaling.rope_type={rope_type!r} is not supported; "
            f"use one of {['default', *ROPE_SCALING_KEYS]} (or remove rope_scaling)"
        )
    missing = [key for key in ROPE_SCALING_KEYS[rope_type] if key not in rope_scaling]
    if missing:
        raise ConfigError(f"rope_scaling ({rope_type}) lacks {missing}")
    partial = rope_scaling.get("partial_rotary_factor", 1.0)
    if partial != 1.0:
        raise ConfigError(f"rope_scaling.partial_rotary_factor={partial} is not supported; only 1.0")


def _rope_from_hf(hf: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, rope_scaling or None) from v4 (`rope_theta`/`rope_scaling`) or v5 (`rope_parameters`)."""
    params = hf.get("rope_parameters")
    if params is not None and not isinstance(params, Mapping):
        raise ConfigError(f"rope_parameters={params!r} must be a dict")
    if (
        params is not None
        and "rope_theta" not in params
        and all(isinstance(v, Mapping) for v in params.values())
    ):
        raise ConfigError("rope_parameters holds per-layer-type RoPE settings, which are not supported")
    params = dict(params or {})
    theta = params.pop("rope_theta", hf.get("rope_theta", 10000.0))
    scaling = dict(hf.get("rope_scaling") or params)
    field = "rope_scaling" if hf.get("rope_scaling") else "rope_parameters"
    if "type" in scaling and "rope_type" not in scaling:  # the pre-4.45 spelling
        scaling["rope_type"] = scaling.pop("type")
    scaling.pop("rope_theta", None)
    rope_type = scaling.get("rope_type", "default")
    if rope_type == "default":
        partial = scaling.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
        if partial != 1.0:
            raise ConfigError(f"partial_rotary_factor={partial} is not supported; only 1.0")
        return float(theta), None
    if rope_type not in ROPE_SCALING_KEYS:
        raise ConfigError(
            f"{field}.rope_type={rope_type!r} is not supported; use one of {['default', *ROPE_SCALING_KEYS]}"
        )
    return float(theta), scaling


def _from_hf_dict(hf: dict[str, Any]) -> ModelConfig:
    model_type = hf.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ConfigError(f"model_type={model_type!r} is not supported; use one of {sorted(ARCHITECTURES)}")
    for arch in hf.get("architectures") or []:
        if arch != ARCHITECTURES[model_type]:
            raise ConfigError(
                f"architectures={hf['architectures']!r}: only {ARCHITECTURES[model_type]} is supported "
                f"for model_type={model_type!r}"
            )
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(f"hidden_act={act!r} is not supported; only 'silu' (SwiGLU MLP)")
    if hf.get("mlp_bias"):
        raise ConfigError("mlp_bias=true is not supported; the MLP projections have no bias")
    if hf.get("attention_dropout", 0.0):
        raise ConfigError(f"attention_dropout={hf['attention_dropout']} is not supported; only 0.0")
    if model_type == "qwen2":
        attention_bias = True  # Qwen2 always has q/k/v biases, and no attention_bias key
    else:
        attention_bias = False
        if hf.get("attention_bias"):
            raise ConfigError(
                f"attention_bias=true is not supported for model_type={model_type!r} "
                "(it also adds an output-projection bias)"
            )
    _check_no_sliding_window(hf)

    hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
    rope_theta, rope_scaling = _rope_from_hf(hf)
    dtype = hf.get("torch_dtype") or hf.get("dtype") or "float32"
    return ModelConfig(
        model_type=model_type,
        vocab_size=hf["vocab_size"],
        hidden_size=hidden,
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hidden // heads,
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
        attention_bias=attention_bias,
        qk_norm=model_type == "qwen3",
        max_position_embeddings=hf.get("max_position_embeddings", 2048),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        pad_token_id=hf.get("pad_token_id"),
        torch_dtype=str(dtype),
    )


def _check_no_sliding_window(hf: dict[str, Any]) -> None:
    """A sliding window narrower than the longest position changes the numbers: refuse it.

    A window at least `max_position_embeddings` wide masks nothing a full causal mask would not.
    """
    window = hf.get("sliding_window")
    max_positions = hf.get("max_position_embeddings", 2048)
    narrow = window is not None and window < max_positions
    if hf.get("use_sliding_window") and (window is None or narrow):
        raise ConfigError(
            f"use_sliding_window=true with sliding_window={window} < max_position_embeddings="
            f"{max_positions} is not supported; only full causal attention"
        )
    layer_types = hf.get("layer_types") or []
    if narrow and "sliding_attention" in layer_types:
        raise ConfigError(
            f"layer_types contains 'sliding_attention' with sliding_window={window} < "
            f"max_position_embeddings={max_positions}; only full causal attention is supported"
        )
    if any(t not in ("full_attention", "sliding_attention") for t in layer_types):
        raise ConfigError(f"layer_types={layer_types!r}: only 'full_attention' layers are supported")
