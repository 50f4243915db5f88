"""The decoder's building blocks: RMSNorm, rotary embedding, SwiGLU MLP and the attention layer.

Numerics follow transformers' Llama/Qwen2/Qwen3 code: RMSNorm normalises in float32 and casts back
before the scale, RoPE rotates halves (not interleaved pairs) with inverse frequencies computed in
float32 exactly as `transformers.modeling_rope_utils` does for each scaling type, and attention scales
by 1/sqrt(head_dim). Parameters are stored in `param_dtype` and cast to `compute_dtype` where used.
Every parameter carries its logical axis names as `out_sharding` metadata (see models/sharding.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cft_jax.models.attention import cached_attention, get_attention
from cft_jax.models.config import ModelConfig
from cft_jax.models.lora import (
    ADAPTER_DTYPE,
    RANK_AXIS,
    LoRAParam,
    LoRASpec,
    adapter_for,
    einsum_equations,
    init_lora_a,
)
from cft_jax.models.sharding import constrain, placed_value

Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]

# Logical axes of the activations (models/sharding.py): the batch is split, the hidden dimension whole.
HIDDEN_AXES = ("batch", "seq", "activation_embed")
MLP_AXES = ("batch", "seq", "mlp")

# transformers' `initializer_range` default; checkpoints overwrite it, training from scratch uses it.
DEFAULT_INIT = nnx.initializers.normal(stddev=0.02)


def param(
    rngs: nnx.Rngs, init: Initializer, shape: tuple[int, ...], axes: tuple[str, ...], dtype: jnp.dtype
) -> nnx.Param:
    """A parameter with its logical axes as metadata; placement is done later, from the rules table."""
    return nnx.Param(init(rngs.params(), shape, dtype), out_sharding=axes, eager_sharding=False)


class RMSNorm(nnx.Module):
    """y = scale * (x / sqrt(mean(x^2) + eps)), normalised in float32 like transformers."""

    def __init__(
        self, dim: int, eps: float, *, param_dtype: jnp.dtype, axes: tuple[str, ...], rngs: nnx.Rngs
    ):
        self.eps = eps
        self.scale = param(rngs, nnx.initializers.ones, (dim,), axes, param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        """[..., dim] -> [..., dim] in x's dtype."""
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(x.dtype) * normed.astype(x.dtype)


class Embed(nnx.Module):
    """Token embedding; also the LM head when the embeddings are tied."""

    def __init__(self, config: ModelConfig, *, param_dtype: jnp.dtype, rngs: nnx.Rngs):
        shape = (config.vocab_size, config.hidden_size)
        self.embedding = param(rngs, DEFAULT_INIT, shape, ("vocab", "embed"), param_dtype)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        """[batch, seq] int -> [batch, seq, hidden] in the parameter dtype."""
        return jnp.take(placed_value(self.embedding), input_ids, axis=0)


def rope_inv_freq(config: ModelConfig, seq_len: jax.Array | None = None) -> jax.Array:
    """[head_dim // 2] float32 inverse frequencies, as transformers' ROPE_INIT_FUNCTIONS compute them.

    `seq_len` (a traced scalar, max position + 1 over the batch) matters only for "dynamic" NTK
    scaling, which raises the base once sequences outgrow `max_position_embeddings` and otherwise
    equals plain RoPE; transformers recomputes it per forward the same way.
    """
    dim = config.head_dim
    exponents = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    scaling = config.rope_scaling or {}
    rope_type = config.rope_type

    if rope_type == "dynamic":
        max_pos = config.max_position_embeddings
        factor = scaling["factor"]
        seq_len = jnp.maximum(jnp.asarray(max_pos if seq_len is None else seq_len, jnp.float32), max_pos)
        stretched = config.rope_theta * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2))
        base = jnp.where(seq_len > max_pos, stretched, config.rope_theta).astype(jnp.float32)
        return 1.0 / base ** jnp.asarray(exponents)

    inv_freq = np.float32(1.0) / np.float32(config.rope_theta) ** exponents
    if rope_type == "linear":
        inv_freq = inv_freq / np.float32(scaling["factor"])
    elif rope_type == "llama3":
        inv_freq = _llama3_inv_freq(inv_freq, scaling)
    return jnp.asarray(inv_freq, jnp.float32)


def _llama3_inv_freq(inv_freq: np.ndarray, scaling: dict) -> np.ndarray:
    """Llama 3.1 scaling: long wavelengths divided by `factor`, short kept, a smooth ramp between."""
    factor = np.float32(scaling["factor"])
    low, high = np.float32(scaling["low_freq_factor"]), np.float32(scaling["high_freq_factor"])
    old_context = np.float32(scaling["original_max_position_embeddings"])
    wavelen = np.float32(2 * math.pi) / inv_freq
    scaled = np.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < old_context / high) & ~(wavelen > old_context / low)
    return np.where(is_medium, smoothed, scaled).astype(np.float32)


