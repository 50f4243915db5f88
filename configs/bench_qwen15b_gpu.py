"""Bench shape: Qwen2.5-1.5B (random weights), fp32 master weights + bf16 compute, 8 x 4096 tokens.

The architecture is Qwen2.5-1.5B's config.json (28 layers, hidden 1536, 12 heads of 128, 2 KV heads,
vocabulary 151936, tied embeddings, rope_theta 1e6). For one GPU:
`python -m cft_jax.bench train --config configs/bench_qwen15b_gpu.py`; not a training recipe.
"""

from cft_jax.models.shapes import SHAPES

TOPOLOGY = "h100x1"  # the target it is planned for (`--aot`)


def get_config() -> dict:
    return {
        "model": {
            "init_config": dict(SHAPES["qwen2.5-1.5b"]),
            "param_dtype": "float32",
            "compute_dtype": "bfloat16",
            "remat": "full",
            "attention_impl": "auto",  # Pallas flash on GPU: no [heads, seq, seq] scores
        },
        "data": {"seq_len": 4096, "train_paths": ("unused-by-the-bench",), "epochs": 1},
        "optimizer": {"lr": 1e-5, "weight_decay": 0.0, "clip_norm": 1.0},
        "training": {"global_batch": 8, "accumulation_steps": 1, "vocab_chunk": 16384},
        "mesh": {"data": 1, "fsdp": -1, "tensor": 1},
    }
