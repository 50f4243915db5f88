"""Fixtures for the trainer's tests: a tiny decoder (hidden 64, 2 layers) and synthetic CFT batches."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from cft_jax.models.config import ModelConfig
from cft_jax.models.transformer import Decoder

TINY = {
    "model_type": "qwen2",
    "vocab_size": 96,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "tie_word_embeddings": False,
    "max_position_embeddings": 256,
}


@pytest.fixture
def tiny_config() -> ModelConfig:
    return ModelConfig.from_hf(TINY)


def tiny_model(config: ModelConfig, seed: int = 0, **decoder_kwargs) -> Decoder:
    """A float32 tiny Decoder with N(0, 0.02) weights and unit norm scales, drawn with numpy.

    Drawing on the host skips compiling the initialisers (seconds each on a busy 2-core machine).
    """
    abstract = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0), **decoder_kwargs))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "scale":
            return np.ones(leaf.shape, leaf.dtype)
        return (0.02 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

    values = jax.tree_util.tree_map_with_path(draw, state.to_pure_dict())
    nnx.replace_by_pure_dict(state, values)
    return nnx.merge(graphdef, state)


def cft_batch(rows: int, seq_len: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows of one packed-free CFT example each: a prompt, then a critique of a different length.

    Row r's prompt is 3 + r tokens and its critique runs to a row-dependent end (then padding), so
    rows hold different numbers of target tokens. [rows, seq_len] int32 arrays, as the pipeline yields.
    """
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(1, vocab, size=(rows, seq_len), dtype=np.int32)
    loss_mask = np.zeros((rows, seq_len), np.int32)
    segment_ids = np.zeros((rows, seq_len), np.int32)
    positions = np.zeros((rows, seq_len), np.int32)
    for r in range(rows):
        prompt, end = 3 + r % 4, seq_len - (r * 5) % (seq_len // 2)
        loss_mask[r, prompt:end] = 1
        segment_ids[r, :end] = 1
        positions[r, :end] = np.arange(end)
        input_ids[r, end:] = 0
    return {
        "input_ids": input_ids,
        "loss_mask": loss_mask,
        "segment_ids": segment_ids,
        "positions": positions,
    }
