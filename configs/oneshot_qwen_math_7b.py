"""One-shot CFT on Qwen2.5-Math-7B: ~600 critiques of one problem's solutions, 50 epochs.

Sources (docs/recipe.md section 4; "Unleashing the Reasoning Potential of Pre-trained LLMs by
Critique Fine-Tuning on One Problem", 2025, and the TIGER-AI-Lab/One-Shot-CFT ms-swift script):
- full fine-tune, bf16, gradient checkpointing; global batch 512; lr 5e-6, cosine, warm-up 0.05 (the
  released script; the paper says 0.1: override `optimizer.warmup_ratio`); AdamW beta2 0.95, weight
  decay 0.05; clip 1.0;
- sequences up to the model maximum (4096), over-length examples dropped, no packing;
- 50 epochs over ~600 examples: 2 updates per epoch (512 and 88 rows, HF Trainer keeps the partial
  batch), 100 in all; ms-swift "messages" records, no system message in
  the data; Qwen2.5-Math's ChatML with "Please reason step by step, and put your final answer
  within \\boxed{}.";
- a checkpoint every 10 updates, the best chosen on a 500-problem MATH validation split: here the
  trainer samples that split every 10th update with the weights in memory and keeps the best step's
  checkpoint and WORKDIR/hf/best (`evaluation.generate_every_steps`); every 10th update is also
  exported to HF for `python -m cft_jax.eval`.
Planned for a v5p-32 (16 chips, 4 x 4096 tokens per chip per micro-batch, 8 micro-batches):
`--shape qwen2.5-math-7b --aot v5p-32` compiles it to 21.00 GiB per chip (docs/performance.md).
"""

BASE_SHAPE = "qwen2.5-math-7b"  # the base model's public architecture (cft_jax.models.shapes)
TOPOLOGY = "v5p-32"  # the target it is planned for (`--aot`)


def get_config() -> dict:
    return {
        "model": {
            "hf_path": "hf://Qwen/Qwen2.5-Math-7B",  # downloaded once per host (cft_jax.hub), or a directory
            "param_dtype": "float32",
            "compute_dtype": "bfloat16",
            "remat": "full",
            "attention_impl": "auto",  # splash on TPU, Pallas flash on GPU, the XLA reference elsewhere
        },
        "data": {
            "train_paths": ("data/one_shot_cft.jsonl",),
            "format": "messages",
            "objective": "cft",
            "template": "qwen25_math",
            "tokenizer": "qwen2.5",
            "seq_len": 4096,
            "length_policy": "drop",
            "packing": False,
            "epochs": 50,
        },
        "optimizer": {
            "lr": 5e-6,
            "b1": 0.9,
            "b2": 0.95,
            "weight_decay": 0.05,
            "clip_norm": 1.0,
            "schedule": "cosine",
            "warmup_ratio": 0.05,
        },
        "training": {"workdir": "runs/oneshot_qwen_math_7b", "global_batch": 512, "accumulation_steps": 8},
        "mesh": {"data": 1, "fsdp": -1, "tensor": 1},
        "checkpoint": {"every_steps": 10, "keep": 2},
        "export": {"every_steps": 10, "at_end": True, "dtype": "bfloat16"},
        # Selection on a 500-problem MATH split disjoint from MATH-500 (the paper's validation set), every
        # 10 updates inside training, all 500 problems in one sampler call.
        "evaluation": {
            "select_benchmark": "oneshotcft_math-500-validation",
            "generate_every_steps": 10,
            "generate_batch_size": 512,
        },
    }
