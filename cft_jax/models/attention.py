"""Scaled dot-product attention kernels, chosen by name, over packed rows with segment ids.

Every kernel has the same contract: causal attention in which a query attends only to keys of its own
nonzero segment (segment id 0 is padding; its rows are never read). "xla" is the plain reference
written with einsums; the fused kernels ("splash" on TPU, "pallas_gpu" on GPU) and "auto" (the
backend's kernel, else the reference) live in `cft_jax.models.attention_kernels`, and the tests hold
them to the reference.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from cft_jax.models.attention_kernels import FUSED_KERNELS, choose_attention, run_fused, target_backend


def attention_mask(segment_ids: jax.Array) -> jax.Array:
    """[batch, seq] int segment ids -> [batch, seq, seq] bool: causal, same nonzero segment."""
    seq = segment_ids.shape[-1]
    causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))
    same_segment = segment_ids[:, :, None] == segment_ids[:, None, :]
    not_padding = (segment_ids != 0)[:, :, None]
    return causal[None] & same_segment & not_padding


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """Reference attention with grouped-query heads; softmax in float32.

    Args:
      q: [batch, seq, heads, head_dim] queries, rotary embedding already applied.
      k, v: [batch, seq, kv_heads, head_dim]; `heads` is a multiple of `kv_heads`, and query head
        h reads kv head h // (heads // kv_heads), as transformers' `repeat_kv` does.
      segment_ids: [batch, seq] int, 0 = padding.

    Returns:
      [batch, seq, heads, head_dim] in q's dtype. Padding rows are finite (uniform over all keys) and
      meaningless.
    """
    batch, seq, heads, head_dim = q.shape
    kv_heads = k.shape[2]
    q = q.reshape(batch, seq, kv_heads, heads // kv_heads, head_dim)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = scores * head_dim**-0.5
    mask = attention_mask(segment_ids)[:, None, None]
    # The float32 minimum, not -inf: a fully masked (padding) row then softmaxes to finite values.
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(batch, seq, heads, head_dim)


def cached_attention(
    q: jax.Array, k_cache: jax.Array, v_cache: jax.Array, query_slots: jax.Array, key_start: jax.Array
) -> jax.Array:
    """Attention of a chunk of queries over a KV cache, for sampling (`cft_jax.sampling`).

    Args:
      q: [batch, chunk, heads, head_dim] queries, rotary embedding applied; grouped as `xla_attention`.
      k_cache, v_cache: [batch, cache_len, kv_heads, head_dim], the chunk's own keys already written.
      query_slots: [chunk] int, the cache slot of each query.
      key_start: [batch] int, each row's first real slot (its left padding ends there).

    A query sees the slots from its row's `key_start` up to its own slot. Returns
    [batch, chunk, heads, head_dim] in q's dtype; the cache is read in q's dtype.
    """
    batch, chunk, heads, head_dim = q.shape
    kv_heads = k_cache.shape[2]
    q = q.reshape(batch, chunk, kv_heads, heads // kv_heads, head_dim)
    k, v = k_cache.astype(q.dtype), v_cache.astype(q.dtype)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = scores * head_dim**-0.5
    slots = jnp.arange(k_cache.shape[1])
    mask = (slots[None, None, :] <= query_slots[None, :, None]) & (
        slots[None, None, :] >= key_start[:, None, None]
    )
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(batch, chunk, heads, head_dim)


AttentionFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def selected_attention(impl: str) -> AttentionFn:
    """An `AttentionFn` that, when traced, runs the kernel `choose_attention` picks for `impl`.

    The choice is made at trace time because it depends on the shapes, the dtype, the backend and the
    ambient mesh (`jax.set_mesh`).
    """

    def attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array) -> jax.Array:
        mesh = jax.sharding.get_abstract_mesh()
        name = choose_attention(impl, q, k, target_backend(), mesh)
        if name == "xla":
            return xla_attention(q, k, v, segment_ids)
        return run_fused(name, q, k, v, segment_ids)

    return attention


ATTENTION_IMPLS: dict[str, AttentionFn] = {
    "xla": xla_attention,
    "auto": selected_attention("auto"),
    **{name: selected_attention(name) for name in FUSED_KERNELS},
}


def get_attention(impl: str) -> AttentionFn:
    """The attention kernel named `impl` (a key of `ATTENTION_IMPLS`)."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl={impl!r} is not available; use one of {sorted(ATTENTION_IMPLS)}")
    return ATTENTION_IMPLS[impl]
