"""Exact resume through real processes: 6 steps uninterrupted == 3 steps, SIGKILL, resume to 6.

Both runs are `python -m cft_jax.train` on the CPU demo config shrunk to a 64-token, 4-row batch;
they share a persistent compilation cache so only the first process pays for compiling.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cft_jax.training.metrics import read_jsonl
from tests.trainer_runs import REPO, SMALL_RUN, trainer_env

SMALL = [*SMALL_RUN, "--config.logging.tensorboard=false", "--config.export.at_end=false"]


def trainer(workdir: Path, cache: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "cft_jax.train", f"--config.training.workdir={workdir}", *SMALL]
    return subprocess.Popen(
        args, cwd=REPO, env=trainer_env(cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen) -> None:
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out


def losses(workdir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(workdir / "metrics.jsonl")}


def params(workdir: Path, step: int) -> dict:
    return ocp.PyTreeCheckpointer().restore((workdir / "checkpoints" / str(step) / "model").absolute())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Sharding info not provided")  # reading back as host arrays is the point
def test_killed_and_resumed_run_equals_the_uninterrupted_run(tmp_path):
    cache = tmp_path / "xla_cache"
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    finish(trainer(straight, cache))

    process = trainer(interrupted, cache)
    first_checkpoint = interrupted / "checkpoints" / "3"  # renamed into place once complete
    deadline = time.monotonic() + 300
    while not first_checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    saved = sorted(int(p.name) for p in (interrupted / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [3], f"the kill should land between the checkpoints of steps 3 and 6, found {saved}"

    finish(trainer(interrupted, cache))
    assert losses(interrupted) == losses(straight)
    assert sorted(losses(straight)) == [1, 2, 3, 4, 5, 6]
    resumed, uninterrupted = params(interrupted, 6), params(straight, 6)
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(uninterrupted), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
