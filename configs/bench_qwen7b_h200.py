"""Bench shape: Qwen2.5-7B (random weights), a full fine-tune on one H200, 2 x 4096 packed tokens.

The architecture is Qwen2.5-7B's config.json (28 layers, hidden 3584, 28 heads of 128, 4 KV heads,
vocabulary 152064, untied embeddings, rope_theta 1e6). What makes it fit 141 GB: fp32 master weights
and gradients (28.4 GiB each), AdamW's first moment in bf16 (14.2 GiB instead of 28.4) next to the
fp32 second moment, full remat, and a fused attention kernel for packed rows (`auto`: no
[heads, seq, seq] probabilities). `--dry_run` estimates 103.5 GiB per device (docs/performance.md).
JAX must be allowed more than its default 75% of the GPU: run with XLA_PYTHON_CLIENT_MEM_FRACTION=0.95.
`python -m cft_jax.bench train --config configs/bench_qwen7b_h200.py`; not a training recipe.
"""

from cft_jax.models.shapes import SHAPES

TOPOLOGY = "h200x1"  # the target it is planned for (`--aot`)


def get_config() -> dict:
    return {
        "model": {
            "init_config": dict(SHAPES["qwen2.5-7b"]),
            "param_dtype": "float32",
            "compute_dtype": "bfloat16",
            "remat": "full",
            "attention_impl": "auto",
        },
        "data": {"seq_len": 4096, "train_paths": ("unused-by-the-bench",), "epochs": 1},
        "optimizer": {"lr": 1e-5, "weight_decay": 0.0, "clip_norm": 1.0, "mu_dtype": "bfloat16"},
        "training": {"global_batch": 2, "accumulation_steps": 1, "vocab_chunk": 16384},
        "mesh": {"data": 1, "fsdp": -1, "tensor": 1},
    }
