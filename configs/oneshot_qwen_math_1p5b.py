"""One-shot CFT on Qwen2.5-Math-1.5B: the 7B one-shot recipe (oneshot_qwen_math_7b.py) at 1.5B.

Sources: as configs/oneshot_qwen_math_7b.py (docs/recipe.md section 4; One-Shot CFT, 2025, and the
TIGER-AI-Lab/One-Shot-CFT script): batch 512, lr 5e-6, cosine, warm-up 0.05, beta2 0.95, weight
decay 0.05, 4096 tokens with over-length dropped, 50 epochs, an HF export every 10 updates.
Reported: average of 6 math benchmarks 21.1 -> 32.8.
Planned for a v5p-8 (4 chips, 32 x 4096 tokens per chip per micro-batch): `--shape qwen2.5-math-1.5b
--aot v5p-8` compiles it to 42.85 GiB per chip (docs/performance.md).
"""

from pathlib import Path

from cft_jax.config import config_module

_base = config_module(Path(__file__).with_name("oneshot_qwen_math_7b.py"))


BASE_SHAPE = "qwen2.5-math-1.5b"  # the base model's public architecture (cft_jax.models.shapes)
TOPOLOGY = "v5p-8"  # the target it is planned for (`--aot`)


def get_config() -> dict:
    config = _base.get_config()
    config["model"]["hf_path"] = "hf://Qwen/Qwen2.5-Math-1.5B"
    config["training"].update(workdir="runs/oneshot_qwen_math_1p5b", accumulation_steps=4)
    return config
