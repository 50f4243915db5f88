"""Fixtures for the HF/Orbax/GGUF conversion tests: tiny random transformers checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# One tiny config per family and feature the name table has rows for.
TINY = {
    # untied lm_head, GQA 4:2
    "llama": dict(
        model_type="llama",
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    ),
    # q/k/v biases, tied embeddings, GQA 4:1
    "qwen2": dict(
        model_type="qwen2",
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    ),
    # q/k norms, head_dim != hidden / heads, untied
    "qwen3": dict(
        model_type="qwen3",
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        tie_word_embeddings=False,
    ),
}


def save_tiny(family: str, out: Path, *, dtype: str = "float32", max_shard_size: str | None = None) -> Path:
    """A random transformers model of `family` saved with save_pretrained (sharded if max_shard_size)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    kwargs = dict(TINY[family])
    config = AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
    model = AutoModelForCausalLM.from_config(config).to(getattr(torch, dtype)).eval()
    # Random init leaves norms at 1 and biases at 0; randomize them so a mix-up shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "bias")):
                p.normal_()
    extra = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(out, **extra)
    return out


@pytest.fixture(scope="session")
def tiny_hf():
    """`tiny_hf(family, out, dtype=..., max_shard_size=...)` saves a tiny random transformers model."""
    return save_tiny
