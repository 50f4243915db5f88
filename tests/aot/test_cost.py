"""The whole-step cost rebuilt from unroll-2 compiles equals the fully unrolled compile's.

A tiny decoder with 3 layers, 3 full vocabulary chunks and 3 micro-batches (odd trip counts, so the
unroll-by-2 remainder copies are exercised) compiled for a v5p-8: the compiler's cost model counts a
loop body once, `whole_step_cost` rebuilds the step from the differences, and the step compiled with
every loop fully unrolled is the reference.
"""

from __future__ import annotations

import pytest

from cft_jax.aot.compile import allow_shared_libtpu, compile_for
from cft_jax.aot.cost import NO_WINDOWED_EINSUM, whole_step_cost
from cft_jax.aot.targets import resolve_target
from cft_jax.config import build_config
from cft_jax.models.config import ModelConfig
from cft_jax.models.loops import Unroll
from tests.aot.conftest import TINY

THREE_LAYERS = {**TINY, "num_hidden_layers": 3}


@pytest.mark.slow
def test_rebuilt_whole_step_flops_equal_the_fully_unrolled_compile():
    allow_shared_libtpu()
    config = build_config(
        {
            "model": {
                "init_config": THREE_LAYERS,
                "compute_dtype": "bfloat16",
                "remat": "full",
                "attention_impl": "xla",
            },
            "data": {"seq_len": 256},
            "training": {"global_batch": 12, "accumulation_steps": 3, "vocab_chunk": 300},
        },
        num_devices=4,
    )
    model, target = ModelConfig.from_hf(THREE_LAYERS), resolve_target("v5p-8")
    cost = whole_step_cost(config, model, target)
    unrolled = compile_for(
        config,
        model,
        target,
        unroll=Unroll(layers=3, vocab_chunks=3, micro_batches=3),
        compiler_options=NO_WINDOWED_EINSUM,
    )
    assert cost.whole["flops"] == pytest.approx(unrolled.cost["flops"], rel=0.02)
    # Full remat recomputes the forward: more flops than the model's own count, and less than twice.
    assert cost.model_flops < cost.whole["flops"] < 2 * cost.model_flops
