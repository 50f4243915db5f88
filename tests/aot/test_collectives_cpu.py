"""FSDP's collectives in the sharded step compiled for this machine's 8 simulated CPU devices.

The same assertions as on the TPU compiler (tests/aot/test_aot_tpu.py), on XLA's CPU partitioner:
the activation constraints make every layer's weights all-gathered where they are used, and no
[batch, seq, hidden] activation is summed across devices.
"""

from __future__ import annotations

import jax
import pytest

from cft_jax.config import build_config
from cft_jax.models.config import ModelConfig
from cft_jax.models.sharding import make_mesh
from cft_jax.training.state import TrainStep, abstract_params
from tests.aot.conftest import (
    SEQ,
    TINY,
    activation_all_reduces,
    largest_all_reduce_elements,
    weight_all_gathers,
)

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8"
)


@pytest.mark.parametrize("mesh_shape", [(1, 8, 1), (1, 4, 2)], ids=["fsdp8", "fsdp4-tensor2"])
def test_the_sharded_step_all_gathers_weights_and_never_all_reduces_activations(mesh_shape):
    rows = 16
    config = build_config(
        {
            "model": {"init_config": TINY, "compute_dtype": "float32", "remat": "full"},
            "data": {"seq_len": SEQ},
            "training": {"global_batch": rows, "vocab_chunk": 384},
            "mesh": dict(zip(("data", "fsdp", "tensor"), mesh_shape, strict=True)),
        },
        num_devices=8,
    )
    model = ModelConfig.from_hf(TINY)
    mesh = make_mesh(*mesh_shape, devices=jax.devices()[:8])
    graphdef, params, rest = abstract_params(config, model, mesh)
    step = TrainStep.build(config, mesh, graphdef, rest, params, total_steps=10)
    text = (
        step.lower(params, step.abstract_opt_state(params), step.abstract_batch(rows, SEQ))
        .compile()
        .as_text()
    )

    assert weight_all_gathers(text, model, tensor=mesh_shape[2])
    assert largest_all_reduce_elements(text) < rows * SEQ * model.hidden_size
    if mesh_shape[2] == 1:
        assert activation_all_reduces(text) == []
