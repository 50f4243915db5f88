"""Packed rows: segment ids keep sequences apart and positions restart per segment."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from cft_jax.models import Decoder, ModelConfig
from cft_jax.models.transformer import segment_positions
from tests.tolerances import assert_close_to_scale

CONFIG = ModelConfig(
    model_type="qwen3",
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    qk_norm=True,
)


def test_segment_positions_restart_at_each_segment():
    segment_ids = jnp.array([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    expected = [[0, 1, 2, 0, 1, 0, 0, 1], [0, 1, 2, 3, 4, 5, 6, 7]]
    np.testing.assert_array_equal(segment_positions(segment_ids), expected)


def test_packed_row_equals_sequences_run_one_by_one():
    model = Decoder(CONFIG, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, CONFIG.vocab_size, size=n) for n in (5, 7, 4)]
    padding = 4
    packed = np.concatenate([*sequences, np.zeros(padding, dtype=int)])[None]
    segment_ids = np.concatenate(
        [np.full(len(s), i + 1) for i, s in enumerate(sequences)] + [np.zeros(padding)]
    )

    logits = np.asarray(
        model(jnp.asarray(packed), segment_ids=jnp.asarray(segment_ids[None], dtype=jnp.int32))
    )

    assert np.isfinite(logits).all()
    # Each sequence alone at the start of its own row; the filler after it is causally invisible.
    alone = np.zeros((len(sequences), packed.shape[1]), dtype=int)
    for row, sequence in enumerate(sequences):
        alone[row, : len(sequence)] = sequence
    alone_logits = np.asarray(model(jnp.asarray(alone)))
    start = 0
    for row, sequence in enumerate(sequences):
        # Masked keys add exact zeros, but the softmax and matmuls run over longer rows, which XLA
        # tiles and reduces in another order: the bound of a 64-term reordering.
        assert_close_to_scale(
            logits[0, start : start + len(sequence)], alone_logits[row, : len(sequence)], ulps=64
        )
        start += len(sequence)