def rope_cos_sin(config: ModelConfig, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[batch, seq] int positions -> (cos, sin), each [batch, seq, head_dim] float32."""
    inv_freq = rope_inv_freq(config, seq_len=jnp.max(positions) + 1)
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate-half RoPE. x: [batch, seq, heads, head_dim]; cos, sin: [batch, seq, head_dim]."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotated * sin


class Projection(nnx.Module):
    """A dense layer written as an einsum, so attention kernels keep heads as their own axes.

    With `lora`, also a low-rank adapter (cft_jax/models/lora.py): y = x W + scaling * dropout(x) A B,
    A [in..., rank] and B [rank, out...] laid out like the kernel's input and output dimensions.
    """

    def __init__(
        self,
        equation: str,
        kernel_shape: tuple[int, ...],
        kernel_axes: tuple[str, ...],
        *,
        bias_shape: tuple[int, ...] | None = None,
        bias_axes: tuple[str, ...] = (),
        param_dtype: jnp.dtype,
        compute_dtype: jnp.dtype,
        rngs: nnx.Rngs,
        lora: LoRASpec | None = None,
    ):
        self.equation = equation
        self.compute_dtype = compute_dtype
        self.kernel = param(rngs, DEFAULT_INIT, kernel_shape, kernel_axes, param_dtype)
        has_bias = bias_shape is not None
        self.bias = (
            param(rngs, nnx.initializers.zeros, bias_shape, bias_axes, param_dtype) if has_bias else None
        )
        self.lora = lora
        if lora is not None:
            self.lora_equations = einsum_equations(equation)
            n_in = self.lora_equations[2]
            a_shape, b_shape = (*kernel_shape[:n_in], lora.rank), (lora.rank, *kernel_shape[n_in:])
            a_axes, b_axes = (*kernel_axes[:n_in], RANK_AXIS), (RANK_AXIS, *kernel_axes[n_in:])
            self.lora_a = LoRAParam(
                init_lora_a(rngs.params(), a_shape, ADAPTER_DTYPE), out_sharding=a_axes, eager_sharding=False
            )
            self.lora_b = LoRAParam(
                jnp.zeros(b_shape, ADAPTER_DTYPE), out_sharding=b_axes, eager_sharding=False
            )

    def __call__(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """`dropout_key`: the adapter's input dropout in training (None: no dropout, as in evaluation)."""
        x = x.astype(self.compute_dtype)
        y = jnp.einsum(self.equation, x, placed_value(self.kernel).astype(self.compute_dtype))
        if self.bias is not None:
            y = y + placed_value(self.bias).astype(self.compute_dtype)
        if self.lora is not None:
            y = y + self._adapter(x, dropout_key)
        return y

    def _adapter(self, x: jax.Array, dropout_key: jax.Array | None) -> jax.Array:
        rate = self.lora.dropout
        if dropout_key is not None and rate > 0:
            keep = jax.random.bernoulli(dropout_key, 1.0 - rate, x.shape)
            x = jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)
        down_equation, up_equation, _ = self.lora_equations
        down = jnp.einsum(down_equation, x, placed_value(self.lora_a).astype(self.compute_dtype))
        up = jnp.einsum(up_equation, down, placed_value(self.lora_b).astype(self.compute_dtype))
        return (self.lora.scaling * up).astype(self.compute_dtype)


