"""Forward + backward time of each attention kernel on packed rows, on the current backend.

Shapes default to Qwen2.5-1.5B's attention (12 heads, 2 kv heads, head_dim 128) on one 4096-token packed
row of 8 segments, bf16. A kernel that cannot run here (wrong backend, shapes) is reported, not timed:
off its backend a fused kernel would only run in Pallas interpret mode, which measures nothing useful.
TFLOP/s counts causal attention as MaxText does (half of 4 * seq^2 * heads * head_dim forward, 3x that
for forward + backward), ignoring that packing masks more than causality does.

Usage: python benchmarks/bench_attention.py [--batch 1] [--seq 4096] [--heads 12] [--kv-heads 2]
                                            [--head-dim 128] [--segments 8] [--iters 20]
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from cft_jax.models.attention import ATTENTION_IMPLS, AttentionFn
from cft_jax.models.attention_kernels import FUSED_KERNELS, kernel_unfit_reason


def time_grads(
    attention: AttentionFn, q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, iters: int
) -> tuple[float, float]:
    """(first call, mean later call) seconds of the q/k/v gradients of sum(attention(...))."""

    def loss(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        return jnp.sum(attention(q, k, v, segment_ids).astype(jnp.float32))

    step = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    start = time.perf_counter()
    jax.block_until_ready(step(q, k, v))
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(iters):
        grads = step(q, k, v)
    jax.block_until_ready(grads)
    return first, (time.perf_counter() - start) / iters


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args(argv)

    key_q, key_k, key_v = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(key_q, (args.batch, args.seq, args.heads, args.head_dim), jnp.bfloat16)
    kv_shape = (args.batch, args.seq, args.kv_heads, args.head_dim)
    k, v = jax.random.normal(key_k, kv_shape, jnp.bfloat16), jax.random.normal(key_v, kv_shape, jnp.bfloat16)
    # Equal segments filling each row: segment ids 1..segments.
    row = np.arange(args.seq) * args.segments // args.seq + 1
    segment_ids = jnp.asarray(np.tile(row, (args.batch, 1)), jnp.int32)
    flops = 3 * 4 * args.batch * args.seq**2 * args.heads * args.head_dim / 2
    backend = jax.default_backend()
    print(f"backend={backend} q={q.shape} k={k.shape} bf16 segments={args.segments}")

    for impl in ["xla", *sorted(FUSED_KERNELS)]:
        if impl != "xla":
            reason = kernel_unfit_reason(impl, q, k)
            if FUSED_KERNELS[impl].backend != backend:
                reason = f"targets {FUSED_KERNELS[impl].backend}, the backend is {backend}"
            if reason is not None:
                print(f"{impl:>10}: skipped ({reason})")
                continue
        first, seconds = time_grads(ATTENTION_IMPLS[impl], q, k, v, segment_ids, args.iters)
        print(
            f"{impl:>10}: fwd+bwd {seconds * 1e3:8.2f} ms  {flops / seconds / 1e12:7.1f} TFLOP/s  "
            f"(first call {first:.1f} s)"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
