"""The train and eval steps: masked, token-weighted cross-entropy, computed in vocabulary chunks.

The loss of a step is the sum of the per-token negative log-likelihoods over every target token of
the global batch, divided once by the number of target tokens. With gradient accumulation the
micro-batches are summed first and normalised at the end, so k micro-batches of B/k give the same
update as one batch of B even when they hold different numbers of target tokens
(x1/n1 + x2/n2 is not (x1 + x2)/(n1 + n2)).

The logits are never materialised as one [batch, seq, vocab] array. The train step's loss
(`vocab_parallel_loss`) splits the LM head's columns over the mesh, streams the tokens in chunks and
takes the gradient in the forward pass, so each logit is computed once; where the vocabulary does not
split evenly over the devices, and for the held-out loss, `chunked_token_nll` streams the vocabulary
in chunks with an online log-sum-exp, and its custom VJP recomputes each chunk's logits in the
backward pass. Either way only the hidden states and one chunk at a time are live.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from cft_jax.models.loops import unroll
from cft_jax.models.lora import LoRAParam
from cft_jax.models.sharding import constrain, constrain_state
from cft_jax.training import vocab_parallel_loss

Batch = dict[str, jax.Array]


# Logical axes (models/sharding.py) of the loss's arrays: a chunk of kernel columns is gathered whole
# over its hidden dimension (FSDP), the logits stay split over the batch.
CHUNK_AXES = (None, "embed", "vocab")
COLUMN_AXES = ("activation_embed", "vocab")
LOGIT_AXES = ("batch", "seq", "vocab")
HIDDEN_AXES = ("batch", "seq", "activation_embed")


def vocab_chunks(vocab: int, chunk: int) -> tuple[int, int]:
    """(full chunks, columns left over): the loss computes each of the `vocab` columns exactly once."""
    chunk = min(chunk, vocab)
    return vocab // chunk, vocab % chunk


def train_loss_chunks(vocab: int, vocab_chunk: int, local_tokens: int, fsdp: int, tensor: int) -> int:
    """Trip count of the train step's loss loop on a (data, fsdp, tensor) mesh, `local_tokens` per
    device per micro-batch: token chunks where the vocabulary splits over fsdp x tensor (`summed_loss`
    with `for_gradient`), else vocabulary chunks. What `cft_jax.aot.cost` multiplies the loop body by."""
    if vocab % (fsdp * tensor) == 0:
        return vocab_parallel_loss.token_chunks(local_tokens, vocab, vocab_chunk, fsdp, fsdp * tensor)
    return vocab_chunks(vocab, vocab_chunk)[0]


def _split_kernel(kernel: jax.Array, chunk: int, dtype: jnp.dtype) -> tuple[jax.Array, jax.Array | None]:
    """[hidden, vocab] -> ([chunks, hidden, chunk] in `dtype`, the [hidden, rest] remainder or None).

    The chunks are the scan's inputs, sliced per iteration as the stacked layers are, so each
    iteration all-gathers one chunk (a loop-invariant kernel indexed inside the loop is gathered
    whole in every iteration instead). The copy is split like the kernel: 1/fsdp of it per device.
    """
    hidden, vocab = kernel.shape
    full, rest = vocab_chunks(vocab, chunk)
    chunk = min(chunk, vocab)
    kernel = kernel.astype(dtype)
    body = kernel[:, : full * chunk].reshape(hidden, full, chunk).swapaxes(0, 1)
    return constrain(body, CHUNK_AXES), (kernel[:, full * chunk :] if rest else None)


def _logits(hidden: jax.Array, columns: jax.Array) -> jax.Array:
    """fp32 logits [batch, seq, width] of one chunk of columns [hidden, width] (compute-dtype inputs)."""
    columns = constrain(columns, COLUMN_AXES)
    return constrain(
        jnp.einsum("bsd,dc->bsc", hidden, columns, preferred_element_type=jnp.float32), LOGIT_AXES
    )


def _forward(hidden: jax.Array, kernel: jax.Array, targets: jax.Array, chunk: int):
    chunks, rest = _split_kernel(kernel, chunk, hidden.dtype)
    width = chunks.shape[-1]

    def accumulate(carry, columns_and_start):
        running_max, running_sum, target_logit = carry
        columns, start = columns_and_start
        logits = _logits(hidden, columns)
        new_max = jnp.maximum(running_max, logits.max(axis=-1))
        running_sum = running_sum * jnp.exp(running_max - new_max) + jnp.exp(logits - new_max[..., None]).sum(
            axis=-1
        )
        column = start + jnp.arange(columns.shape[-1])
        target_logit = target_logit + jnp.where(column == targets[..., None], logits, 0.0).sum(axis=-1)
        return (new_max, running_sum, target_logit), None

    init = tuple(jnp.full(targets.shape, value, jnp.float32) for value in (-jnp.inf, 0.0, 0.0))
    starts = jnp.arange(chunks.shape[0]) * width
    carry, _ = jax.lax.scan(accumulate, init, (chunks, starts), unroll=unroll().loss_chunks)
    if rest is not None:
        carry, _ = accumulate(carry, (rest, chunks.shape[0] * width))
    running_max, running_sum, target_logit = carry
    log_normaliser = running_max + jnp.log(running_sum)
    return log_normaliser - target_logit, log_normaliser


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def chunked_token_nll(hidden: jax.Array, kernel: jax.Array, targets: jax.Array, chunk: int) -> jax.Array:
    """Per-token negative log-likelihood [batch, seq] (fp32) of `targets` under `hidden @ kernel`.

    hidden: [batch, seq, hidden] in the compute dtype; kernel: [hidden, vocab] (cast to hidden's
    dtype); targets: int [batch, seq]; chunk: vocabulary columns per chunk. Every matmul, forward and
    backward, takes compute-dtype inputs and accumulates in fp32.
    """
    nll, _ = _forward(hidden, kernel, targets, chunk)
    return nll


def _nll_fwd(hidden, kernel, targets, chunk):
    nll, log_normaliser = _forward(hidden, kernel, targets, chunk)
    return nll, (hidden, kernel, targets, log_normaliser)


def _nll_bwd(chunk, residuals, cotangent):
    """d nll / d logits = softmax - onehot, one chunk at a time: logits are recomputed, never stored."""
    hidden, kernel, targets, log_normaliser = residuals
    chunks, rest = _split_kernel(kernel, chunk, hidden.dtype)
    width = chunks.shape[-1]

    def gradients(d_hidden, columns_and_start):
        columns, start = columns_and_start
        logits = _logits(hidden, columns)
        probs = jnp.exp(logits - log_normaliser[..., None])
        onehot = start + jnp.arange(columns.shape[-1]) == targets[..., None]
        d_logits = ((probs - onehot) * cotangent[..., None]).astype(hidden.dtype)
        d_hidden = d_hidden + jnp.einsum(
            "bsc,dc->bsd", d_logits, constrain(columns, COLUMN_AXES), preferred_element_type=jnp.float32
        )
        d_columns = jnp.einsum("bsd,bsc->dc", hidden, d_logits, preferred_element_type=jnp.float32)
        return constrain(d_hidden, HIDDEN_AXES), constrain(d_columns, ("embed", "vocab"))

    d_hidden = constrain(jnp.zeros(hidden.shape, jnp.float32), HIDDEN_AXES)
    starts = jnp.arange(chunks.shape[0]) * width
    d_hidden, d_chunks = jax.lax.scan(gradients, d_hidden, (chunks, starts), unroll=unroll().loss_chunks)
    # [chunks, hidden, chunk] -> [hidden, chunks * chunk], then the remainder's columns.
    d_kernel = [d_chunks.swapaxes(0, 1).reshape(kernel.shape[0], -1)]
    if rest is not None:
        d_hidden, d_rest = gradients(d_hidden, (rest, chunks.shape[0] * width))
        d_kernel.append(d_rest)
    d_kernel = jnp.concatenate(d_kernel, axis=1) if len(d_kernel) > 1 else d_kernel[0]
    return d_hidden.astype(hidden.dtype), d_kernel.astype(kernel.dtype), None


chunked_token_nll.defvjp(_nll_fwd, _nll_bwd)


def next_token_targets(batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(targets, weights), both [batch, seq]: position t predicts token t+1.

    `loss_mask[t]` marks token t as a target (the pipeline's convention), so the weight of position t
    is `loss_mask[t+1]`, and zero where t+1 starts another packed segment or lies past the end.
    """
    input_ids, loss_mask, segment_ids = batch["input_ids"], batch["loss_mask"], batch["segment_ids"]
    targets = jnp.pad(input_ids[:, 1:], ((0, 0), (0, 1)))
    same_segment = (segment_ids[:, 1:] == segment_ids[:, :-1]) & (segment_ids[:, 1:] > 0)
    weights = jnp.pad((loss_mask[:, 1:] > 0) & same_segment, ((0, 0), (0, 1)))
    return targets, weights.astype(jnp.float32)


