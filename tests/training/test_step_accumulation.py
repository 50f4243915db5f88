"""Gradient accumulation is token-weighted: k micro-batches of B/k give the update of one batch of B."""

from __future__ import annotations

import functools

import jax
import numpy as np

from cft_jax.training.optimizer import learning_rate_schedule, make_optimizer
from cft_jax.training.step import model_parts, split_micro_batches, train_step
from tests.training.conftest import cft_batch, tiny_model


def test_micro_batches_hold_different_numbers_of_target_tokens():
    batch = cft_batch(8, 32, 96)
    counts = [int(m.sum()) for m in split_micro_batches(batch, 4)["loss_mask"]]
    assert len(set(counts)) == 4, counts


def test_four_micro_batches_give_the_update_of_one_full_batch(tiny_config):
    model = tiny_model(tiny_config)
    graphdef, params, rest = model_parts(model)
    schedule = learning_rate_schedule(1e-3, 10, schedule="constant")
    # A large eps keeps AdamW's first update proportional to the gradient (with a tiny eps it is
    # sign(gradient), which would hide a wrongly weighted gradient).
    tx = make_optimizer(schedule, b1=0.9, b2=0.999, eps=1e-2, weight_decay=0.05, clip_norm=1.0)
    batch = cft_batch(8, 32, tiny_config.vocab_size)
    results = []
    for k in (1, 4):
        step = functools.partial(
            train_step,
            graphdef=graphdef,
            rest=rest,
            tx=tx,
            schedule=schedule,
            accumulation_steps=k,
            vocab_chunk=32,
        )
        results.append(jax.jit(step)(params, tx.init(params), batch))
    (full, _, full_metrics), (accumulated, _, accumulated_metrics) = results
    for name in ("loss", "target_tokens", "grad_norm", "lr"):
        np.testing.assert_allclose(accumulated_metrics[name], full_metrics[name], rtol=2e-5)
    for a, b, p in zip(
        jax.tree.leaves(accumulated), jax.tree.leaves(full), jax.tree.leaves(params), strict=True
    ):
        np.testing.assert_allclose(a - p, b - p, rtol=1e-3, atol=1e-8)
