"""LoRA in the train step: the adapters learn, the base does not move, the optimizer holds adapters only,
the adapters are laid out by the rules table, the memory plan drops the base's AdamW state, and bad
`lora.*` values fail at load naming the key."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from cft_jax.config import ConfigError, build_config
from cft_jax.models.config import ModelConfig
from cft_jax.models.hf import param_leaves
from cft_jax.models.shapes import SHAPES
from cft_jax.models.sharding import make_mesh, model_shardings
from cft_jax.training.metrics import memory_plan
from cft_jax.training.state import TrainStep, abstract_params, global_batch, lora_spec
from cft_jax.training.step import model_parts
from tests.training.conftest import TINY, cft_batch, tiny_model

LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.1, "targets": ("*_proj",)}


def lora_config(mesh=(1, 1, 1), **lora):
    return build_config(
        {
            "model": {"init_config": TINY, "compute_dtype": "float32"},
            "lora": {**LORA, **lora},
            "optimizer": {"lr": 1e-2, "schedule": "constant", "warmup_steps": 0},
            "training": {"global_batch": 8},
            "mesh": dict(zip(("data", "fsdp", "tensor"), mesh, strict=True)),
        },
        num_devices=int(np.prod(mesh)),
    )


def test_lora_trains_only_the_adapters_and_the_loss_falls():
    config = lora_config()
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    model = tiny_model(ModelConfig.from_hf(TINY), lora=lora_spec(config))
    graphdef, adapters, base = model_parts(model)
    adapters = jax.device_put(adapters, model_shardings(adapters, mesh))
    base = jax.device_put(base, model_shardings(base, mesh))
    assert {path[-1] for path in param_leaves(adapters)} == {"lora_a", "lora_b"}
    base_before = {path: np.asarray(leaf) for path, leaf in param_leaves(base).items()}
    assert ("layers", "attn", "q_proj", "kernel") in base_before
    step = TrainStep.build(config, mesh, graphdef, base, adapters, total_steps=60)
    opt_state = step.init_optimizer(adapters)
    # AdamW's moments exist for the adapters alone: every array of the state is one adapter's shape.
    adapter_shapes = {leaf.shape for leaf in jax.tree.leaves(adapters)}
    assert {leaf.shape for leaf in jax.tree.leaves(opt_state) if leaf.ndim} <= adapter_shapes

    batch = global_batch(cft_batch(8, 32, TINY["vocab_size"]), step.batch_sharding)
    losses = []
    for _ in range(60):
        adapters, opt_state, metrics = step(adapters, opt_state, batch)
        losses.append(float(metrics["loss"]))
    # From ln(96) = 4.56, the random model's guess, to ~3.8 (random tokens, rank-4 adapters on a
    # near-zero base); a frozen model would stay at its first loss.
    assert losses[-1] < 0.9 * losses[0], losses
    for path, leaf in param_leaves(step.rest).items():
        np.testing.assert_array_equal(np.asarray(leaf), base_before[path], err_msg=".".join(path))


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 CPU devices")
def test_adapters_are_laid_out_like_their_kernels_with_the_rank_whole():
    mesh = make_mesh(2, 2, 2, devices=jax.devices()[:8])
    _, adapters, base = abstract_params(lora_config((2, 2, 2)), ModelConfig.from_hf(TINY), mesh)
    specs = {path: leaf.sharding.spec for path, leaf in param_leaves(adapters).items()}
    assert specs[("layers", "attn", "q_proj", "lora_a")] == PartitionSpec(None, "fsdp", None)
    assert specs[("layers", "attn", "q_proj", "lora_b")] == PartitionSpec(None, None, "tensor", None)
    assert specs[("layers", "attn", "o_proj", "lora_a")] == PartitionSpec(None, "tensor", None, None)
    assert specs[("layers", "mlp", "down_proj", "lora_b")] == PartitionSpec(None, None, "fsdp")
    assert param_leaves(base)[("layers", "attn", "q_proj", "kernel")].sharding.spec == PartitionSpec(
        None, "fsdp", "tensor", None
    )


def test_the_memory_plan_of_a_lora_run_has_no_adamw_state_for_the_base():
    shape = {"init_config": SHAPES["qwen2.5-14b"], "param_dtype": "bfloat16"}
    full = build_config({"model": shape, "training": {"global_batch": 32}})
    lora = build_config({"model": shape, "training": {"global_batch": 32}, "lora": {"rank": 16}})
    model = ModelConfig.from_hf(SHAPES["qwen2.5-14b"])
    full_plan, lora_plan = memory_plan(full, model, 8), memory_plan(lora, model, 8)
    # 14.8 B bf16 parameters over 8 chips stay; AdamW's state shrinks to the ~69 M fp32 adapters'.
    assert lora_plan["parameters"] == pytest.approx(full_plan["parameters"], rel=0.01)
    assert lora_plan["optimizer"] < full_plan["optimizer"] / 100
    assert lora_plan["gradients"] < full_plan["gradients"] / 20
    assert lora_plan["total"] < full_plan["total"] - 5 * 2**30


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lora.rank=-1", "lora.rank=-1: must be > 0 to train LoRA adapters, or 0 for full fine-tuning"),
        ("lora.targets=('q_proj','qkv')", "lora.targets: 'qkv' matches none of ['q_proj', 'k_proj'"),
        ("lora.dropout=1.0", "lora.dropout=1.0: must be in [0, 1)"),
        ("export.lora=peft", "export.lora='peft': must be one of ['merged', 'adapter']"),
    ],
)
def test_a_bad_lora_value_fails_at_load_naming_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        build_config({"model": {"init_config": TINY}, "lora": {"rank": 4}}, [f"--config.{override}"])
    assert message in str(error.value)


def test_lora_settings_without_a_rank_are_refused():
    with pytest.raises(ConfigError, match=r"lora.alpha set with lora.rank=0 \(LoRA off\): set lora.rank > 0"):
        build_config({"model": {"init_config": TINY}, "lora": {"alpha": 32.0}})
