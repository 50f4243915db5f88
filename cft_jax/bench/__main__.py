"""`python -m cft_jax.bench train --config FILE [--config.KEY=VALUE ...] [--steps N] [--no_torch]`.

Prints tokens/s, MFU and peak memory of one training step of the config's model and micro-batch,
ours and transformers + torch side by side, and the ratio. `--json PATH` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax

from cft_jax.bench.train_bench import bench_batch, bench_jax, bench_torch, model_config_of
from cft_jax.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cft_jax.bench", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["train"])
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--no_torch", action="store_true", help="skip the transformers + torch side")
    parser.add_argument("--json", default="", help="also write the results here")
    flags, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        config = load_config(flags.config, overrides, num_devices=jax.device_count())
    except ConfigError as error:
        sys.exit(f"error: {error}")
    rows = config.training.global_batch // config.training.accumulation_steps
    model_config = model_config_of(config)
    batch = bench_batch(rows, config.data.seq_len, model_config.vocab_size)
    print(
        f"model: {model_config.model_type} {model_config.num_params() / 1e6:.1f}M parameters; batch {rows} x "
        f"{config.data.seq_len}; {config.model.param_dtype} params, {config.model.compute_dtype} compute, "
        f"remat {config.model.remat}",
        flush=True,
    )
    results = [bench_jax(config, batch, flags.steps, flags.warmup)]
    if not flags.no_torch:
        results.append(bench_torch(config, batch, flags.steps, flags.warmup))
    for r in results:
        print(
            f"{r['framework']:>48}: {r['tokens_per_s']:10.1f} tokens/s  step {r['step_time_s']:.3f} s  "
            f"MFU {100 * r['mfu']:.1f}%  peak {r['peak_memory_gib']:.2f} GiB  loss {r['loss']:.3f}"
        )
    if len(results) == 2:
        ratio = results[0]["tokens_per_s"] / results[1]["tokens_per_s"]
        print(f"ratio (ours / transformers + torch tokens/s): {ratio:.2f}")
    if flags.json:
        with open(flags.json, "w") as f:
            json.dump({"config": flags.config, "overrides": overrides, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
