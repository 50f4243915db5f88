"""Data pipeline throughput and packing efficiency on the shipped real data, real Qwen2.5 tokenizer.

    python benchmarks/bench_data.py

Tokenization runs on one core (the Rust tokenizer's thread pool is pinned to one thread before it
starts), so the tokens/s figure is per core. Packing is timed through the Grain pipeline itself
(no worker processes). Times are CPU seconds of this process, so a busy machine does not skew them.
"""

from __future__ import annotations

import os

os.environ["RAYON_RS_NUM_CPUS"] = "1"  # must precede the tokenizers import

import json  # noqa: E402
import time  # noqa: E402

from cft_jax.assets.tokenizers import load_tokenizer  # noqa: E402
from cft_jax.config import DataConfig  # noqa: E402
from cft_jax.data import asset_path  # noqa: E402
from cft_jax.data.pipeline import encode_split, make_iterator  # noqa: E402


def _tokenize(cfg: DataConfig) -> dict:
    # CPU time of this process (one tokenizer thread): per-core throughput, even on a shared machine.
    start, wall = time.process_time(), time.perf_counter()
    encoded, report = encode_split(cfg, cfg.train_paths)
    cpu, wall = time.process_time() - start, time.perf_counter() - wall
    tokens = report.length.tokens_before
    return {
        "examples": len(encoded),
        "tokens": tokens,
        "cpu_s": cpu,
        "wall_s": wall,
        "tokens_per_cpu_s": tokens / cpu,
    }


def _pack(cfg: DataConfig) -> dict:
    it = make_iterator(cfg, per_host_batch=1)
    start = time.process_time()
    rows = real = 0
    for batch in it:
        rows += 1
        real += int((batch["segment_ids"] > 0).sum())
    seconds = time.process_time() - start
    return {
        "seq_len": cfg.seq_len,
        "rows": rows,
        "efficiency": real / (rows * cfg.seq_len),
        "reported_efficiency": it.report.packing_efficiency,
        "unpacked_efficiency": it.report.length.tokens_after / (it.report.examples * cfg.seq_len),
        "truncated": it.report.length.truncated,
        "pack_tokens_per_cpu_s": real / seconds,
    }


def main() -> None:
    load_tokenizer("qwen2.5")  # loading is not tokenizing
    critiques = DataConfig(train_paths=(str(asset_path("realcritic_critiques")),), seq_len=1 << 20)
    solutions = DataConfig(
        train_paths=(str(asset_path("realcritic_solutions")), str(asset_path("gsm8k_model_solutions"))),
        objective="sft",
        seq_len=1 << 20,
    )
    results = {
        "tokenize_cft_realcritic": _tokenize(critiques),
        "tokenize_sft_solutions": _tokenize(solutions),
    }
    for seq_len in (2048, 4096):
        cfg = DataConfig(train_paths=critiques.train_paths, seq_len=seq_len, packing=True, shuffle=True)
        results[f"pack_cft_realcritic_{seq_len}"] = _pack(cfg)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
