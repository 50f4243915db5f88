"""remat="offload" keeps each layer's input in host memory (its values are checked with the other
policies in test_decoder_remat_dtype.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cft_jax.models import Decoder, ModelConfig

CONFIG = ModelConfig(
    model_type="llama",
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
)


def backward_jaxpr(remat: str) -> str:
    model = Decoder(CONFIG, remat=remat, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    input_ids = jnp.asarray(np.random.default_rng(0).integers(0, 64, size=(2, 16)))

    def loss(state: nnx.State) -> jax.Array:
        return jnp.mean(nnx.merge(graphdef, state)(input_ids))

    return str(jax.make_jaxpr(jax.grad(loss))(state))


def test_offload_moves_the_layer_inputs_to_host_and_full_does_not():
    # [batch, seq, hidden] residual placed in host memory by the policy's device_put.
    assert "f32<host>[2,16,32] = device_put" in backward_jaxpr("offload")
    assert "<host>" not in backward_jaxpr("full")
