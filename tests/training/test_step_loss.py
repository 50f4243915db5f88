"""The masked, vocabulary-chunked cross-entropy: exact values and gradients, and what gets gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cft_jax.training.step import (
    _split_kernel,
    chunked_token_nll,
    next_token_targets,
    summed_loss,
    vocab_chunks,
)
from tests.tolerances import BF16_EPS, assert_close_to_scale
from tests.training.conftest import cft_batch, tiny_model


@pytest.mark.parametrize("chunk", [7, 96])  # 96 = 13 chunks of 7 + an overlapping last one; or one chunk
def test_chunked_nll_matches_dense_cross_entropy_in_value_and_gradient(chunk):
    rng = np.random.default_rng(0)
    hidden = jnp.asarray(rng.standard_normal((2, 6, 16)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((16, 96)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 96, (2, 6)))
    weights = jnp.asarray(rng.uniform(size=(2, 6)), jnp.float32)

    def dense(h, k):
        return (optax.softmax_cross_entropy_with_integer_labels(h @ k, targets) * weights).sum()

    def chunked(h, k):
        return (chunked_token_nll(h, k, targets, chunk) * weights).sum()

    # An online log-sum-exp over chunks vs one pass, then a sum of 12 tokens; the gradients sum over
    # the 96 vocabulary columns (d hidden) or the 12 positions (d kernel) in another order: the
    # reordering bound of the longest of those sums.
    assert_close_to_scale(jax.jit(chunked)(hidden, kernel), dense(hidden, kernel), ulps=96)
    ours_grads = jax.jit(jax.grad(chunked, (0, 1)))(hidden, kernel)
    for ours, reference in zip(ours_grads, jax.grad(dense, (0, 1))(hidden, kernel), strict=True):
        assert_close_to_scale(ours, reference, ulps=96)


def test_prompt_tokens_get_no_gradient_and_the_final_critique_token_does(tiny_config):
    model = tiny_model(tiny_config)
    batch = {k: jnp.asarray(v) for k, v in cft_batch(1, 24, tiny_config.vocab_size).items()}
    prompt_len, end = 3, 24
    hidden = nnx.jit(lambda m, b: m.hidden_states(b["input_ids"], b["positions"], b["segment_ids"]))(
        model, batch
    )
    targets, weights = next_token_targets(batch)
    kernel = model.unembed_kernel()

    def loss(h):
        return (chunked_token_nll(h, kernel, targets, 32) * weights).sum()

    # Position t's hidden state predicts token t+1, and nothing after the unembedding mixes positions,
    # so its gradient row is exactly the gradient reaching the prediction of token t+1.
    per_position = np.abs(np.asarray(jax.jit(jax.grad(loss))(hidden))[0]).sum(axis=-1)
    predicts_prompt = per_position[: prompt_len - 1]
    assert np.all(predicts_prompt == 0), predicts_prompt
    assert per_position[end - 2] > 0, "the critique's final token must be trained"
    assert per_position[end - 1] == 0, "the last position predicts nothing"
    assert np.all(per_position[prompt_len - 1 : end - 1] > 0)


def test_a_packed_row_never_predicts_across_a_segment_boundary():
    batch = {
        "input_ids": jnp.array([[5, 6, 7, 8, 9, 0]]),
        "loss_mask": jnp.array([[0, 1, 1, 0, 1, 0]]),
        "segment_ids": jnp.array([[1, 1, 1, 2, 2, 0]]),
        "positions": jnp.array([[0, 1, 2, 0, 1, 0]]),
    }
    targets, weights = next_token_targets(batch)
    np.testing.assert_array_equal(targets, [[6, 7, 8, 9, 0, 0]])
    np.testing.assert_array_equal(weights, [[1, 1, 0, 1, 0, 0]])


def test_summed_loss_counts_only_target_tokens(tiny_config):
    model = tiny_model(tiny_config)
    batch = {k: jnp.asarray(v) for k, v in cft_batch(3, 16, tiny_config.vocab_size).items()}
    _, tokens = nnx.jit(summed_loss, static_argnums=2)(model, batch, 32)
    expected = sum(int(m[1:].sum()) for m in np.asarray(batch["loss_mask"]))
    assert tokens == expected


@pytest.mark.parametrize(
    ("vocab", "chunk"), [(151936, 16384), (152064, 16384), (1000, 384), (96, 96), (50, 64)]
)
def test_every_vocabulary_column_is_computed_exactly_once(vocab, chunk):
    full, rest = vocab_chunks(vocab, chunk)
    kernel = jnp.zeros((4, vocab), jnp.float32)
    chunks, remainder = _split_kernel(kernel, chunk, jnp.bfloat16)
    computed = chunks.shape[0] * chunks.shape[2] + (0 if remainder is None else remainder.shape[1])
    assert computed == vocab == full * min(chunk, vocab) + rest  # no padded or repeated columns


def test_in_bf16_the_chunked_loss_and_gradients_equal_the_dense_reference():
    """bf16 hidden states, fp32 kernel: every matmul takes bf16 inputs and accumulates in fp32.

    The reference runs the dense cross-entropy in fp32 on the same bf16-rounded inputs. The loss
    differs only by fp32 reordering; the gradients also by the one bf16 rounding of d(logits) before
    the backward matmuls (relative 2^-8 per term, terms that sum to at most twice the result's scale
    for softmax - onehot) and of d(hidden) to bf16: 2 bf16 ulps of each gradient's scale.
    """
    rng = np.random.default_rng(1)
    hidden = jnp.asarray(rng.standard_normal((2, 6, 64)), jnp.bfloat16)
    kernel = jnp.asarray(rng.standard_normal((64, 1000)) * 0.1, jnp.float32)
    targets = jnp.asarray(rng.integers(0, 1000, (2, 6)))

    def dense(h, k):
        logits = h.astype(jnp.float32) @ k.astype(jnp.bfloat16).astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).sum()

    def chunked(h, k):
        return chunked_token_nll(h, k, targets, 384).sum()  # 2 chunks of 384 and a remainder of 232

    assert_close_to_scale(jax.jit(chunked)(hidden, kernel), dense(hidden, kernel), ulps=96)
    ours = jax.jit(jax.grad(chunked, (0, 1)))(hidden, kernel)
    reference = jax.grad(dense, (0, 1))(hidden, kernel)
    for name, g, ref in zip(("hidden", "kernel"), ours, reference, strict=True):
        assert g.dtype == ref.dtype, name
        assert_close_to_scale(
            g.astype(jnp.float32), ref.astype(jnp.float32), ulps=2, eps=BF16_EPS, err_msg=name
        )
