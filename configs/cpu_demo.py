"""CPU demo: a tiny random-init Qwen2-shaped decoder learns RealCritic critiques for a few minutes.

Not a recipe: it exercises the whole trainer (real data, the CFT ChatML template and Qwen2.5
tokenizer, chunked loss, AdamW + cosine, checkpoints, HF export) at a size two CPU cores train in
minutes. The data is the RealCritic-derived set shipped in `cft_jax/data/assets/` (MIT, see
NOTICE.md there): 532 o1-mini critiques of MATH solutions.
"""

from cft_jax.data import asset_path


def get_config() -> dict:
    return {
        "model": {
            "init_config": {
                "model_type": "qwen2",
                "vocab_size": 151936,  # the Qwen2.5 tokenizer's embedding size
                "hidden_size": 64,
                "intermediate_size": 256,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "head_dim": 16,
                "tie_word_embeddings": True,
                "max_position_embeddings": 4096,
                "eos_token_id": 151645,
            },
            "param_dtype": "float32",
            "compute_dtype": "float32",
            "remat": "none",
        },
        "data": {
            "train_paths": (str(asset_path("realcritic_critiques")),),
            "format": "cft",
            "template": "chatml",
            "tokenizer": "qwen2.5",
            "seq_len": 256,
            "length_policy": "truncate",
            "packing": False,
            "epochs": 1,
        },
        "optimizer": {"lr": 3e-3, "schedule": "cosine", "warmup_ratio": 0.1, "weight_decay": 0.0},
        "training": {
            "workdir": "runs/cpu_demo",
            "global_batch": 8,
            "max_steps": 40,
            "seed": 0,
            "vocab_chunk": 32768,
        },
        "mesh": {"data": 1, "fsdp": -1, "tensor": 1},
        "checkpoint": {"every_steps": 20, "keep": 2},
        "export": {"at_end": True, "dtype": "float32"},
        "logging": {"tensorboard": True},
    }
