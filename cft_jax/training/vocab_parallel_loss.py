"""The training loss with its gradient taken in the forward pass: vocabulary-parallel cross-entropy.

`step.chunked_token_nll` streams the vocabulary in chunks on each device's own tokens; its backward
needs the log-normaliser of every token before any softmax, so it computes each chunk's logits twice:
four matmuls per chunk where three would do. This loss splits the work the other way, as Megatron's
vocabulary-parallel cross-entropy does, but over the FSDP axis:

- the LM head is split by vocabulary columns over ("fsdp", "tensor"): each device holds V / n
  columns, whole over the hidden dimension, which is where FSDP keeps 1/n of it anyway (a reshuffle,
  not a gather of the whole head);
- the tokens of the FSDP group are streamed in chunks: each device all-gathers one chunk of every
  device's hidden states, computes the logits of its columns for all of them, and the group combines
  three numbers per token (max, sum of exponentials, target logit) into the exact log-normaliser;
- with the log-normaliser known, the same logits give d logits at once, so the chunk's two gradient
  matmuls follow without recomputing anything: d hidden is reduce-scattered back to the devices
  that own the tokens, d kernel stays where its columns live (it is already the FSDP gradient shard).

So each logit is computed once, and the forward returns the gradients as residuals; the backward
only scales them by the incoming cotangent. The token weights are known in the forward, which is
what makes this possible: the loss is the weighted sum, not a per-token array.

Peak memory of the loss: one chunk's [tokens, V / n] fp32 logits and the d kernel shard (V / n x
hidden, fp32), in place of the vocabulary chunk's logits and gathered columns of the other loss.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from cft_jax.models.loops import unroll

# Tokens are gathered over the FSDP axis only: "data" replicas train on their own tokens (the
# gradients are summed over "data" at the end); "tensor" devices already hold the same tokens.
GATHER_AXES = ("fsdp",)
VOCAB_AXES = ("fsdp", "tensor")


def _present(mesh: jax.sharding.AbstractMesh, axes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(a for a in axes if a in mesh.axis_names)


def vocab_group(mesh: jax.sharding.AbstractMesh) -> int:
    """How many devices split the vocabulary (1 without a mesh)."""
    return 1 if mesh.empty else math.prod(mesh.shape[a] for a in _present(mesh, VOCAB_AXES))


def fits(vocab: int, mesh: jax.sharding.AbstractMesh) -> bool:
    """Whether the vocabulary splits evenly over the devices of the vocabulary group."""
    return vocab % vocab_group(mesh) == 0


def tokens_per_chunk(local_tokens: int, gathered: int, local_vocab: int, budget: int) -> int:
    """The largest divisor d of `local_tokens` whose chunk of logits, [gathered * d, local_vocab],
    stays within `budget` elements (at least 1)."""
    best = 1
    for d in range(1, local_tokens + 1):
        if local_tokens % d == 0 and gathered * d * local_vocab <= budget:
            best = d
    return best


def token_chunks(local_tokens: int, vocab: int, vocab_chunk: int, gathered: int, vocab_devices: int) -> int:
    """How many chunks the loss streams a device's `local_tokens` in: each chunk's logits take as much
    memory as the other loss's, this device's tokens x `vocab_chunk` columns. Also what
    `cft_jax.aot.cost` multiplies the loop body by."""
    budget = local_tokens * min(vocab_chunk, vocab)
    return local_tokens // tokens_per_chunk(local_tokens, gathered, vocab // vocab_devices, budget)


def _local_loss_and_grads(hidden, kernel, targets, weights, *, vocab_chunk: int, gather, vocab, data):
    """Per device: (weighted NLL sum of the group's tokens, d hidden of its own tokens, d kernel of its
    columns). `gather`, `vocab`, `data`: the mesh axes of each role, () when absent."""
    batch, seq, width = hidden.shape
    local_vocab = kernel.shape[1]
    gathered = math.prod(jax.lax.axis_size(a) for a in gather) if gather else 1
    vocab_devices = math.prod(jax.lax.axis_size(a) for a in vocab) if vocab else 1
    first_column = jax.lax.axis_index(vocab) * local_vocab if vocab else 0
    chunks = token_chunks(batch * seq, local_vocab * vocab_devices, vocab_chunk, gathered, vocab_devices)
    per_chunk = batch * seq // chunks

    def all_of_group(x: jax.Array) -> jax.Array:
        return jax.lax.all_gather(x, gather, axis=0, tiled=True) if gather else x

    def chunk_step(d_kernel, xs):
        h_local, t, w = xs
        h = all_of_group(h_local)  # [gathered * per_chunk, hidden]
        logits = jnp.einsum("td,dv->tv", h, kernel, preferred_element_type=jnp.float32)
        hit = first_column + jnp.arange(local_vocab) == t[:, None]
        local_max = logits.max(axis=-1)
        stats = jnp.stack(
            [
                local_max,
                jnp.exp(logits - local_max[:, None]).sum(axis=-1),
                jnp.where(hit, logits, 0.0).sum(axis=-1),
            ]
        )
        # [devices, 3, tokens]: every device of the group ends with the same rows.
        stats = jax.lax.all_gather(stats, vocab, axis=0) if vocab else stats[None]
        top = stats[:, 0].max(axis=0)
        log_normaliser = top + jnp.log((stats[:, 1] * jnp.exp(stats[:, 0] - top)).sum(axis=0))
        nll = log_normaliser - stats[:, 2].sum(axis=0)
        d_logits = ((jnp.exp(logits - log_normaliser[:, None]) - hit) * w[:, None]).astype(h.dtype)
        d_h = jnp.einsum("tv,dv->td", d_logits, kernel, preferred_element_type=jnp.float32)
        if gather:  # each device's columns' share of every token's gradient, summed at its owner
            d_h = jax.lax.psum_scatter(d_h, gather, scatter_dimension=0, tiled=True)
        others = tuple(a for a in vocab if a not in gather)
        if others:
            d_h = jax.lax.psum(d_h, others)
        d_kernel = d_kernel + jnp.einsum("td,tv->dv", h, d_logits, preferred_element_type=jnp.float32)
        return d_kernel, ((nll * w).sum(), d_h.astype(h.dtype))

    def chunked_over_group(x: jax.Array) -> jax.Array:
        """[batch, seq] per-token values -> [chunks, gathered * per_chunk]: chunk c of every device of
        the group, in the order `all_of_group` stacks the hidden states. Gathered once, before the
        loop: a few bytes per token, not worth a collective per chunk."""
        x = x.reshape(chunks, 1, per_chunk)
        if gather:
            x = jax.lax.all_gather(x, gather, axis=1, tiled=True)
        return x.reshape(chunks, -1)

    xs = (hidden.reshape(chunks, per_chunk, width), chunked_over_group(targets), chunked_over_group(weights))
    zeros = jnp.zeros(kernel.shape, jnp.float32)
    d_kernel, (losses, d_hidden) = jax.lax.scan(chunk_step, zeros, xs, unroll=unroll().loss_chunks)
    loss = losses.sum()
    if data:  # the "data" replicas' tokens are their own: sum their losses and column gradients
        loss, d_kernel = jax.lax.psum((loss, d_kernel), data)
    return loss, d_hidden.reshape(batch, seq, width), d_kernel


def _loss_and_grads(hidden, kernel, targets, weights, vocab_chunk):
    kernel = kernel.astype(hidden.dtype)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        local = functools.partial(
            _local_loss_and_grads, vocab_chunk=vocab_chunk, gather=(), vocab=(), data=()
        )
        return local(hidden, kernel, targets, weights)
    gather, vocab = _present(mesh, GATHER_AXES), _present(mesh, VOCAB_AXES)
    data = _present(mesh, ("data",))
    rows = PartitionSpec(data + gather or None)
    columns = PartitionSpec(None, vocab or None)
    local = functools.partial(
        _local_loss_and_grads, vocab_chunk=vocab_chunk, gather=gather, vocab=vocab, data=data
    )
    # check_vma off: the loss is replicated by construction (every device of the group computes it
    # from the same gathered statistics), which the varying-axes check cannot see through all_gather.
    return jax.shard_map(
        local,
        in_specs=(rows, columns, rows, rows),
        out_specs=(PartitionSpec(), rows, columns),
        check_vma=False,
    )(hidden, kernel, targets, weights)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def weighted_nll_sum(
    hidden: jax.Array, kernel: jax.Array, targets: jax.Array, weights: jax.Array, vocab_chunk: int
) -> jax.Array:
    """sum(weights * NLL of `targets` under `hidden @ kernel`), an fp32 scalar.

    hidden: [batch, seq, hidden] in the compute dtype; kernel: [hidden, vocab] (cast to hidden's
    dtype; its vocabulary must split evenly over the mesh's ("fsdp", "tensor") devices, see `fits`);
    targets: int [batch, seq]; weights: fp32 [batch, seq]; vocab_chunk: the other loss's chunk width,
    which sets the logits memory per chunk (`tokens_per_chunk`).
    Every matmul takes compute-dtype inputs and accumulates in fp32.
    """
    return _loss_and_grads(hidden, kernel, targets, weights, vocab_chunk)[0]


def _fwd(hidden, kernel, targets, weights, vocab_chunk):
    loss, d_hidden, d_kernel = _loss_and_grads(hidden, kernel, targets, weights, vocab_chunk)
    return loss, (d_hidden, d_kernel.astype(kernel.dtype))


def _bwd(vocab_chunk, residuals, cotangent):
    """The gradients were taken in the forward; the cotangent of the sum (1 in the train step) scales them."""
    d_hidden, d_kernel = residuals
    return (
        (d_hidden * cotangent).astype(d_hidden.dtype),
        (d_kernel * cotangent).astype(d_kernel.dtype),
        None,
        None,
    )


weighted_nll_sum.defvjp(_fwd, _bwd)
