"""Named model shapes for `python -m cft_jax.bench train --shape NAME --seq N`, and their bench configs.

Each shape is the `config.json` architecture of a public checkpoint (only what the decoder reads);
the bench trains it from random weights, which do not change throughput. `shape_config` turns a
shape, a sequence length and a batch into the nested dict `cft_jax.config.build_config` takes, so a
shape bench runs the same validated `TrainConfig` as `--config FILE` does.
"""

from __future__ import annotations

from typing import Any

from cft_jax.models.shapes import SHAPES

# Packed tokens per device in the default batch: what fits with full remat and fp32 AdamW on an
# 80 GB GPU for the Qwen shapes (7B: on a 141 GB H200 with a bf16 first moment), a few seconds per
# step on a CPU for SmolLM2.
DEFAULT_TOKENS_PER_DEVICE = {
    "qwen2.5-0.5b": 32768,
    "qwen2.5-1.5b": 32768,
    "qwen2.5-7b": 8192,
    "smollm2-135m": 2048,
}


def default_rows(shape: str, seq_len: int, num_devices: int) -> int:
    """Rows of the default bench batch: the shape's tokens per device, at least one row per device."""
    return max(1, DEFAULT_TOKENS_PER_DEVICE[shape] // seq_len) * num_devices


def shape_config(shape: str, seq_len: int, rows: int, *, backend: str) -> dict[str, Any]:
    """The bench's config dict for `shape`: one update of `rows` x `seq_len` packed tokens.

    fp32 master weights with bf16 compute and full remat on GPU / TPU (the recipes' setting); fp32
    compute on CPU, where XLA and torch both emulate bf16 matmuls. The 7B shape keeps AdamW's first
    moment in bf16, which it needs to fit one H200 (docs/performance.md). `attention_impl="auto"`
    picks the backend's fused kernel for packed rows, or the XLA reference with a logged reason.
    """
    if shape not in SHAPES:
        raise ValueError(f"--shape {shape!r}: use one of {sorted(SHAPES)}")
    return {
        "model": {
            "init_config": dict(SHAPES[shape]),
            "param_dtype": "float32",
            "compute_dtype": "float32" if backend == "cpu" else "bfloat16",
            "remat": "full",
            "attention_impl": "auto",
        },
        "data": {"seq_len": seq_len, "train_paths": ("unused-by-the-bench",), "epochs": 1},
        "optimizer": {
            "lr": 1e-5,
            "weight_decay": 0.0,
            "clip_norm": 1.0,
            "mu_dtype": "bfloat16" if shape == "qwen2.5-7b" else "param",
        },
        "training": {"global_batch": rows, "accumulation_steps": 1, "vocab_chunk": 16384},
        "mesh": {"data": 1, "fsdp": -1, "tensor": 1},
    }
