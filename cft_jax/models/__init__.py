"""Flax NNX decoders (Llama, Qwen2/2.5, Qwen3) that reproduce transformers, and their HF import/export."""

from cft_jax.models.config import ConfigError, ModelConfig
from cft_jax.models.hf import export_hf, load_hf
from cft_jax.models.transformer import Decoder

__all__ = ["ConfigError", "Decoder", "ModelConfig", "export_hf", "load_hf"]
