"""The whole-step cost rebuilt from unroll-2 / unroll-4 compiles equals the fully unrolled compile's.

A tiny decoder with 5 layers, 5 full vocabulary chunks (and a remainder chunk) and 3 micro-batches
compiled for a v5p-8: the layer and chunk loops take the unroll 2-to-4 difference with a remainder
copy inlined after each loop, the 3 micro-batches the rolled-to-full one. The compiler's cost model
counts a loop body once, `whole_step_cost` rebuilds the step from the differences, and the step
compiled with every loop fully unrolled is the reference.
"""

from __future__ import annotations

import dataclasses

import pytest

from cft_jax.aot.compile import allow_shared_libtpu, compile_for
from cft_jax.aot.cost import (
    COSTS,
    HIGH_UNROLL,
    NO_WINDOWED_EINSUM,
    copies,
    low_unroll,
    rebuild,
    whole_step_cost,
)
from cft_jax.aot.targets import resolve_target
from cft_jax.config import build_config
from cft_jax.models.config import ModelConfig
from cft_jax.models.loops import Unroll
from tests.aot.conftest import TINY

FIVE_LAYERS = {**TINY, "num_hidden_layers": 5}
FIELDS = ("micro_batches", "layers", "loss_chunks")


@pytest.mark.slow
def test_rebuilt_whole_step_flops_equal_the_fully_unrolled_compile():
    allow_shared_libtpu()
    config = build_config(
        {
            "model": {
                "init_config": FIVE_LAYERS,
                "compute_dtype": "bfloat16",
                "remat": "full",
                "attention_impl": "xla",
            },
            "data": {"seq_len": 256},
            "training": {"global_batch": 12, "accumulation_steps": 3, "vocab_chunk": 180},
        },
        num_devices=4,
    )
    model, target = ModelConfig.from_hf(FIVE_LAYERS), resolve_target("v5p-8")
    cost = whole_step_cost(config, model, target)
    unrolled = compile_for(
        config,
        model,
        target,
        unroll=Unroll(layers=5, loss_chunks=5, micro_batches=3),
        compiler_options=NO_WINDOWED_EINSUM,
    )
    assert cost.whole["flops"] == pytest.approx(unrolled.cost["flops"], rel=0.02)
    # Full remat recomputes the forward: more flops than the model's own count, and less than twice.
    assert cost.model_flops < cost.whole["flops"] < 2 * cost.model_flops


def test_rebuild_ignores_what_unrolling_changes_around_the_loops():
    """A synthetic program whose cost is linear in its body copies, plus a constant that appears
    once any loop unrolls (what the scan's reshaped inputs do to the program around the loops): the
    rebuild recovers the rolled program's whole cost exactly, for trip counts that take either path."""
    outside, micro, layer, chunk, artifact = 7.0, 3.0, 11.0, 5.0, 40.0

    def program(unroll: Unroll, trips: Unroll) -> dict[str, float]:
        m, n_layers, n_chunks = (copies(getattr(unroll, f), getattr(trips, f)) for f in FIELDS)
        value = outside + m * (micro + n_layers * layer + n_chunks * chunk)
        value += artifact if unroll != Unroll() else 0.0
        return dict.fromkeys(COSTS, value)

    for trips in (Unroll(28, 9, 4), Unroll(30, 1, 1), Unroll(5, 3, 3), Unroll(2, 7, 6)):
        expected = outside + trips.micro_batches * (micro + trips.layers * layer + trips.loss_chunks * chunk)
        low = low_unroll(trips)
        high = {
            f: program(dataclasses.replace(low, **{f: HIGH_UNROLL}), trips)
            for f in FIELDS
            if getattr(trips, f) > 1
        }
        parts = rebuild(program(Unroll(), trips), program(low, trips), high, trips)
        assert parts["whole"]["flops"] == pytest.approx(expected), trips
        if trips.layers >= 4:
            assert parts["layer"]["flops"] == pytest.approx(layer), trips
