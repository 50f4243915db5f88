"""`python -m cft_jax.bench train (--config FILE | --shape NAME [--seq N] [--batch ROWS]) [--config.K=V ...]`.

Prints, for one training step of the model on a batch of packed rows, ours and transformers + torch
side by side: tokens/s/device, MFU, peak device memory and compile time (ours: lower + compile;
torch: its first step), each side's attention path, and the ratio. `--shape` takes a named
architecture (`cft_jax.bench.shapes`) instead of a config file. `--json PATH` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Any

import jax

from cft_jax.bench.shapes import SHAPES, default_rows, shape_config
from cft_jax.bench.train_bench import bench_batch, bench_jax, bench_torch, model_config_of
from cft_jax.config import build_config, load_config
from cft_jax.errors import run_cli


def _row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['framework']:>44}: {r['error'].splitlines()[0]}"
    return (
        f"{r['framework']:>44}: {r['tokens_per_s_per_device']:10.1f} tokens/s/device  "
        f"step {r['step_time_s']:.3f} s  MFU {100 * r['mfu']:.1f}%  "
        f"peak {r['peak_memory_gib']:.2f} GiB ({r['peak_memory_source']})  "
        f"compile {r['compile_s']:.1f} s ({r['compile_what']})  loss {r['loss']:.3f}"
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m cft_jax.bench", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["train"])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="a trainer config file: its model, dtypes, remat and micro-batch")
    source.add_argument("--shape", choices=sorted(SHAPES), help="a named architecture, random weights")
    parser.add_argument("--seq", type=int, default=2048, help="with --shape: packed tokens per row")
    parser.add_argument("--batch", type=int, default=0, help="with --shape: rows; 0 = the shape's default")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    parser.add_argument("--no_torch", action="store_true", help="skip the transformers + torch side")
    parser.add_argument("--json", default="", help="also write the results here")
    flags, overrides = parser.parse_known_args(argv)
    print("command: python -m cft_jax.bench " + shlex.join(argv), flush=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Both frameworks share the GPU in this process: JAX must not grab 75% of it before torch runs.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if flags.shape:
        rows = flags.batch or default_rows(flags.shape, flags.seq, jax.device_count())
        values = shape_config(flags.shape, flags.seq, rows, backend=jax.default_backend())
        config = build_config(
            values, overrides, source=f"--shape {flags.shape}", num_devices=jax.device_count()
        )
    else:
        config = load_config(flags.config, overrides, num_devices=jax.device_count())
    rows = config.training.global_batch // config.training.accumulation_steps
    model_config = model_config_of(config)
    batch = bench_batch(rows, config.data.seq_len, model_config.vocab_size)
    segments = int(batch["segment_ids"].max(axis=1).sum())
    padding = int((batch["segment_ids"] == 0).sum())
    print(
        f"model: {model_config.model_type} {model_config.num_params() / 1e6:.1f}M parameters; batch {rows} x "
        f"{config.data.seq_len} packed ({segments} segments, {padding} padding tokens) on "
        f"{jax.device_count()} x {jax.devices()[0].device_kind}; {config.model.param_dtype} params, "
        f"{config.model.compute_dtype} compute, remat {config.model.remat}, "
        f"AdamW first moment {config.optimizer.mu_dtype} ({config.model.param_dtype} params)",
        flush=True,
    )
    # torch first: it hands its GPU memory back (empty_cache) before JAX allocates; the reverse cannot.
    results = [] if flags.no_torch else [bench_torch(config, batch, flags.steps, flags.warmup)]
    results.insert(0, bench_jax(config, batch, flags.steps, flags.warmup))
    for r in results:
        print(f"{r['framework']:>44}: attention {r['attention']}")
    for r in results:
        print(_row(r))
    if len(results) == 2 and "error" not in results[1]:
        ratio = results[0]["tokens_per_s_per_device"] / results[1]["tokens_per_s_per_device"]
        print(f"ratio (ours / transformers + torch tokens/s): {ratio:.2f}")
    if flags.json:
        with open(flags.json, "w") as f:
            json.dump({"command": argv, "config": config.to_dict(), "results": results}, f, indent=2)


if __name__ == "__main__":
    run_cli(main)
