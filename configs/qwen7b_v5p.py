"""CFT on Qwen2.5-Math-7B with WebInstruct-CFT-50K, the CFT paper's main recipe, on a TPU v5p-32.

Sources (docs/recipe.md section 4, from Wang, Yue, Chen 2025, "Critique Fine-Tuning", and the
TIGER-AI-Lab/CritiqueFineTuning training scripts):
- full fine-tune in bf16; global batch 512 sequences; lr 5e-6, cosine, warm-up ratio 0.1; 1 epoch
  (about 98 updates on 50K); AdamW beta2 0.999, weight decay 0, clip 1.0;
- 2048 tokens, prompt and target truncated proportionally, no packing;
- ChatML with the system prompt "You are a helpful assistant." for every base model;
- checkpoints every 2 steps, the best chosen on MATH-500: here the trainer itself samples MATH-500
  every 2nd update with the weights in memory (greedy, the papers' Qwen2.5-Math chain-of-thought
  prompt, 2048 new tokens, all 500 problems in one sampler call: under FSDP each decode step gathers
  the weights once, whatever the batch), grades it in the background and keeps the best step's
  checkpoint and WORKDIR/hf/best; every validated update is therefore a resumable checkpoint (2
  newest + the best stay, ~91 GB each with fp32 AdamW). Every 2nd update is also exported to HF
  (each export is ~15 GB in bf16) for `python -m cft_jax.eval select` with vLLM afterwards.
Mesh: a v5p-32 slice (16 chips, 95 GiB each), FSDP over all chips, 4 micro-batches of 128 rows (8 x
2048 tokens per chip each), splash attention. Compiled for it from any machine with
`python -m cft_jax.train --config configs/qwen7b_v5p.py --shape qwen2.5-math-7b --aot v5p-32`:
21.64 GiB per chip, 290 GiB of collectives per chip per step (docs/performance.md).
Put the HF checkpoint and the data where the paths below say, or override them.
"""

BASE_SHAPE = "qwen2.5-math-7b"  # the base model's public architecture (cft_jax.models.shapes)
TOPOLOGY = "v5p-32"  # the target it is planned for (`--aot`)


def get_config() -> dict:
    return {
        "model": {
            "hf_path": "hf://Qwen/Qwen2.5-Math-7B",  # downloaded once per host (cft_jax.hub), or a directory
            "param_dtype": "float32",  # fp32 master weights; bf16 compute
            "compute_dtype": "bfloat16",
            "remat": "full",
            "attention_impl": "auto",  # splash on TPU, Pallas flash on GPU, the XLA reference elsewhere
        },
        "data": {
            "train_paths": ("data/WebInstruct-CFT-50K.json",),
            "format": "alpaca",
            "objective": "cft",
            "template": "chatml",
            "system_prompt": "You are a helpful assistant.",
            "tokenizer": "qwen2.5",
            "seq_len": 2048,
            "length_policy": "truncate",
            "packing": False,
            "epochs": 1,
            "num_workers": 4,
        },
        "optimizer": {
            "lr": 5e-6,
            "b1": 0.9,
            "b2": 0.999,
            "weight_decay": 0.0,
            "clip_norm": 1.0,
            "schedule": "cosine",
            "warmup_ratio": 0.1,
        },
        "training": {
            "workdir": "runs/qwen7b_cft",
            "global_batch": 512,
            "accumulation_steps": 4,
            "seed": 42,
            "vocab_chunk": 16384,
        },
        "mesh": {"data": 1, "fsdp": -1, "tensor": 1},
        "checkpoint": {"every_steps": 10, "keep": 2},
        "export": {"every_steps": 2, "at_end": True, "dtype": "bfloat16"},
        "evaluation": {
            "select_benchmark": "math-500",  # the paper selects the best checkpoint on MATH-500
            "generate_every_steps": 2,  # ... every 2 steps: validation accuracy inside training
            "generate_batch_size": 512,  # all 500 problems at once (a multiple of the 16 chips)
        },
        "logging": {"every_steps": 1},
    }
