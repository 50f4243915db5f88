"""The demo's training config: CFT of the real SmolLM2-135M-Instruct on RealCritic critiques, on CPU.

`python -m cft_jax.demo` (scripts/demo.sh) runs it as `python -m cft_jax.train --config
configs/demo_smollm2.py`; `python -m cft_jax.train` with no `--config` runs it too. It is sized for
two CPU cores and minutes, not for a result: the target is each critique's judgement section (see
`cft_jax.demo.splits`), examples packed into 512-token rows (longer examples, about 60% of them, are
dropped and counted, so every trained prompt holds the whole solution), 16 AdamW updates of 4 rows,
the validation loss every 4 updates. On 2 CPU cores the prompts (question and solution) are most of
the compute: an update of 4 x 512 tokens takes 15-30 s. The model and the data splits come from
`cft_jax.demo.inputs`, which converts SmolLM2 and writes the splits the first time (so this config
also runs on its own) and reuses them after.
"""

from cft_jax.demo.inputs import demo_inputs


def get_config() -> dict:
    inputs = demo_inputs()
    return {
        "model": {
            "hf_path": str(inputs.model_dir),
            "param_dtype": "float32",
            "compute_dtype": "float32",
            "remat": "none",
        },
        "data": {
            "train_paths": (str(inputs.splits["train"]),),
            "eval_paths": (str(inputs.splits["validation"]),),
            "format": "cft",
            "template": "chatml",
            # SmolLM2's own tokenizer (it has the ChatML tokens): the model's vocabulary.
            "tokenizer": str(inputs.model_dir),
            "seq_len": 512,
            "length_policy": "drop",
            "packing": True,
            "epochs": None,
            "seed": 0,
        },
        "optimizer": {"lr": 1e-4, "schedule": "cosine", "warmup_ratio": 0.1, "weight_decay": 0.0},
        "training": {
            "workdir": "runs/demo_smollm2",
            "global_batch": 4,
            "max_steps": 16,
            "seed": 0,
            "vocab_chunk": 16384,
        },
        "mesh": {"data": 1, "fsdp": -1, "tensor": 1},
        "checkpoint": {"every_steps": 8, "keep": 2, "async_save": True, "resume": True},
        "evaluation": {"every_steps": 4, "num_batches": 1},
        "export": {"at_end": True, "dtype": "float32"},
        "logging": {"every_steps": 1, "tensorboard": True, "jsonl": True, "progress_bar": True},
    }
