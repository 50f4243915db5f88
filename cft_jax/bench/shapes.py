"""Named model shapes for `python -m cft_jax.bench train --shape NAME --seq N`, and their bench configs.

Each shape is the `config.json` architecture of a public checkpoint (only what the decoder reads);
the bench trains it from random weights, which do not change throughput. `shape_config` turns a
shape, a sequence length and a batch into the nested dict `cft_jax.config.build_config` takes, so a
shape bench runs the same validated `TrainConfig` as `--config FILE` does.
"""

from __future__ import annotations

from typing import Any

_QWEN25 = {
    "model_type": "qwen2",
    "vocab_size": 151936,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 32768,
}

SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": {
        **_QWEN25,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "tie_word_embeddings": True,
    },
    "qwen2.5-1.5b": {
        **_QWEN25,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "head_dim": 128,
        "tie_word_embeddings": True,
    },
    "qwen2.5-7b": {
        **_QWEN25,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "head_dim": 128,
        "tie_word_embeddings": False,
    },
    # SmolLM2-135M(-Instruct), a Llama: small enough to bench on a CPU.
    "smollm2-135m": {
        "model_type": "llama",
        "vocab_size": 49152,
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0,
        "tie_word_embeddings": True,
        "max_position_embeddings": 8192,
    },
}

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
