"""The decoder reproduces transformers' logits (torch, CPU, fp32, eager attention) for every family.

Each case builds a small randomly initialised transformers model from its own config class, saves it
with `save_pretrained`, then reads that directory back with `load_hf` (config through
`ModelConfig.from_hf`, weights through the HF name table).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import jax.numpy as jnp  # noqa: E402
import torch
import transformers

from cft_jax.models import load_hf  # noqa: E402
from tests.tolerances import assert_close_to_scale

# Two libraries compute the same fp32 logits with other matmul and softmax orders and fusions; each
# of the few layers reduces over <= 128 hidden units or keys, a few ulps each: 128 ulps of the
# logits' scale bounds it (seen: <= 8).
CROSS_LIBRARY_ULPS = 128

TINY = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 112, "num_hidden_layers": 2}

CASES = {
    "llama-mha": ("LlamaConfig", {"num_attention_heads": 4, "num_key_value_heads": 4}),
    "llama3-rope-gqa2": (
        "LlamaConfig",
        {
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        },
    ),
    "llama-linear-gqa4-tied": (
        "LlamaConfig",
        {
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "tie_word_embeddings": True,
            "rope_scaling": {"rope_type": "linear", "factor": 2.0},
        },
    ),
    "llama-dynamic-past-max-positions": (
        "LlamaConfig",
        {
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 8,
            "rope_scaling": {"rope_type": "dynamic", "factor": 2.0},
        },
    ),
    "qwen2-bias-untied": ("Qwen2Config", {"num_attention_heads": 4, "num_key_value_heads": 2}),
    "qwen2-bias-tied-mqa": (
        "Qwen2Config",
        {"num_attention_heads": 4, "num_key_value_heads": 1, "tie_word_embeddings": True},
    ),
    "qwen3-qknorm-headdim32": (
        "Qwen3Config",
        {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32},
    ),
    "qwen3-tied-gqa4": (
        "Qwen3Config",
        {"num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 16, "tie_word_embeddings": True},
    ),
}


def random_hf_checkpoint(config_class: str, overrides: dict, out_dir, seed: int = 0):
    """A transformers model with every tensor random (norm scales around 1), saved to `out_dir`."""
    config = getattr(transformers, config_class)(**TINY, **overrides)
    torch.manual_seed(seed)
    hf = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            scale = torch.randn_like(p) * (0.2 if "norm" in name else 0.1)
            p.copy_(1.0 + scale if "norm" in name else scale)
    hf.save_pretrained(out_dir)
    return hf


def hf_logits(hf, input_ids: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
    with torch.no_grad():
        kwargs = {} if positions is None else {"position_ids": torch.from_numpy(positions)}
        return hf(input_ids=torch.from_numpy(input_ids), **kwargs).logits.numpy()


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(case, tmp_path):
    config_class, overrides = CASES[case]
    hf = random_hf_checkpoint(config_class, overrides, tmp_path)
    model, _ = load_hf(tmp_path)

    input_ids = np.random.default_rng(1).integers(0, TINY["vocab_size"], size=(2, 12))
    ours = np.asarray(model(jnp.asarray(input_ids)))
    assert_close_to_scale(ours, hf_logits(hf, input_ids), ulps=CROSS_LIBRARY_ULPS)


def test_explicit_positions_drive_the_rotary_embedding(tmp_path):
    config_class, overrides = CASES["llama3-rope-gqa2"]
    hf = random_hf_checkpoint(config_class, overrides, tmp_path)
    model, _ = load_hf(tmp_path)

    input_ids = np.random.default_rng(2).integers(0, TINY["vocab_size"], size=(2, 10))
    # RoPE only sees position differences, so stretch them rather than shift them.
    positions = np.stack([2 * np.arange(10), 3 * np.arange(10) + 5])
    ours = np.asarray(model(jnp.asarray(input_ids), positions=jnp.asarray(positions)))
    assert_close_to_scale(ours, hf_logits(hf, input_ids, positions), ulps=CROSS_LIBRARY_ULPS)
    assert np.abs(ours - np.asarray(model(jnp.asarray(input_ids)))).max() > 1e-3