def summed_loss(
    model: nnx.Module,
    batch: Batch,
    vocab_chunk: int,
    dropout_key: jax.Array | None = None,
    *,
    for_gradient: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """(sum of masked target-token NLLs, number of target tokens) for one (micro-)batch, both fp32 scalars.

    `dropout_key`: the LoRA adapters' dropout (training only). `for_gradient`: the loss about to be
    differentiated takes its gradient in the forward pass (`vocab_parallel_loss`: each logit computed
    once instead of twice), where the vocabulary splits evenly over the mesh; the held-out loss, never
    differentiated, streams vocabulary chunks.
    """
    hidden = model.hidden_states(
        batch["input_ids"],
        positions=batch["positions"],
        segment_ids=batch["segment_ids"],
        dropout_key=dropout_key,
    )
    kernel = model.unembed_kernel()
    targets, weights = next_token_targets(batch)
    if for_gradient and vocab_parallel_loss.fits(kernel.shape[1], jax.sharding.get_abstract_mesh()):
        return vocab_parallel_loss.weighted_nll_sum(
            hidden, kernel, targets, weights, vocab_chunk
        ), weights.sum()
    nll = chunked_token_nll(hidden, kernel, targets, min(vocab_chunk, kernel.shape[1]))
    return (nll * weights).sum(), weights.sum()


def split_micro_batches(batch: Batch, accumulation_steps: int) -> Batch:
    """[batch, seq] -> [accumulation_steps, batch / accumulation_steps, seq].

    Micro-batch j takes rows j, j+k, j+2k, ...: with the batch sharded in contiguous row blocks over
    the devices, every micro-batch is then spread over all devices instead of living on a few.
    """

    def split(x: jax.Array) -> jax.Array:
        rows = x.shape[0] // accumulation_steps
        return x.reshape(rows, accumulation_steps, *x.shape[1:]).swapaxes(0, 1)

    return jax.tree.map(split, batch)


def layers_in_compute_dtype(params: nnx.State, compute_dtype: jnp.dtype) -> nnx.State:
    """`params` with the stacked layers' weights cast to the compute dtype: what the gradient is taken of.

    Each layer casts its weights to the compute dtype where it uses them, so their gradients leave
    bf16 matmuls as bf16 values either way; taking the gradient of the cast copy changes no value but
    keeps the per-micro-batch gradient of the stacked layers in bf16 (half the bytes) until it is
    added to the fp32 accumulator. The embedding and the LM head stay in the parameter dtype: their
    gradients are sums over every token position, accumulated in fp32 (the scatter-add and the loss).
    """

    def cast(path: tuple, x: jax.Array) -> jax.Array:
        in_layers = path[0].key == "layers"
        return x.astype(compute_dtype) if in_layers and jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree_util.tree_map_with_path(cast, params)


def loss_and_grads(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    rest: nnx.State,
    batch: Batch,
    *,
    accumulation_steps: int,
    vocab_chunk: int,
    dropout_key: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, nnx.State]:
    """(summed loss, target tokens, summed gradients) over the micro-batches of `batch`, not yet normalised.

    Summing, not averaging, per micro-batch is what makes the one final division token-weighted.
    `dropout_key` (LoRA dropout) is folded with each micro-batch's index, so each draws its own masks.
    """

    def micro_loss(p: nnx.State, micro: Batch, key: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        # The frozen rest (a LoRA model's base) rebuilt at this trace level: NNX refuses to lift
        # Variables created outside the gradient's trace into the layers' scan.
        frozen = jax.tree.map(lambda x: x, rest)
        return summed_loss(nnx.merge(graphdef, p, frozen), micro, vocab_chunk, key, for_gradient=True)

    def micro_key(index: jax.Array | int) -> jax.Array | None:
        return None if dropout_key is None else jax.random.fold_in(dropout_key, index)

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)
    layers_cast = layers_in_compute_dtype(params, nnx.merge(graphdef, params, rest).compute_dtype)
    if accumulation_steps == 1:
        (loss_sum, tokens), grads = grad_fn(layers_cast, batch, micro_key(0))
        return loss_sum, tokens, grads

    def accumulate(carry, indexed: tuple[jax.Array, Batch]):
        loss_sum, tokens, grads = carry
        index, micro = indexed
        (micro_loss_sum, micro_tokens), micro_grads = grad_fn(layers_cast, micro, micro_key(index))
        grads = constrain_state(jax.tree.map(lambda g, m: g + m.astype(g.dtype), grads, micro_grads))
        return (loss_sum + micro_loss_sum, tokens + micro_tokens, grads), None

    # fp32 accumulators laid out as their parameters (sharded), not wherever XLA would put them.
    zero_grads = constrain_state(jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params))
    init = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), zero_grads)
    micro_batches = (jnp.arange(accumulation_steps), split_micro_batches(batch, accumulation_steps))
    (loss_sum, tokens, grads), _ = jax.lax.scan(
        accumulate, init, micro_batches, unroll=unroll().micro_batches
    )
    return loss_sum, tokens, grads


