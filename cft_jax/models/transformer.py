"""`Decoder`: the Llama / Qwen2 / Qwen3 causal language model, with its layers stacked and scanned.

The layers' parameters are stacked along a leading `layers` axis and the forward pass is one
`nnx.scan` over them, so XLA compiles a single layer whatever the depth. A named remat policy decides
which activations the backward pass recomputes. Rows may be packed: `segment_ids` keep sequences
apart and `positions` (by default restarting at each segment) drive the rotary embedding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from cft_jax.models.config import ModelConfig
from cft_jax.models.layers import (
    DEFAULT_INIT,
    HIDDEN_AXES,
    MLP,
    Attention,
    Embed,
    RMSNorm,
    layer_keys,
    param,
    rope_cos_sin,
)
from cft_jax.models.loops import unroll
from cft_jax.models.lora import LoRASpec
from cft_jax.models.sharding import constrain, placed_value

# The name of each layer's input, which the "offload" policy keeps in host memory.
LAYER_INPUT = "layer_input"

# Which intermediate values a rematerialised layer keeps for the backward pass ("none": no remat).
# "offload" is "full" with the [batch, seq, hidden] input of every layer, the one activation full remat
# still keeps per layer, moved to pinned host memory and fetched back for that layer's backward pass.
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.dots_saveable,
    "save_dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "offload": jax.checkpoint_policies.save_and_offload_only_these_names(
        names_which_can_be_saved=[],
        names_which_can_be_offloaded=[LAYER_INPUT],
        offload_src="device",
        offload_dst="pinned_host",
    ),
}


class DecoderLayer(nnx.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

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
        norm = {"param_dtype": param_dtype, "axes": ("norm",), "rngs": rngs}
        dtypes = {"param_dtype": param_dtype, "compute_dtype": compute_dtype, "rngs": rngs, "lora": lora}
        self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, **norm)
        self.attn = Attention(config, attention_impl=attention_impl, **dtypes)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, **norm)
        self.mlp = MLP(config, **dtypes)

    def __call__(
        self,
        x: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        segment_ids: jax.Array,
        dropout_key: jax.Array | None = None,
    ) -> jax.Array:
        """[batch, seq, hidden] -> [batch, seq, hidden]; `dropout_key` for LoRA adapters' dropout."""
        attn_key, mlp_key = layer_keys(dropout_key, 2)
        x = x + self.attn(self.attn_norm(x), cos, sin, segment_ids, attn_key)
        return x + self.mlp(self.mlp_norm(x), mlp_key)

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
        """The block over a KV cache (`Attention.cached`): (x, the chunk's k, the chunk's v)."""
        out, k, v = self.attn.cached(self.attn_norm(x), cos, sin, k_cache, v_cache, index, key_start)
        x = x + out
        return x + self.mlp(self.mlp_norm(x)), k, v


class LMHead(nnx.Module):
    """The untied output projection, [hidden, vocab]."""

    def __init__(self, config: ModelConfig, *, param_dtype: jnp.dtype, rngs: nnx.Rngs):
        shape = (config.hidden_size, config.vocab_size)
        self.kernel = param(rngs, DEFAULT_INIT, shape, ("embed", "vocab"), param_dtype)


def segment_positions(segment_ids: jax.Array) -> jax.Array:
    """[batch, seq] segment ids -> [batch, seq] positions that restart at 0 where the id changes."""
    index = jnp.arange(segment_ids.shape[-1])
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], dtype=bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=-1
    )
    return index - jax.lax.cummax(jnp.where(starts, index, 0), axis=1)


