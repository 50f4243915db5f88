"""The host never waits for the device: step n+1 is dispatched before step n's metrics are read.

The trainer runs in this process (the CPU demo config, six updates, a checkpoint at steps 3 and 6)
with two spies on the real code paths: `TrainStep.__call__` (a dispatch) and
`cft_jax.training.loop.read_metrics` (the float() that waits for a step). Steps are read in order,
once each, so the k-th read is step k.
"""

from __future__ import annotations

from pathlib import Path

import jax
import pytest

from cft_jax.config import load_config
from cft_jax.train import train
from cft_jax.training import loop
from cft_jax.training.metrics import read_jsonl
from cft_jax.training.state import TrainStep

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_each_step_is_dispatched_before_the_previous_steps_metrics_are_read(tmp_path, monkeypatch):
    events: list[str] = []
    dispatch, read = TrainStep.__call__, loop.read_metrics

    def spy_dispatch(self, params, opt_state, batch):
        events.append(f"dispatch {sum(e.startswith('dispatch') for e in events) + 1}")
        return dispatch(self, params, opt_state, batch)

    def spy_read(metrics):
        events.append(f"read {sum(e.startswith('read') for e in events) + 1}")
        return read(metrics)

    monkeypatch.setattr(TrainStep, "__call__", spy_dispatch)
    monkeypatch.setattr(loop, "read_metrics", spy_read)
    config = load_config(
        REPO / "configs" / "cpu_demo.py",
        [
            f"--config.training.workdir={tmp_path / 'run'}",
            "--config.data.seq_len=64",
            f"--config.training.global_batch={2 * jax.device_count()}",  # splits over any device count
            "--config.training.max_steps=6",
            "--config.checkpoint.every_steps=3",
            "--config.checkpoint.async_save=false",
            "--config.export.at_end=false",
            "--config.logging.progress_bar=false",
            "--config.logging.tensorboard=false",
        ],
    )
    train(config)

    # Steps 3 and 6 are checkpointed, so their parameters (and numbers) are needed at once; every
    # other step's numbers wait until the next step is on its way.
    assert events == [
        "dispatch 1", "dispatch 2", "read 1", "dispatch 3", "read 2", "read 3",
        "dispatch 4", "dispatch 5", "read 4", "dispatch 6", "read 5", "read 6",
    ]  # fmt: skip
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(r["step_time_s"] > 0 and r["loss"] > 0 for r in records)
