"""CFT on DeepSeek-Math-7B-base with WebInstruct-CFT-50K: the paper's recipe on a Llama-shaped model.

Sources (docs/recipe.md sections 4 and 6; Wang, Yue, Chen 2025): the same recipe as
configs/qwen7b_v5p.py (batch 512, lr 5e-6, cosine, warm-up 0.1, 1 epoch, 2048 tokens truncated
proportionally, AdamW beta2 0.999, no weight decay, clip 1.0) and, as the paper did for every base
model, the ChatML template with "You are a helpful assistant." (DeepSeek's tokenizer has no ChatML
special tokens: the markers are plain text, exactly as in the paper's LLaMA-Factory runs).
Reported: average of 6 math benchmarks 20.3 (base) -> 27.5 (CFT).
"""

from pathlib import Path

from cft_jax.config import config_module

_base = config_module(Path(__file__).with_name("qwen7b_v5p.py"))


def get_config() -> dict:
    config = _base.get_config()
    config["model"]["hf_path"] = "checkpoints/deepseek-math-7b-base"
    config["data"]["tokenizer"] = "deepseek_llm"
    config["training"]["workdir"] = "runs/deepseek_math_7b_cft"
    return config
