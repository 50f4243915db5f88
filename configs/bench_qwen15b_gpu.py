"""Bench shape: Qwen2.5-1.5B (random weights), fp32 master weights + bf16 compute, 8 x 4096 tokens.

The architecture is Qwen2.5-1.5B's config.json (28 layers, hidden 1536, 12 heads of 128, 2 KV heads,
vocabulary 151936, tied embeddings, rope_theta 1e6). For one GPU:
`python -m cft_jax.bench train --config configs/bench_qwen15b_gpu.py`; not a training recipe.
"""


def get_config() -> dict:
    return {
        "model": {
            "init_config": {
                "model_type": "qwen2",
                "vocab_size": 151936,
                "hidden_size": 1536,
                "intermediate_size": 8960,
                "num_hidden_layers": 28,
                "num_attention_heads": 12,
                "num_key_value_heads": 2,
                "head_dim": 128,
                "rms_norm_eps": 1e-6,
                "rope_theta": 1000000.0,
                "tie_word_embeddings": True,
                "max_position_embeddings": 32768,
            },
            "param_dtype": "float32",
            "compute_dtype": "bfloat16",
            "remat": "full",
        },
        "data": {"seq_len": 4096, "train_paths": ("unused-by-the-bench",), "epochs": 1},
        "optimizer": {"lr": 1e-5, "weight_decay": 0.0, "clip_norm": 1.0},
        "training": {"global_batch": 8, "accumulation_steps": 1, "vocab_chunk": 16384},
        "mesh": {"data": 1, "fsdp": -1, "tensor": 1},
    }
