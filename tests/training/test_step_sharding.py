"""The train step on a (data=2, fsdp=2, tensor=2) mesh of 8 CPU devices: same numbers, configured layout."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from cft_jax.config import build_config
from cft_jax.models.sharding import make_mesh, model_shardings
from cft_jax.training.optimizer import learning_rate_schedule, make_optimizer
from cft_jax.training.state import TrainStep, global_batch
from cft_jax.training.step import model_parts
from tests.tolerances import FP32_EPS, assert_close_to_scale, scale_atol
from tests.training.conftest import TINY, cft_batch, tiny_model

LR, ADAM_EPS, B1 = 1e-3, 1e-8, 0.9
# Every gradient element and the loss are sums over the batch's 8 x 32 token positions, which the mesh
# reduces in another order: the reordering bound for 256 terms.
TOKEN_SUM_ULPS = 256

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
    schedule = learning_rate_schedule(LR, 10, schedule="constant")
    tx = make_optimizer(schedule, b1=B1, b2=0.999, eps=ADAM_EPS, weight_decay=0.0, clip_norm=1.0)
    step = TrainStep.build(config, mesh, graphdef, rest, params, total_steps=10, tx=tx)
    opt_state = step.init_optimizer(params)
    batch = global_batch(batch, step.batch_sharding)
    compiled = step.lower(params, opt_state, batch).compile()
    params, opt_state, metrics = step(params, opt_state, batch)
    return params, opt_state, metrics, compiled, param_shardings


@pytest.mark.slow
def test_sharded_step_equals_one_device_step_with_the_configured_shardings(tiny_config):
    batch = cft_batch(8, 32, tiny_config.vocab_size)
    single = one_step((1, 1, 1), tiny_model(tiny_config), batch)
    sharded = one_step((2, 2, 2), tiny_model(tiny_config), batch)

    for name in ("loss", "grad_norm", "target_tokens"):
        assert_close_to_scale(sharded[2][name], single[2][name], ulps=TOKEN_SUM_ULPS, err_msg=name)
    # AdamW's first moment after one update is (1 - b1) x the clipped gradient.
    gradients = [
        jax.tree.map(lambda mu: np.asarray(mu) / (1 - B1), optax.tree_utils.tree_get(r[1], "mu"))
        for r in (sharded, single)
    ]
    for sharded_grads, single_grads in zip(*(jax.tree.leaves(g) for g in gradients), strict=True):
        assert_close_to_scale(sharded_grads, single_grads, ulps=TOKEN_SUM_ULPS)
    # Adam's first update is lr * g / (|g| + eps): a gradient element near eps (a token row the batch
    # barely touches) amplifies its reordering by lr * eps / (|g| + eps)^2. Each parameter may differ
    # by that times its gradient's tolerance, plus the rounding of the update and of the subtraction,
    # a few eps of the operands (the parameter before the step, at most |after| + lr).
    for a, b, g in zip(
        jax.tree.leaves(sharded[0]), jax.tree.leaves(single[0]), jax.tree.leaves(gradients[1]), strict=True
    ):
        g_atol = scale_atol(g, TOKEN_SUM_ULPS)
        amplified = LR * ADAM_EPS * g_atol / (np.abs(g) + ADAM_EPS) ** 2
        atol = amplified + 4 * FP32_EPS * (np.abs(np.asarray(b)) + LR)
        difference = np.abs(np.asarray(a) - np.asarray(b))
        assert np.all(difference <= atol), f"{(difference / atol).max():.3g} x the derived tolerance"

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
