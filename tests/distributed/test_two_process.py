"""Multi-host training on one machine: two JAX processes on 127.0.0.1, one CPU device each.

`python -m cft_jax.train` runs as two processes joined by JAX's distributed runtime (coordinator on a
free local port, CPU collectives over gloo, JAX's default), with a (data=2) mesh: each process feeds
its half of every global batch. Checked against real runs:
  - the two processes reach the losses of ONE process with two devices and the same global batch;
  - the two processes export the final weights to HF safetensors together (every process gathers,
    process 0 writes): one export, the one-process run's tensors, and bit for bit the single-process
    export of the two-process run's own final checkpoint;
  - both processes stopped at step 3 and restarted from the checkpoint continue exactly: losses and
    final parameters (their export) equal a two-process run that was never stopped, which needs every
    process's own data iterator state (`data_iter/process_{i}-of-2.json`), and each process hashes
    its own files into its own integrity manifest, checked before the restore. That run's work directory
    is a `gs://` bucket, as on a TPU pod whose slice may be recreated (a GCS JSON-API server on
    127.0.0.1, `tests/gcs_server.py`): both processes write their checkpoint shards, data states and
    metrics there and restore from it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cft_jax.convert.checkpoint import load_params
from cft_jax.integrity import manifest_name
from cft_jax.models.hf import HFCheckpoint, export_hf
from cft_jax.training.metrics import read_jsonl
from tests.gcs_server import GCSServer
from tests.tolerances import assert_close_to_scale, scale_atol
from tests.trainer_runs import REPO, SMALL_RUN, trainer_env

TIMEOUT_S = 300
# Adam's eps at 1e-2 makes its update Lipschitz in the gradient (|d update / d g| <= lr / eps), so two
# runs whose gradients differ only by reduction order stay within a bound the test can state (with
# the default 1e-8 an element whose gradient is near zero turns rounding into a whole lr-sized step).
ADAM_EPS, LR, STEPS = 1e-2, 3e-3, 6
SMALL = [
    *SMALL_RUN,
    "--config.logging.tensorboard=false",
    "--config.export.at_end=false",
    "--config.mesh.data=-1",
    "--config.mesh.fsdp=1",
    f"--config.optimizer.eps={ADAM_EPS}",
]
# Each gradient element is a sum over the 4 x 64 token positions, reduced in another order across
# the processes (over gloo): 256 ulps of its scale, which clipping to norm 1.0 bounds by 1.
GRADIENT_ATOL = scale_atol(1.0, 256)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(
    workdir: Path | str, cache: Path, *, processes: int, devices_per_process: int, extra=(), env=None
) -> None:
    """Runs the trainer as `processes` processes to completion; kills them all if one fails or hangs."""
    base = trainer_env(cache, devices=devices_per_process, extra=env)
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


def hf_export(directory: Path) -> dict[str, np.ndarray]:
    checkpoint = HFCheckpoint(directory)
    return {name: np.asarray(checkpoint.tensor(name)) for name in sorted(checkpoint.location)}


@pytest.mark.slow
def test_two_processes_match_one_and_resume_exactly(tmp_path):
    cache = tmp_path / "xla_cache"
    one, two = tmp_path / "one", tmp_path / "two"

    export = ["--config.export.at_end=true"]
    run(one, cache, processes=1, devices_per_process=2, extra=export)
    run(two, cache, processes=2, devices_per_process=1, extra=export)
    assert sorted(losses(two)) == [1, 2, 3, 4, 5, 6]
    # The same rows in every global batch, reduced in another order (across processes, over gloo):
    # each loss a 256-token sum, of weights that differ (below) only where a gradient is tiny, i.e.
    # where the loss does not depend on them to first order.
    for step, loss in losses(one).items():
        assert_close_to_scale(losses(two)[step], loss, ulps=256, err_msg=f"step {step}")

    # One export, written by process 0 alone, with the files and tensors of the one-process export.
    assert [p.name for p in (two / "hf").iterdir()] == ["step_6"]
    exported, expected_dir = two / "hf" / "step_6", one / "hf" / "step_6"
    assert sorted(p.name for p in exported.iterdir()) == sorted(p.name for p in expected_dir.iterdir())
    weights, expected = hf_export(exported), hf_export(expected_dir)
    assert {k: (v.shape, v.dtype) for k, v in weights.items()} == {
        k: (v.shape, v.dtype) for k, v in expected.items()
    }
    # The runs' weights differ by their gradients' reduction order only: at most lr / eps x the
    # gradient's tolerance per update, summed over the updates (5.5e-5), far below the weights'
    # scale (~0.1), which a misplaced slice would move.
    weight_atol = STEPS * LR / ADAM_EPS * GRADIENT_ATOL
    for name in expected:
        np.testing.assert_allclose(weights[name], expected[name], rtol=0, atol=weight_atol, err_msg=name)
    # The gathers are exact: the single-process export of the run's own final checkpoint, bit for bit.
    reference = hf_export(export_hf(*load_params(two / "checkpoints", step=6), tmp_path / "reference"))
    assert weights.keys() == reference.keys()
    for name in reference:
        np.testing.assert_array_equal(weights[name], reference[name], err_msg=name)

    # A pod's restart (launch/tpu/babysit.sh): both processes stopped at step 3, restarted from the
    # checkpoint, which lives in a bucket as on a pod (tests/gcs_server.py on 127.0.0.1).
    with GCSServer(buckets=("cft",)) as gcs:
        restarted = "gs://cft/restarted"
        halt = ["--config.training.halt_at_step=3"]
        run(restarted, cache, processes=2, devices_per_process=1, extra=halt, env=gcs.environment())
        states = sorted(
            n for _, n in gcs.objects if n.startswith("restarted/checkpoints/3/data_iter/process_")
        )
        assert states == [f"restarted/checkpoints/3/data_iter/process_{i}-of-2.json" for i in range(2)]
        # Each process hashed its own files into its own manifest; together they cover the step.
        step_3 = {n.split("/", 3)[3] for _, n in gcs.objects if n.startswith("restarted/checkpoints/3/")}
        listed = [
            set(
                json.loads(gcs.objects[("cft", f"restarted/checkpoints/3/{manifest_name(i, 2)}")].data)[
                    "files"
                ]
            )
            for i in range(2)
        ]
        assert listed[0] | listed[1] == step_3 - {manifest_name(i, 2) for i in range(2)}
        assert not listed[0] & listed[1] and "data_iter/process_1-of-2.json" in listed[1]
        assert all("process_1" in name for name in listed[1])
        run(restarted, cache, processes=2, devices_per_process=1, extra=export, env=gcs.environment())
        metrics = gcs.objects[("cft", "restarted/metrics.jsonl")].data.decode().splitlines()
        assert {r["step"]: r["loss"] for r in map(json.loads, metrics)} == losses(two)
        # The final weights, as exported by the restarted processes into the bucket: bit for bit.
        final = gcs.objects[("cft", "restarted/hf/step_6/model.safetensors")].data
        assert final == (two / "hf" / "step_6" / "model.safetensors").read_bytes()
        assert gcs.unhandled == []
