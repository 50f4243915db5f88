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
Mesh: a v5p-32 slice (16 chips, 95 GiB each), FSDP over all chips, 16 micro-batches of 32 rows (2 x
2048 tokens per chip each), splash attention, the projections' outputs saved for the backward
(`save_dots_no_batch`) instead of recomputed: at 2 rows the saved activations fit, and the TPU
compiler's cost model puts the step at 8.70 s against 9.12 s for full remat at 8 rows x 4 (est. MFU
71.6% vs 68.4%; docs/performance.md). Compiled for it from any machine with
`python -m cft_jax.train --config configs/qwen7b_v5p.py --shape qwen2.5-math-7b --aot v5p-32`:
23.62 GiB per chip (docs/performance.md has the collectives).
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
            "remat": "save_dots_no_batch",  # fits at 2 rows per micro-batch; full remat is 5% slower
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
            "accumulation_steps": 16,  # 2 rows x 2048 per chip per micro-batch on 16 chips
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
