"""Memory options of a 7B full fine-tune: bf16 AdamW first moment, remat "offload", and their estimate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest

from cft_jax.config import ConfigError, build_config
from cft_jax.models.config import ModelConfig
from cft_jax.models.shapes import SHAPES
from cft_jax.training.metrics import memory_estimate
from cft_jax.training.optimizer import learning_rate_schedule, make_optimizer
from tests.training.conftest import TINY

BASE = {"model": {"init_config": TINY}, "data": {"train_paths": ("x.jsonl",)}}


def test_new_keys_validate() -> None:
    config = build_config(BASE, ["optimizer.mu_dtype=bfloat16", "model.remat=offload"])
    assert config.optimizer.mu_dtype == "bfloat16" and config.model.remat == "offload"
    assert build_config(BASE).optimizer.mu_dtype == "param"
    with pytest.raises(ConfigError) as error:
        build_config(BASE, ["optimizer.mu_dtype=float16", "model.remat=offlaod"])
    assert "optimizer.mu_dtype='float16': must be one of ['param', 'float32', 'bfloat16']" in str(error.value)
    assert "model.remat='offlaod': must be one of" in str(error.value)


def test_bf16_first_moment_in_the_optimizer_state() -> None:
    params = {"layer": {"kernel": jnp.ones((4, 8)), "scale": jnp.ones((8,))}}
    tx = make_optimizer(
        learning_rate_schedule(1e-3, 10),
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=0.1,
        clip_norm=0.0,  # unclipped, so mu after one update is exactly (1 - b1) * g
        mu_dtype="bfloat16",
    )
    state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    _, state = jax.jit(tx.update)(grads, state, params)
    adam = next(
        s
        for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
        if isinstance(s, optax.ScaleByAdamState)
    )
    assert {leaf.dtype for leaf in jax.tree.leaves(adam.mu)} == {jnp.dtype(jnp.bfloat16)}
    # The second moment stays fp32: bf16 would round 0.999 * nu back to nu.
    assert {leaf.dtype for leaf in jax.tree.leaves(adam.nu)} == {jnp.dtype(jnp.float32)}
    assert float(adam.mu["layer"]["kernel"][0, 0]) == pytest.approx(0.05, rel=1e-2)


def test_estimate_follows_the_options() -> None:
    model = ModelConfig.from_hf(SHAPES["qwen2.5-7b"])
    n = model.num_params()
    common = dict(
        param_dtype="float32",
        compute_dtype="bfloat16",
        micro_batch_per_device=2,
        seq_len=4096,
        shards=1,
        tensor=1,
    )
    fp32 = memory_estimate(model, remat="full", **common)
    bf16_mu = memory_estimate(model, remat="full", mu_dtype="bfloat16", **common)
    assert fp32["optimizer"] - bf16_mu["optimizer"] == 2 * n
    assert fp32["total"] - bf16_mu["total"] == 2 * n
    offload = memory_estimate(model, remat="offload", mu_dtype="bfloat16", **common)
    layer_inputs = model.num_layers * 2 * 4096 * model.hidden_size * 2
    assert offload["offloaded_to_host"] == layer_inputs and bf16_mu["offloaded_to_host"] == 0
    assert bf16_mu["activations"] - offload["activations"] == layer_inputs
    # A fused kernel holds no [b, heads, s, s] fp32 scores and bf16 probabilities.
    fused = memory_estimate(model, remat="full", attention_impl="auto", **common)
    assert fp32["activations"] - fused["activations"] == 2 * model.num_heads * 4096 * 4096 * (4 + 2)
    # bf16 parameters: one micro-batch's gradients in bf16, no compute-dtype copy; accumulating adds
    # fp32 accumulators; fp32 parameters add the layers' bf16 copy the gradient is taken of.
    bf16_params = memory_estimate(model, **{**common, "param_dtype": "bfloat16"}, remat="full")
    accumulating = memory_estimate(
        model, **{**common, "param_dtype": "bfloat16"}, remat="full", accumulation_steps=4
    )
    assert bf16_params["gradients"] == 2 * n
    assert accumulating["gradients"] - bf16_params["gradients"] == 4 * n
    embeddings = 2 * model.vocab_size * model.hidden_size
    assert fp32["gradients"] == 2 * 2 * (n - embeddings) + 4 * embeddings
    # The plan of configs/bench_qwen7b_h200.py (full remat, bf16 first moment, a fused kernel, one
    # device), temporaries included, fits the H200's 141 GB.
    h200 = memory_estimate(model, remat="full", mu_dtype="bfloat16", attention_impl="auto", **common)
    assert h200["total"] < 141e9
