"""Bench shape: SmolLM2-135M (random weights), fp32 on CPU, 4 x 512 tokens, AdamW.

The architecture is SmolLM2-135M-Instruct's config.json (HuggingFaceTB; a Llama: 30 layers, hidden
576, 9 heads of 64, 3 KV heads, vocabulary 49152, tied embeddings). Used by
`python -m cft_jax.bench train --config configs/bench_smollm2_135m.py`; not a training recipe.
"""

from cft_jax.models.shapes import SHAPES


def get_config() -> dict:
    return {
        "model": {
            "init_config": dict(SHAPES["smollm2-135m"]),
            "param_dtype": "float32",
            "compute_dtype": "float32",
            "remat": "none",
        },
        "data": {"seq_len": 512, "train_paths": ("unused-by-the-bench",), "epochs": 1},
        "optimizer": {"lr": 1e-5, "weight_decay": 0.0, "clip_norm": 1.0},
        "training": {"global_batch": 4, "accumulation_steps": 1, "vocab_chunk": 16384},
        "mesh": {"data": 1, "fsdp": -1, "tensor": 1},
    }
