"""On 8 CPU devices, a (fsdp=4, tensor=2) mesh shards each parameter as the rules table says and
computes the same logits as one device.

The 8 devices come from XLA_FLAGS=--xla_force_host_platform_device_count=8 (the README's test
command sets it); when this process has fewer, the check reruns itself in a subprocess with the flag.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cft_jax.models import Decoder, ModelConfig
from cft_jax.models.sharding import logical_sharding, logical_to_spec, make_mesh, model_shardings, shard_model
from tests.tolerances import assert_close_to_scale

CONFIG = ModelConfig(
    model_type="qwen2",
    vocab_size=256,
    hidden_size=64,
    intermediate_size=96,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    attention_bias=True,
)

# Written out by hand from LOGICAL_AXIS_RULES (embed->fsdp; vocab, mlp, q_heads, kv_heads->tensor).
EXPECTED_SPECS = {
    "embed.embedding": P("tensor", "fsdp"),
    "final_norm.scale": P(None),
    "layers.attn_norm.scale": P(None, None),
    "layers.mlp_norm.scale": P(None, None),
    "layers.attn.q_proj.kernel": P(None, "fsdp", "tensor", None),
    "layers.attn.q_proj.bias": P(None, "tensor", None),
    "layers.attn.k_proj.kernel": P(None, "fsdp", "tensor", None),
    "layers.attn.k_proj.bias": P(None, "tensor", None),
    "layers.attn.v_proj.kernel": P(None, "fsdp", "tensor", None),
    "layers.attn.v_proj.bias": P(None, "tensor", None),
    "layers.attn.o_proj.kernel": P(None, "tensor", None, "fsdp"),
    "layers.mlp.gate_proj.kernel": P(None, "fsdp", "tensor"),
    "layers.mlp.up_proj.kernel": P(None, "fsdp", "tensor"),
    "layers.mlp.down_proj.kernel": P(None, "tensor", "fsdp"),
    "lm_head.kernel": P("fsdp", "tensor"),
}


def check_sharded_forward_matches_one_device() -> None:
    assert jax.device_count() >= 8, jax.devices()
    model = Decoder(CONFIG, rngs=nnx.Rngs(0))
    input_ids = jnp.asarray(np.random.default_rng(0).integers(0, CONFIG.vocab_size, size=(4, 16)))
    reference = np.asarray(model(input_ids))

    mesh = make_mesh(data=1, fsdp=4, tensor=2, devices=jax.devices()[:8])
    shard_model(model, mesh)
    params = {".".join(map(str, p)): v[...] for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert sorted(params) == sorted(EXPECTED_SPECS)
    for path, array in params.items():
        expected = NamedSharding(mesh, EXPECTED_SPECS[path])
        assert array.sharding.is_equivalent_to(expected, array.ndim), (path, array.sharding.spec)
    # Concretely: a q_proj shard holds a quarter of the embed dim and half the heads.
    assert params["layers.attn.q_proj.kernel"].addressable_shards[0].data.shape == (2, 16, 2, 16)

    graphdef, state = nnx.split(model)
    batch_sharding = logical_sharding(("batch", "seq"), mesh)
    logits_sharding = logical_sharding(("batch", "seq", "vocab"), mesh)
    forward = jax.jit(
        lambda state, ids: nnx.merge(graphdef, state)(ids),
        in_shardings=(model_shardings(state, mesh), batch_sharding),
        out_shardings=logits_sharding,
    )
    compiled = forward.lower(state, jax.device_put(input_ids, batch_sharding)).compile()
    # The compiled forward takes each parameter in the sharding the table gives, not a resharded copy.
    paths = [".".join(map(str, p)) for p, _ in nnx.to_flat_state(state)]
    for path, got in zip(paths, jax.tree.leaves(compiled.input_shardings[0][0]), strict=True):
        assert got.is_equivalent_to(NamedSharding(mesh, EXPECTED_SPECS[path]), params[path].ndim), path
    logits = forward(state, jax.device_put(input_ids, batch_sharding))
    assert logits.sharding.is_equivalent_to(NamedSharding(mesh, P("fsdp", None, "tensor")), 3)
    # The mesh splits each layer's matmul reductions (hidden, heads) and sums the parts in another
    # order: the reordering bound of a 64-term sum, in ulps of the logits' scale.
    assert_close_to_scale(np.asarray(logits), reference, ulps=64)


def test_sharded_forward_matches_one_device():
    if jax.device_count() >= 8:
        check_sharded_forward_matches_one_device()
        return
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_refuse_two_dims_on_one_mesh_axis():
    mesh = make_mesh(devices=jax.devices()[:1])
    with pytest.raises(ValueError, match="'batch' and 'embed' both map to mesh axis 'fsdp'"):
        logical_to_spec(("batch", "seq", "embed"), mesh)
    with pytest.raises(ValueError, match="'experts' has no rule"):
        logical_to_spec(("experts",), mesh)


def test_indivisible_dims_fall_back_to_replicated():
    devices = np.array(jax.devices() * 2)[:2] if jax.device_count() < 2 else jax.devices()[:2]
    mesh = make_mesh(data=1, tensor=2, devices=devices)
    assert logical_to_spec(("layers", "embed", "kv_heads", "head_dim"), mesh, (2, 64, 1, 16)) == P(
        None, "fsdp", None, None
    )


def test_make_mesh_takes_the_remaining_devices():
    mesh = make_mesh(data=-1, devices=jax.devices()[:1])
    assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    with pytest.raises(ValueError, match="are available"):
        make_mesh(data=1, fsdp=2, devices=jax.devices()[:1])


if __name__ == "__main__":
    check_sharded_forward_matches_one_device()
