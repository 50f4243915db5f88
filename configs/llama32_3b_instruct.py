"""One-shot CFT on Llama-3.2-3B-Instruct, with Llama 3's own chat template.

Sources (docs/recipe.md section 4; One-Shot CFT, 2025, and the TIGER-AI-Lab/One-Shot-CFT script):
the one-shot recipe of configs/oneshot_qwen_math_7b.py (batch 512, lr 5e-6, cosine, warm-up 0.05,
beta2 0.95, weight decay 0.05, 4096 tokens with over-length dropped, 50 epochs, an HF export every
10 updates), but "Llama-3.2-3B-Instruct uses its own template": the tokenizer's chat template.
Reported: average of 6 math benchmarks 17.5 -> 21.7.
Planned for a v5p-16 (8 chips, 16 x 4096 tokens per chip per micro-batch): `--shape llama-3.2-3b
--aot v5p-16` compiles it to 38.51 GiB per chip (docs/performance.md).
"""

from pathlib import Path

from cft_jax.config import config_module

_base = config_module(Path(__file__).with_name("oneshot_qwen_math_7b.py"))


BASE_SHAPE = "llama-3.2-3b"  # the base model's public architecture (cft_jax.models.shapes)
TOPOLOGY = "v5p-16"  # the target it is planned for (`--aot`)


def get_config() -> dict:
    config = _base.get_config()
    config["model"]["hf_path"] = "hf://meta-llama/Llama-3.2-3B-Instruct"  # gated: HF_TOKEN
    # The shipped "llama3" tokenizer carries the Llama 3.1 / 3.2 Instruct chat template (system header
    # with the knowledge cut-off and a fixed date, <|eot_id|> closing each turn; the target trains on it).
    config["data"].update(template="tokenizer", tokenizer="llama3")
    config["evaluation"]["prompt"] = "chat-template"  # validation questions through the same template
    config["training"].update(workdir="runs/oneshot_llama32_3b", accumulation_steps=4)
    return config
