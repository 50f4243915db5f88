"""Gradient accumulation is token-weighted: k micro-batches of B/k give the update of one batch of B."""

from __future__ import annotations

import functools

import jax

from cft_jax.training.optimizer import learning_rate_schedule, make_optimizer
from cft_jax.training.step import model_parts, split_micro_batches, train_step
from tests.tolerances import assert_close_to_scale
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
    # Four partial sums then a total vs one sum over the 8 x 32 token positions: the reordering bound
    # of 256 terms. A wrongly weighted micro-batch moves these by a quarter of their scale.
    for name in ("loss", "target_tokens", "grad_norm", "lr"):
        assert_close_to_scale(accumulated_metrics[name], full_metrics[name], ulps=256, err_msg=name)
    # With eps = 1e-2 the update is Lipschitz in the gradient (|d update / d g| <= lr / eps = 0.1), so
    # the updates differ by at most 0.1 x the gradients' 256 ulps, far below one ulp of the
    # parameters; what remains is the rounding of p - update: a few ulps of the parameters' scale.
    # (A wrongly weighted micro-batch moves the update, ~1e-3 of that scale, by a quarter.)
    for a, b in zip(jax.tree.leaves(accumulated), jax.tree.leaves(full), strict=True):
        assert_close_to_scale(a, b, ulps=4)
