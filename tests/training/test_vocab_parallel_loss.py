"""The training loss that takes its gradient in the forward pass: exact on every mesh, each logit once."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from cft_jax.models.sharding import make_mesh
from cft_jax.training.vocab_parallel_loss import tokens_per_chunk, weighted_nll_sum
from tests.tolerances import BF16_EPS, assert_close_to_scale

BATCH, SEQ, WIDTH, VOCAB = 8, 12, 16, 96


def _inputs(dtype=jnp.float32):
    rng = np.random.default_rng(0)
    hidden = jnp.asarray(rng.standard_normal((BATCH, SEQ, WIDTH)), dtype)
    kernel = jnp.asarray(rng.standard_normal((WIDTH, VOCAB)) * 0.5, jnp.float32)
    targets = jnp.asarray(rng.integers(0, VOCAB, (BATCH, SEQ)))
    # Token weights as the step has them: zeros for prompt tokens, and a non-binary weight to catch a
    # gradient that ignores them.
    weights = jnp.asarray(
        (rng.uniform(size=(BATCH, SEQ)) > 0.3) * rng.uniform(0.5, 1.5, (BATCH, SEQ)), jnp.float32
    )
    return hidden, kernel, targets, weights


def _dense(hidden, kernel, targets, weights):
    logits = hidden.astype(jnp.float32) @ kernel.astype(hidden.dtype).astype(jnp.float32)
    return (optax.softmax_cross_entropy_with_integer_labels(logits, targets) * weights).sum()


def _ours(hidden, kernel, targets, weights):
    return weighted_nll_sum(hidden, kernel, targets, weights, 7)  # 7 columns' worth: several token chunks


@pytest.mark.parametrize("mesh_shape", [None, (1, 8, 1), (2, 2, 2)])  # no mesh, FSDP only, every axis
def test_loss_and_gradients_equal_the_dense_reference_on_every_mesh(mesh_shape):
    """The value sums 96 tokens and the gradients 96 columns (d hidden) or 96 tokens (d kernel), in
    another order than the dense reference (chunks, devices, a log-sum-exp combined from per-device
    parts): the reordering bound of the longest of those sums, as for the other loss."""
    hidden, kernel, targets, weights = _inputs()
    reference = jax.value_and_grad(_dense, (0, 1))(hidden, kernel, targets, weights)
    step = jax.jit(jax.value_and_grad(_ours, (0, 1)))
    if mesh_shape is None:
        ours = step(hidden, kernel, targets, weights)
    else:
        mesh = make_mesh(*mesh_shape, devices=jax.devices()[: int(np.prod(mesh_shape))])
        rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
        with jax.set_mesh(mesh):
            ours = step(
                jax.device_put(hidden, rows),
                jax.device_put(kernel, NamedSharding(mesh, PartitionSpec("fsdp", "tensor"))),
                jax.device_put(targets, rows),
                jax.device_put(weights, rows),
            )
    assert_close_to_scale(ours[0], reference[0], ulps=96)
    for name, g, ref in zip(("hidden", "kernel"), ours[1], reference[1], strict=True):
        assert_close_to_scale(g, ref, ulps=96, err_msg=name)


def test_in_bf16_the_loss_and_gradients_equal_the_dense_reference():
    """bf16 hidden states and kernel copy, fp32 accumulation. As for the chunked loss: the gradients
    differ from the fp32 reference by the one bf16 rounding of d(logits) before the two gradient
    matmuls and of d(hidden) to bf16: 2 bf16 ulps of each gradient's scale."""
    hidden, kernel, targets, weights = _inputs(jnp.bfloat16)
    mesh = make_mesh(1, 4, 2, devices=jax.devices()[:8])
    rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    with jax.set_mesh(mesh):
        ours = jax.jit(jax.value_and_grad(_ours, (0, 1)))(
            jax.device_put(hidden, rows), kernel, jax.device_put(targets, rows), jax.device_put(weights, rows)
        )
    reference = jax.value_and_grad(_dense, (0, 1))(hidden, kernel, targets, weights)
    assert_close_to_scale(ours[0], reference[0], ulps=96)
    for name, g, ref in zip(("hidden", "kernel"), ours[1], reference[1], strict=True):
        assert g.dtype == ref.dtype, name
        assert_close_to_scale(
            g.astype(jnp.float32), ref.astype(jnp.float32), ulps=2, eps=BF16_EPS, err_msg=name
        )


def test_each_logit_is_computed_once_three_matmuls_in_all():
    """The compiled loss-and-gradient does 3 matmuls of 2 x tokens x hidden x vocab flops (logits,
    d hidden, d kernel), where recomputing the logits in the backward would make it 4; one chunk, so
    the compiler's count is not hiding loop iterations. The rest (softmax, masks) is O(tokens x vocab)."""
    hidden, kernel, targets, weights = _inputs()
    one_chunk = jax.jit(jax.grad(lambda h, k: weighted_nll_sum(h, k, targets, weights, VOCAB), (0, 1)))
    flops = one_chunk.lower(hidden, kernel).compile().cost_analysis()["flops"]
    matmul = 2 * BATCH * SEQ * WIDTH * VOCAB
    elementwise = 20 * BATCH * SEQ * VOCAB  # exp, subtract, compare, select, scale: a generous count
    assert 3 * matmul <= flops <= 3 * matmul + elementwise, flops / matmul


@pytest.mark.parametrize(
    ("local_tokens", "gathered", "local_vocab", "budget", "expected"),
    [
        (8192, 4, 38016, 8192 * 16384, 512),  # Qwen2.5-1.5B on v5p-8: 2048 tokens x 38016 columns a chunk
        (16384, 16, 9504, 16384 * 16384, 1024),  # Qwen2.5-7B on v5p-32, 8 rows of 2048 a micro-batch
        (96, 1, 96, 96 * 7, 6),
        (7, 1, 10, 1, 1),  # never below one token
    ],
)
def test_token_chunks_divide_the_tokens_and_keep_to_the_logits_budget(
    local_tokens, gathered, local_vocab, budget, expected
):
    per_chunk = tokens_per_chunk(local_tokens, gathered, local_vocab, budget)
    assert per_chunk == expected and local_tokens % per_chunk == 0
    assert per_chunk == 1 or gathered * per_chunk * local_vocab <= budget
