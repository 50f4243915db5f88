"""CFT on DeepSeek-Math-7B-base with WebInstruct-CFT-50K: the paper's recipe on a Llama-shaped model.

Sources (docs/recipe.md sections 4 and 6; Wang, Yue, Chen 2025): the same recipe as
configs/qwen7b_v5p.py (batch 512, lr 5e-6, cosine, warm-up 0.1, 1 epoch, 2048 tokens truncated
proportionally, AdamW beta2 0.999, no weight decay, clip 1.0) and, as the paper did for every base
model, the ChatML template with "You are a helpful assistant.".

DeepSeek's tokenizer has no ChatML tokens. The paper's LLaMA-Factory runs used its `qwen` template,
which makes `<|im_end|>` the eos token and so adds it to DeepSeek's tokenizer as a new special token
(id 100015, a row the 102,400-row embedding already has: nothing is resized), while `<|im_start|>`
stays plain text (`<`, `|`, `im`, `_`, `start`, `|>`). `data.chatml_add_im_end` does the same
(cft_jax/assets/tokenizers.py, `with_im_end_eos`); the exported tokenizer must carry that token as eos.
Reported: average of 6 math benchmarks 20.3 (base) -> 27.5 (CFT).
Planned for a v5p-32 like configs/qwen7b_v5p.py: `--shape deepseek-math-7b --aot v5p-32` compiles it to
19.93 GiB per chip (docs/performance.md).
"""

from pathlib import Path

from cft_jax.config import config_module

_base = config_module(Path(__file__).with_name("qwen7b_v5p.py"))


BASE_SHAPE = "deepseek-math-7b"  # the base model's public architecture (cft_jax.models.shapes)
TOPOLOGY = "v5p-32"  # the target it is planned for (`--aot`)


def get_config() -> dict:
    config = _base.get_config()
    config["model"]["hf_path"] = "hf://deepseek-ai/deepseek-math-7b-base"
    config["data"]["tokenizer"] = "deepseek_llm"
    config["data"]["chatml_add_im_end"] = True
    config["training"]["workdir"] = "runs/deepseek_math_7b_cft"
    return config