def layer_keys(key: jax.Array | None, count: int) -> list[jax.Array | None]:
    """`count` independent dropout keys from one (all None without a key)."""
    return [None] * count if key is None else list(jax.random.split(key, count))


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        param_dtype: jnp.dtype,
        compute_dtype: jnp.dtype,
        rngs: nnx.Rngs,
        lora: LoRASpec | None = None,
    ):
        d, f = config.hidden_size, config.intermediate_size
        dtypes = {"param_dtype": param_dtype, "compute_dtype": compute_dtype, "rngs": rngs}

        def projection(name: str, equation: str, shape: tuple[int, int], axes: tuple[str, str]) -> Projection:
            return Projection(equation, shape, axes, lora=adapter_for(lora, name), **dtypes)

        self.gate_proj = projection("gate_proj", "btd,df->btf", (d, f), ("embed", "mlp"))
        self.up_proj = projection("up_proj", "btd,df->btf", (d, f), ("embed", "mlp"))
        self.down_proj = projection("down_proj", "btf,fd->btd", (f, d), ("mlp", "embed"))

    def __call__(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """[batch, seq, hidden] -> [batch, seq, hidden]; `dropout_key` for the adapters' dropout."""
        gate_key, up_key, down_key = layer_keys(dropout_key, 3)
        gate = constrain(self.gate_proj(x, gate_key), MLP_AXES)
        up = constrain(self.up_proj(x, up_key), MLP_AXES)
        return constrain(self.down_proj(jax.nn.silu(gate) * up, down_key), HIDDEN_AXES)


class Attention(nnx.Module):
    """Grouped-query self-attention: q/k/v projections (+ Qwen2 biases, + Qwen3 q/k norm), RoPE, output."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        param_dtype: jnp.dtype,
        compute_dtype: jnp.dtype,
        attention_impl: str,
        rngs: nnx.Rngs,
        lora: LoRASpec | None = None,
    ):
        d, h, k, dh = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
        dtypes = {"param_dtype": param_dtype, "compute_dtype": compute_dtype, "rngs": rngs}

        def in_proj(name: str, heads: int, heads_axis: str) -> Projection:
            return Projection(
                "btd,dhk->bthk",
                (d, heads, dh),
                ("embed", heads_axis, "head_dim"),
                bias_shape=(heads, dh) if config.attention_bias else None,
                bias_axes=(heads_axis, "head_dim"),
                lora=adapter_for(lora, name),
                **dtypes,
            )

        self.q_proj = in_proj("q_proj", h, "q_heads")
        self.k_proj = in_proj("k_proj", k, "kv_heads")
        self.v_proj = in_proj("v_proj", k, "kv_heads")
        o_axes = ("q_heads", "head_dim", "embed")
        self.o_proj = Projection(
            "bthk,hkd->btd", (h, dh, d), o_axes, lora=adapter_for(lora, "o_proj"), **dtypes
        )
        norm = {"param_dtype": param_dtype, "axes": ("head_dim",), "rngs": rngs}
        self.q_norm = RMSNorm(dh, config.rms_norm_eps, **norm) if config.qk_norm else None
        self.k_norm = RMSNorm(dh, config.rms_norm_eps, **norm) if config.qk_norm else None
        self.attention_fn = get_attention(attention_impl)
        self.q_axes = ("batch", "seq", "q_heads", "head_dim")
        self.kv_axes = ("batch", "seq", "kv_heads", "head_dim")

    def _qkv(
        self, x: jax.Array, cos: jax.Array, sin: jax.Array, keys: tuple = (None, None, None)
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x: [batch, seq, hidden] -> q [batch, seq, heads, head_dim], k and v [batch, seq, kv_heads,
        head_dim], with the q/k norms and the rotary embedding applied; `keys`: the q/k/v adapters'
        dropout keys."""
        q_key, k_key, v_key = keys
        q = constrain(self.q_proj(x, q_key), self.q_axes)
        k, v = constrain(self.k_proj(x, k_key), self.kv_axes), constrain(self.v_proj(x, v_key), self.kv_axes)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def __call__(
        self,
        x: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        segment_ids: jax.Array,
        dropout_key: jax.Array | None = None,
    ) -> jax.Array:
        """x: [batch, seq, hidden]; cos, sin: [batch, seq, head_dim]; segment_ids: [batch, seq];
        `dropout_key` for the adapters' dropout."""
        q_key, k_key, v_key, o_key = layer_keys(dropout_key, 4)
        q, k, v = self._qkv(x, cos, sin, (q_key, k_key, v_key))
        out = constrain(self.attention_fn(q, k, v, segment_ids), self.q_axes)
        return constrain(self.o_proj(out, o_key), HIDDEN_AXES)

    def cached(
        self,
        x: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        k_cache: jax.Array,
        v_cache: jax.Array,
        index: jax.Array,
        key_start: jax.Array,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """A chunk of tokens at cache slots [index, index + chunk) attending over this layer's cache.

        x: [batch, chunk, hidden]; k_cache, v_cache: [batch, cache_len, kv_heads, head_dim] (any dtype);
        key_start: [batch], each row's first real slot. Returns the output [batch, chunk, hidden] and
        the chunk's own k and v in the cache's dtype, for the caller to write at `index`.
        """
        q, k, v = self._qkv(x, cos, sin)
        k, v = k.astype(k_cache.dtype), v.astype(v_cache.dtype)
        k_all = jax.lax.dynamic_update_slice_in_dim(k_cache, k, index, axis=1)
        v_all = jax.lax.dynamic_update_slice_in_dim(v_cache, v, index, axis=1)
        slots = index + jnp.arange(x.shape[1])
        out = constrain(cached_attention(q, k_all, v_all, slots, key_start), self.q_axes)
        return constrain(self.o_proj(out), HIDDEN_AXES), k, v
