"""Compile time of the decoder forward and gradient at 2 and 28 layers (flat in depth: layers are scanned).

Usage: python benchmarks/bench_compile.py [--layers 2 28] [--remat full]
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

from cft_jax.models import Decoder, ModelConfig


def tiny_config(num_layers: int) -> ModelConfig:
    return ModelConfig(
        model_type="qwen2",
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_layers=num_layers,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        attention_bias=True,
    )


def compile_seconds(num_layers: int, remat: str) -> tuple[float, float]:
    """(forward, value_and_grad) seconds to lower and compile, for a [4, 128] batch."""
    graphdef, state = nnx.split(Decoder(tiny_config(num_layers), remat=remat, rngs=nnx.Rngs(0)))
    input_ids = jnp.zeros((4, 128), jnp.int32)

    def loss(state: nnx.State, input_ids: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, state)(input_ids).mean()

    timings = []
    for fn in (loss, jax.value_and_grad(loss)):
        start = time.perf_counter()
        jax.jit(fn).lower(state, input_ids).compile()
        timings.append(time.perf_counter() - start)
    return timings[0], timings[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 28])
    parser.add_argument("--remat", default="full")
    args = parser.parse_args()
    print(f"command: python {' '.join(sys.argv)}  (jax {jax.__version__}, {jax.devices()[0].platform})")
    compile_seconds(1, args.remat)  # warm up the compiler itself so the first row is not penalised
    for num_layers in args.layers:
        forward, grad = compile_seconds(num_layers, args.remat)
        print(
            f"layers={num_layers:3d} remat={args.remat}: forward {forward:.2f} s, value_and_grad {grad:.2f} s"
        )


if __name__ == "__main__":
    main()
