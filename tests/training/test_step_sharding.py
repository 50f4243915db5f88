"""The train step on a (data=2, fsdp=2, tensor=2) mesh of 8 CPU devices: same numbers, configured layout."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from cft_jax.config import build_config
from cft_jax.train import compile_train_step, global_batch, optimizer_shardings
from cft_jax.training.mesh import make_mesh, model_shardings
from cft_jax.training.optimizer import learning_rate_schedule, make_optimizer
from cft_jax.training.step import model_parts
from tests.training.conftest import TINY, cft_batch, tiny_model

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8"
)


def one_step(mesh_shape, model, batch):
    """(params, opt_state, metrics, compiled step, expected param shardings) of one update."""
    config = build_config(
        {
            "model": {"init_config": TINY},
            "training": {"global_batch": 8, "accumulation_steps": 2},
            "mesh": dict(zip(("data", "fsdp", "tensor"), mesh_shape, strict=True)),
        },
        num_devices=int(np.prod(mesh_shape)),
    )
    devices = jax.devices()[: int(np.prod(mesh_shape))]
    mesh = make_mesh(*mesh_shape, devices=devices)
    graphdef, params, rest = model_parts(model)
    param_shardings = model_shardings(params, mesh)
    params = jax.device_put(params, param_shardings)
    schedule = learning_rate_schedule(1e-3, 10, schedule="constant")
    tx = make_optimizer(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip_norm=1.0)
    opt_shardings = optimizer_shardings(tx, params, mesh)
    opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
    batch_sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None))
    step = compile_train_step(
        config, graphdef, rest, tx, schedule, param_shardings, opt_shardings, batch_sharding
    )
    batch = global_batch(batch, batch_sharding)
    compiled = step.lower(params, opt_state, batch).compile()
    params, opt_state, metrics = step(params, opt_state, batch)
    return params, opt_state, metrics, compiled, param_shardings


@pytest.mark.slow
def test_sharded_step_equals_one_device_step_with_the_configured_shardings(tiny_config):
    batch = cft_batch(8, 32, tiny_config.vocab_size)
    single = one_step((1, 1, 1), tiny_model(tiny_config), batch)
    sharded = one_step((2, 2, 2), tiny_model(tiny_config), batch)

    for name in ("loss", "grad_norm", "target_tokens"):
        np.testing.assert_allclose(sharded[2][name], single[2][name], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(sharded[0]), jax.tree.leaves(single[0]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)

    params, opt_state, _, compiled, expected = sharded
    expected_specs = [s.spec for s in jax.tree.leaves(expected)]
    # The executable's own output layout, not just what we asked jit for.
    out_params, out_opt_state, _ = compiled.output_shardings
    assert [s.spec for s in jax.tree.leaves(out_params)] == expected_specs
    assert [x.sharding.spec for x in jax.tree.leaves(params)] == expected_specs
    # AdamW's moments are laid out exactly as their parameters.
    moments = [s.spec for s in jax.tree.leaves(out_opt_state) if s.spec != PartitionSpec()]
    assert moments == [s for s in expected_specs if s != PartitionSpec()] * 2
    # The layout is really split: the embedding over fsdp and tensor, the MLP over tensor.
    state = nnx.State(params).to_pure_dict()
    assert state["embed"]["embedding"].sharding.spec == PartitionSpec("tensor", "fsdp")
    assert state["layers"]["mlp"]["up_proj"]["kernel"].sharding.spec == PartitionSpec(None, "fsdp", "tensor")
