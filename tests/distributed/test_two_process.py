"""Multi-host training on one machine: two JAX processes on 127.0.0.1, one CPU device each.

`python -m cft_jax.train` runs as two processes joined by JAX's distributed runtime (coordinator on a
free local port, CPU collectives over gloo, JAX's default), with a (data=2) mesh: each process feeds
its half of every global batch. Checked against real runs:
  - the two processes reach the losses of ONE process with two devices and the same global batch;
  - the two processes export the final weights to HF safetensors together (every process gathers,
    process 0 writes): one export, the one-process run's tensors, and bit for bit the single-process
    export of the two-process run's own final checkpoint;
  - both processes stopped at step 3 and restarted from the checkpoint continue exactly: losses and
    final parameters equal a two-process run that was never stopped, which needs every process's
    own data iterator state (`data_iter/process_{i}-of-2.json`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cft_jax.convert.checkpoint import load_params
from cft_jax.models.hf import HFCheckpoint, export_hf
from cft_jax.training.metrics import read_jsonl

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 150
SMALL = [
    "--config",
    str(REPO / "configs" / "cpu_demo.py"),
    "--config.data.seq_len=64",
    "--config.training.global_batch=4",
    "--config.training.max_steps=6",
    "--config.checkpoint.every_steps=3",
    "--config.checkpoint.async_save=false",
    "--config.logging.progress_bar=false",
    "--config.logging.tensorboard=false",
    "--config.export.at_end=false",
    "--config.mesh.data=-1",
    "--config.mesh.fsdp=1",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(workdir: Path, cache: Path, *, processes: int, devices_per_process: int, extra=()) -> None:
    """Runs the trainer as `processes` processes to completion; kills them all if one fails or hangs."""
    base = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}",
    }
    if processes > 1:
        base.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}", JAX_NUM_PROCESSES=str(processes))
    args = [sys.executable, "-m", "cft_jax.train", f"--config.training.workdir={workdir}", *SMALL, *extra]
    children = [
        subprocess.Popen(
            args,
            cwd=REPO,
            env={**base, "JAX_PROCESS_ID": str(i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(processes)
    ]
    try:
        for i, child in enumerate(children):
            out, _ = child.communicate(timeout=TIMEOUT_S)
            assert child.returncode == 0, f"process {i} of {processes} failed:\n{out}"
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()


def losses(workdir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(workdir / "metrics.jsonl")}


def params(workdir: Path, step: int) -> list[np.ndarray]:
    """The saved parameters as host arrays (their saved sharding spans processes that are gone)."""
    checkpointer, path = ocp.PyTreeCheckpointer(), workdir / "checkpoints" / str(step) / "model"
    structure = checkpointer.metadata(path).item_metadata.tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), structure)
    return jax.tree.leaves(checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy)))


def hf_export(directory: Path) -> dict[str, np.ndarray]:
    checkpoint = HFCheckpoint(directory)
    return {name: np.asarray(checkpoint.tensor(name)) for name in sorted(checkpoint.location)}


@pytest.mark.slow
def test_two_processes_match_one_and_resume_exactly(tmp_path):
    cache = tmp_path / "xla_cache"
    one, two, restarted = tmp_path / "one", tmp_path / "two", tmp_path / "restarted"

    export = ["--config.export.at_end=true"]
    run(one, cache, processes=1, devices_per_process=2, extra=export)
    run(two, cache, processes=2, devices_per_process=1, extra=export)
    assert sorted(losses(two)) == [1, 2, 3, 4, 5, 6]
    # The same rows in every global batch, reduced in another order (across processes, over gloo).
    np.testing.assert_allclose(list(losses(two).values()), list(losses(one).values()), rtol=2e-5)

    # One export, written by process 0 alone, with the files and tensors of the one-process export.
    assert [p.name for p in (two / "hf").iterdir()] == ["step_6"]
    exported, expected_dir = two / "hf" / "step_6", one / "hf" / "step_6"
    assert sorted(p.name for p in exported.iterdir()) == sorted(p.name for p in expected_dir.iterdir())
    weights, expected = hf_export(exported), hf_export(expected_dir)
    assert {k: (v.shape, v.dtype) for k, v in weights.items()} == {
        k: (v.shape, v.dtype) for k, v in expected.items()
    }
    # The runs' weights differ by their gradients' reduction order only, which Adam's per-element
    # normalization can amplify where a gradient is tiny: an absolute tolerance (near-zero weights
    # make a relative one meaningless), 1e-5 = ~13x the largest difference seen (7.8e-7, embedding),
    # far below one Adam step (lr 3e-3) and the weights' scale (~0.1), which a misplaced slice would show.
    for name in expected:
        np.testing.assert_allclose(weights[name], expected[name], rtol=0, atol=1e-5, err_msg=name)
    # The gathers are exact: the single-process export of the run's own final checkpoint, bit for bit.
    reference = hf_export(export_hf(*load_params(two / "checkpoints", step=6), tmp_path / "reference"))
    assert weights.keys() == reference.keys()
    for name in reference:
        np.testing.assert_array_equal(weights[name], reference[name], err_msg=name)

    run(restarted, cache, processes=2, devices_per_process=1, extra=["--config.training.halt_at_step=3"])
    states = sorted(p.name for p in (restarted / "checkpoints" / "3" / "data_iter").glob("process_*"))
    assert states == ["process_0-of-2.json", "process_1-of-2.json"]
    run(restarted, cache, processes=2, devices_per_process=1)
    assert losses(restarted) == losses(two)
    for a, b in zip(params(restarted, 6), params(two, 6), strict=True):
        np.testing.assert_array_equal(a, b)
