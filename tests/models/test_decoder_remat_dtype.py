"""Remat policies change memory, never values; bf16 compute runs and stays close to fp32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cft_jax.models import Decoder, ModelConfig
from cft_jax.models.transformer import REMAT_POLICIES
from tests.tolerances import assert_close_to_scale

CONFIG = ModelConfig(
    model_type="qwen2",
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_layers=3,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    attention_bias=True,
)
INPUT_IDS = jnp.asarray(np.random.default_rng(0).integers(0, 128, size=(2, 16)))


def loss_and_grads(model: Decoder) -> tuple[jax.Array, nnx.State]:
    def loss_fn(model: Decoder) -> jax.Array:
        logits = model(INPUT_IDS[:, :-1])
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), INPUT_IDS[:, 1:, None], axis=-1))

    return nnx.jit(nnx.value_and_grad(loss_fn))(model)


@pytest.fixture(scope="module")
def no_remat_loss_and_grads() -> tuple[jax.Array, nnx.State]:
    return loss_and_grads(Decoder(CONFIG, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("remat", sorted(set(REMAT_POLICIES) - {"none"}))
def test_remat_policy_gives_the_same_loss_and_grads(remat, no_remat_loss_and_grads):
    loss, grads = no_remat_loss_and_grads
    remat_loss, remat_grads = loss_and_grads(Decoder(CONFIG, remat=remat, rngs=nnx.Rngs(0)))
    # Remat recomputes the same operations; XLA may fuse the recomputed forward differently, which
    # reorders the few-term reductions of each layer (hidden 64): 64 ulps of each tensor's scale.
    assert_close_to_scale(remat_loss, loss, ulps=64)
    for (path, g), (_, rg) in zip(nnx.to_flat_state(grads), nnx.to_flat_state(remat_grads), strict=True):
        assert_close_to_scale(rg[...], g[...], ulps=64, err_msg=str(path))


def test_unknown_remat_policy_is_refused():
    with pytest.raises(ValueError, match="remat='sometimes'"):
        Decoder(CONFIG, remat="sometimes", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.bfloat16])
def test_bf16_compute_stays_close_to_fp32(param_dtype):
    reference = Decoder(CONFIG, rngs=nnx.Rngs(0))
    model = Decoder(CONFIG, param_dtype=param_dtype, compute_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    nnx.update(model, jax.tree.map(lambda x: x.astype(param_dtype), nnx.state(reference)))

    hidden = model.hidden_states(INPUT_IDS)
    assert hidden.dtype == jnp.bfloat16
    assert model.layers.mlp.up_proj.kernel[...].dtype == param_dtype
    logits, expected = np.asarray(model(INPUT_IDS)), np.asarray(reference(INPUT_IDS))
    assert logits.dtype == np.float32
    assert np.abs(logits - expected).max() < 0.05 * np.abs(expected).max()
    loss, grads = loss_and_grads(model)
    assert np.isfinite(loss) and all(np.isfinite(g[...]).all() for _, g in nnx.to_flat_state(grads))