def train_step(
    params: nnx.State,
    opt_state: optax.OptState,
    batch: Batch,
    rest: nnx.State,
    *,
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    accumulation_steps: int,
    vocab_chunk: int,
    dropout_seed: int | None = None,
) -> tuple[nnx.State, optax.OptState, dict[str, jax.Array]]:
    """One optimizer update on a global batch; metrics: loss, target_tokens, grad_norm, lr.

    A batch with no target tokens leaves the gradients zero (the division is guarded), so an all-prompt
    batch is harmless. Gradients are cast to the parameters' dtype (fp32 master weights) before AdamW.
    `params` are the trainable parameters (the LoRA adapters of a LoRA model), `rest` the frozen rest.
    With `dropout_seed` (LoRA dropout), update i draws its masks from key(seed) folded with i: a
    function of the update count alone, so a resumed run draws the masks the uninterrupted one drew.
    """
    count = update_count(opt_state)
    dropout_key = None if dropout_seed is None else jax.random.fold_in(jax.random.key(dropout_seed), count)
    loss_sum, tokens, grads = loss_and_grads(
        graphdef,
        params,
        rest,
        batch,
        accumulation_steps=accumulation_steps,
        vocab_chunk=vocab_chunk,
        dropout_key=dropout_key,
    )
    denominator = jnp.maximum(tokens, 1.0)
    grads = jax.tree.map(lambda g, p: (g / denominator).astype(p.dtype), grads, params)
    grad_norm = optax.global_norm(grads)
    lr = schedule(count)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = {"loss": loss_sum / denominator, "target_tokens": tokens, "grad_norm": grad_norm, "lr": lr}
    return params, opt_state, metrics


def eval_step(
    params: nnx.State, batch: Batch, rest: nnx.State, *, graphdef: nnx.GraphDef, vocab_chunk: int
) -> dict[str, jax.Array]:
    """Summed held-out NLL and target tokens of one batch (the caller divides after summing batches)."""
    loss_sum, tokens = summed_loss(nnx.merge(graphdef, params, rest), batch, vocab_chunk)
    return {"loss_sum": loss_sum, "target_tokens": tokens}


def model_parts(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, trainable state, everything else): the step's functional view of a model.

    The trainable state is every nnx.Param, or, for a model with LoRA adapters, the adapters
    (`LoRAParam`) alone: the base's parameters then go with the rest, frozen.
    """
    has_adapters = bool(jax.tree.leaves(nnx.state(model, LoRAParam)))
    return nnx.split(model, LoRAParam if has_adapters else nnx.Param, ...)


def update_count(opt_state: Any) -> jax.Array:
    """The optimizer's update counter (0 before the first update); Adam's and the schedule's agree."""
    return optax.tree_utils.tree_get_all_with_path(opt_state, "count")[0][1]