class Decoder(nnx.Module):
    """A causal decoder configured by a `ModelConfig`.

    Args:
      config: the model's hyperparameters (`ModelConfig.from_hf`).
      param_dtype: dtype the parameters are stored in.
      compute_dtype: dtype of activations and matmuls; norms and softmax still run in float32.
      remat: a key of `REMAT_POLICIES`: what each layer saves for the backward pass.
      attention_impl: a key of `cft_jax.models.attention.ATTENTION_IMPLS`.
      lora: low-rank adapters on the projections it targets (cft_jax/models/lora.py), or None.
      rngs: initialisation randomness (the values are overwritten when loading a checkpoint).
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        param_dtype: jnp.dtype = jnp.float32,
        compute_dtype: jnp.dtype = jnp.float32,
        remat: str = "none",
        attention_impl: str = "xla",
        lora: LoRASpec | None = None,
        rngs: nnx.Rngs,
    ):
        if remat not in REMAT_POLICIES:
            raise ValueError(f"remat={remat!r} is not a remat policy; use one of {sorted(REMAT_POLICIES)}")
        self.config = config
        self.compute_dtype = compute_dtype
        self.remat = remat
        self.embed = Embed(config, param_dtype=param_dtype, rngs=rngs)

        @nnx.split_rngs(splits=config.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def stacked_layers(rngs: nnx.Rngs) -> DecoderLayer:
            return DecoderLayer(
                config,
                param_dtype=param_dtype,
                compute_dtype=compute_dtype,
                attention_impl=attention_impl,
                rngs=rngs,
                lora=lora,
            )

        self.layers = stacked_layers(rngs)
        self.final_norm = RMSNorm(
            config.hidden_size, config.rms_norm_eps, param_dtype=param_dtype, axes=("norm",), rngs=rngs
        )
        tied = config.tie_word_embeddings
        self.lm_head = None if tied else LMHead(config, param_dtype=param_dtype, rngs=rngs)

    def hidden_states(
        self,
        input_ids: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        dropout_key: jax.Array | None = None,
    ) -> jax.Array:
        """[batch, seq] token ids -> [batch, seq, hidden] after the final norm, in compute dtype.

        segment_ids: [batch, seq] int, 0 = padding; a token attends causally within its own segment.
        positions: [batch, seq] int; default arange, restarting per segment when segment_ids is given.
        dropout_key: LoRA adapters' dropout (training only); None = no dropout.
        """
        if segment_ids is None:
            segment_ids = jnp.ones_like(input_ids)
        if positions is None:
            positions = segment_positions(segment_ids)
        cos, sin = rope_cos_sin(self.config, positions)
        x = constrain(self.embed(input_ids).astype(self.compute_dtype), HIDDEN_AXES)

        def apply_layer(x: jax.Array, layer: DecoderLayer, key: jax.Array | None) -> jax.Array:
            x = constrain(x, HIDDEN_AXES)
            return constrain(layer(checkpoint_name(x, LAYER_INPUT), cos, sin, segment_ids, key), HIDDEN_AXES)

        if self.remat != "none":
            apply_layer = nnx.remat(apply_layer, policy=REMAT_POLICIES[self.remat], prevent_cse=False)
        # One dropout key per layer, scanned with the layers' weights.
        keys = None if dropout_key is None else jax.random.split(dropout_key, self.config.num_layers)
        scan = nnx.scan(
            apply_layer,
            in_axes=(nnx.Carry, 0, None if keys is None else 0),
            out_axes=nnx.Carry,
            unroll=unroll().layers,
            transform_metadata={nnx.PARTITION_NAME: "layers"},
        )
        return constrain(self.final_norm(scan(x, self.layers, keys)), HIDDEN_AXES)

    def cached_hidden_states(
        self,
        input_ids: jax.Array,
        positions: jax.Array,
        cache: tuple[jax.Array, jax.Array],
        index: jax.Array,
        key_start: jax.Array,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """A chunk of tokens at cache slots [index, index + chunk) -> (hidden states, updated cache).

        The sampler's forward pass (`cft_jax.sampling`); training never calls it. input_ids and
        positions: [batch, chunk]; cache: (k, v), each [layers, batch, cache_len, kv_heads, head_dim];
        key_start: [batch], the first slot each row attends to (the end of its left padding).
        Returns [batch, chunk, hidden] after the final norm and the cache with the chunk written.
        """
        cos, sin = rope_cos_sin(self.config, positions)
        x = constrain(self.embed(input_ids).astype(self.compute_dtype), HIDDEN_AXES)

        def apply_layer(x, layer, k_cache, v_cache):
            x, k, v = layer.cached(constrain(x, HIDDEN_AXES), cos, sin, k_cache, v_cache, index, key_start)
            return constrain(x, HIDDEN_AXES), (k, v)

        scan = nnx.scan(
            apply_layer,
            in_axes=(nnx.Carry, 0, 0, 0),
            out_axes=(nnx.Carry, 0),
            transform_metadata={nnx.PARTITION_NAME: "layers"},
        )
        x, (k_chunk, v_chunk) = scan(x, self.layers, *cache)
        # Only the chunk left the scan; it is written into the whole cache once, in place.
        k_all, v_all = (
            jax.lax.dynamic_update_slice_in_dim(c, new, index, axis=2)
            for c, new in zip(cache, (k_chunk, v_chunk), strict=True)
        )
        return constrain(self.final_norm(x), HIDDEN_AXES), (k_all, v_all)

    def unembed_kernel(self) -> jax.Array:
        """[hidden, vocab] LM head in the parameter dtype: the embedding transposed when tied."""
        if self.lm_head is None:
            return placed_value(self.embed.embedding).T
        return placed_value(self.lm_head.kernel)

    def __call__(
        self, input_ids: jax.Array, positions: jax.Array | None = None, segment_ids: jax.Array | None = None
    ) -> jax.Array:
        """[batch, seq] token ids -> [batch, seq, vocab] float32 logits (see `hidden_states`)."""
        h = self.hidden_states(input_ids, positions, segment_ids)
        kernel = self.unembed_kernel().astype(self.compute_dtype)
        return jnp.einsum("btd,dv->btv", h, kernel, preferred_element_type=jnp.float32)
