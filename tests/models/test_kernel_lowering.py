"""The fused kernels lower for their real hardware, alone and inside the sharded train step.

Interpret mode (tests/models/test_attention_kernels.py) checks the kernels' numbers on CPU but not
that Mosaic (TPU) and Triton (GPU) accept them: here `jax.export` lowers them for "tpu" and "cuda"
from this CPU host, which runs each kernel's own lowering (block shapes, layouts, grid) and yields the
hardware custom call. Nothing is compiled or run: that needs the hardware.
  - each kernel's forward and gradient at the Qwen2.5-1.5B attention shape (12 heads, 2 kv heads,
    head_dim 128), 4096 packed bf16 tokens;
  - the whole train step with attention_impl="auto" on a (data=1, fsdp=4, tensor=2) mesh, traced
    for TPU and for GPU (`lowering_for`): "auto" picks the backend's kernel, shard_map places it per
    device, and the backward pass (remat) lowers with it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax import export

from cft_jax.config import build_config
from cft_jax.models.attention_kernels import FUSED_KERNELS, lowering_for
from cft_jax.models.config import ModelConfig
from cft_jax.models.sharding import make_mesh
from cft_jax.training.state import TrainStep, abstract_params

# kernel -> (jax.export platform, the custom call its lowering emits)
TARGETS = {"splash": ("tpu", "tpu_custom_call"), "pallas_gpu": ("cuda", "__gpu$xla.gpu.triton")}
BACKEND = {"tpu": "tpu", "cuda": "gpu"}
# Triton calls carry no stability guarantee across jaxlib versions, so jax.export asks to be told.
UNSTABLE_OK = [export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]


def lowered_text(fn, platform: str, *args) -> str:
    return export.export(fn, platforms=[platform], disabled_checks=UNSTABLE_OK)(*args).mlir_module()


@pytest.mark.parametrize("name", sorted(FUSED_KERNELS))
def test_kernel_forward_and_gradient_lower_for_their_hardware(name):
    platform, custom_call = TARGETS[name]
    q = jax.ShapeDtypeStruct((1, 4096, 12, 128), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((1, 4096, 2, 128), jnp.bfloat16)
    ids = jax.ShapeDtypeStruct((1, 4096), jnp.int32)

    def loss(q, k, v, segment_ids):
        out = FUSED_KERNELS[name].fn(q, k, v, segment_ids, interpret=False)
        return out.astype(jnp.float32).sum()

    text = lowered_text(jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))), platform, q, kv, kv, ids)
    # Forward, and the backward's own kernel call(s): more than one.
    assert text.count(custom_call) >= 2, f"{name}: {text.count(custom_call)} {custom_call} calls"


SMALL = {
    "model_type": "qwen2",
    "vocab_size": 512,
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,  # splash takes 64 or multiples of 128
    "tie_word_embeddings": False,
}


@pytest.mark.skipif(jax.device_count() < 8, reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
@pytest.mark.parametrize("name", sorted(FUSED_KERNELS))
def test_sharded_train_step_with_auto_attention_lowers_for_the_hardware(name):
    platform, custom_call = TARGETS[name]
    mesh_shape = (1, 4, 2)
    config = build_config(
        {
            "model": {"init_config": SMALL, "attention_impl": "auto", "remat": "full"},
            "data": {"seq_len": 256},
            "training": {"global_batch": 8},
            "mesh": dict(zip(("data", "fsdp", "tensor"), mesh_shape, strict=True)),
        },
        num_devices=8,
    )
    mesh = make_mesh(*mesh_shape, devices=jax.devices()[:8])
    graphdef, params, rest = abstract_params(config, ModelConfig.from_hf(SMALL), mesh)
    step = TrainStep.build(config, mesh, graphdef, rest, params, total_steps=10)
    with jax.set_mesh(mesh), lowering_for(BACKEND[platform]):
        text = lowered_text(
            step.update_fn,
            platform,
            params,
            step.abstract_opt_state(params),
            step.abstract_batch(8, 256),
            rest,
        )
    assert custom_call in text, f"attention_impl='auto' did not pick {name} when lowering for {platform}"
    # Per device under shard_map (Shardy's manual computation), in the forward and the backward pass.
    assert text.count("sdy.manual_computation") >= 2
