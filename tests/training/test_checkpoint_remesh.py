"""A checkpoint written on one mesh shape restores onto another, values intact, in the new layout."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from cft_jax.models.sharding import make_mesh, model_shardings
from cft_jax.training.checkpoint import Checkpointer, abstract_with_shardings
from cft_jax.training.optimizer import learning_rate_schedule, make_optimizer
from cft_jax.training.state import optimizer_shardings
from cft_jax.training.step import model_parts
from tests.training.conftest import tiny_model

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8"
)


def placed(params, mesh, tx):
    params = jax.device_put(params, model_shardings(params, mesh))
    opt_shardings = optimizer_shardings(tx, params, mesh)
    return params, jax.jit(tx.init, out_shardings=opt_shardings)(params), opt_shardings


def test_fsdp8_checkpoint_restores_onto_a_2x2x2_mesh(tiny_config, tmp_path):
    _, params, _ = model_parts(tiny_model(tiny_config))
    tx = make_optimizer(
        learning_rate_schedule(1e-3, 10), b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0, clip_norm=1.0
    )
    saved_params, saved_opt_state, _ = placed(params, make_mesh(1, 8, 1, devices=jax.devices()[:8]), tx)
    checkpointer = Checkpointer(tmp_path, keep=1, async_save=True)
    meta = {"note": "fsdp=8"}
    checkpointer.save(
        5, params=saved_params, opt_state=saved_opt_state, data_iter_state={"next": 7}, meta=meta
    )
    checkpointer.wait()

    target_params, target_opt_state, opt_shardings = placed(
        params, make_mesh(2, 2, 2, devices=jax.devices()[:8]), tx
    )
    param_shardings = jax.tree.map(lambda x: x.sharding, target_params)
    restored, opt_state, data_state, restored_meta = Checkpointer(tmp_path, keep=1, async_save=True).restore(
        5,
        abstract_params=abstract_with_shardings(target_params, param_shardings),
        abstract_opt_state=abstract_with_shardings(target_opt_state, opt_shardings),
    )
    assert data_state == {"next": 7} and restored_meta == {"note": "fsdp=8", "step": 5}
    for new, old, want in zip(
        jax.tree.leaves(restored),
        jax.tree.leaves(saved_params),
        jax.tree.leaves(param_shardings),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
        assert new.sharding == want
    for new, want in zip(jax.tree.leaves(opt_state), jax.tree.leaves(opt_shardings), strict=True):
        assert new.sharding == want
