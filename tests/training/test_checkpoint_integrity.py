"""Checkpoint integrity: a damaged newest checkpoint is named, set aside, and the run resumes exactly from
the one before; `python -m cft_jax.convert verify` finds the damage; the same in a `gs://` bucket.

The trainer tests run real `python -m cft_jax.train` processes (the small run of tests/trainer_runs.py,
9 updates, checkpoints at 3, 6 and 9). One uninterrupted run, shared by the module, is the reference.
Each corruption test copies it without step 9 (a run stopped after checkpointing step 6), damages the
largest data file of step 6 (truncated to half its size, a 64-byte block zeroed in its middle, or
deleted) and restarts the trainer: it must name step 6 and the file, move the step into
`checkpoints/quarantine/` whole (not delete it), resume from step 3 and reach the reference's losses
and step-9 parameters bit for bit (resuming equals not stopping: test_train_resume.py).

The other tests drive a Checkpointer in this process: in a bucket (tests/gcs_server.py) async saves
write their manifests there (covering every object of the step), and a damaged step is moved aside in
the bucket and the step before restored; a step without manifests is restored if it can be and set
aside if it cannot; a step whose files are intact but do not fit the run, or no step left, stop
with an error instead of training from scratch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from cft_jax.convert.__main__ import main as convert_main
from cft_jax.integrity import manifest_name
from cft_jax.training.checkpoint import Checkpointer, CheckpointIntegrityError, abstract_with_shardings
from cft_jax.training.metrics import read_jsonl
from tests.gcs_server import GCSServer
from tests.trainer_runs import REPO, SMALL_RUN, trainer_env

SMALL = [
    *SMALL_RUN,
    "--config.training.max_steps=9",
    "--config.checkpoint.keep=3",
    "--config.logging.tensorboard=false",
    "--config.export.at_end=false",
]
MANIFEST = manifest_name(0, 1)


def zero_a_block(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(bytes(64))


CORRUPTIONS = {
    "truncated": lambda path: os.truncate(path, path.stat().st_size // 2),
    "zeroed_block": zero_a_block,
    "deleted": Path.unlink,
}


def train(workdir: Path, cache: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cft_jax.train", f"--config.training.workdir={workdir}", *SMALL],
        cwd=REPO,
        env=trainer_env(cache),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run's work directory (its XLA cache beside it, for the module's runs)."""
    workdir = tmp_path_factory.mktemp("integrity") / "reference"
    train(workdir, workdir.parent / "xla_cache")
    return workdir


def stopped_after_step_6(reference: Path, workdir: Path) -> Path:
    """A copy of the reference as a run stopped after checkpointing step 6 leaves it."""
    shutil.copytree(reference, workdir, ignore=lambda d, _: ["9"] if Path(d).name == "checkpoints" else [])
    return workdir


def largest_data_file(step_dir: Path) -> Path:
    return max((step_dir / "model").rglob("ocdbt.process_0/d/*"), key=lambda p: p.stat().st_size)


def losses(workdir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(workdir / "metrics.jsonl")}


def params(step_dir: Path) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(ocp.PyTreeCheckpointer().restore(step_dir / "model"))]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Sharding info not provided")  # reading back as host arrays is the point
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(
    reference, tmp_path, corruption
):
    workdir = stopped_after_step_6(reference, tmp_path / "run")
    damaged = largest_data_file(workdir / "checkpoints" / "6")
    relative = damaged.relative_to(workdir / "checkpoints" / "6").as_posix()
    CORRUPTIONS[corruption](damaged)

    out = train(workdir, reference.parent / "xla_cache")

    [kept] = (workdir / "checkpoints" / "quarantine").glob("6.corrupt-*")
    assert f"checkpoint step 6 ({workdir / 'checkpoints' / '6'}) is corrupt: {relative}: " in out, out
    assert f"moved to {kept} (kept, not deleted)" in out, out
    assert "resuming from step 3 instead of step 6: 3 steps of work lost" in out, out
    assert "resumed from the checkpoint of step 3" in out and "step 4:" in out, out
    assert (kept / MANIFEST).is_file() and (kept / relative).exists() == (corruption != "deleted")
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["3", "6", "9", "hf", "quarantine"]

    assert losses(workdir) == losses(reference)
    assert sorted(losses(workdir)) == list(range(1, 10))
    resumed, uninterrupted = params(workdir / "checkpoints" / "9"), params(reference / "checkpoints" / "9")
    assert len(resumed) == len(uninterrupted)
    for a, b in zip(resumed, uninterrupted, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # the module's reference run
def test_convert_verify_passes_a_good_run_and_names_the_damaged_file(reference, tmp_path, capsys):
    assert convert_main(["verify", str(reference)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["step 3: ok", "step 6: ok", "step 9: ok"], lines

    workdir = stopped_after_step_6(reference, tmp_path / "run")
    damaged = largest_data_file(workdir / "checkpoints" / "6")
    zero_a_block(damaged)
    assert convert_main(["verify", str(workdir)]) == 1
    captured = capsys.readouterr()
    relative = damaged.relative_to(workdir / "checkpoints" / "6").as_posix()
    assert captured.out.splitlines()[0].startswith("step 3: ok"), captured.out
    assert captured.out.splitlines()[1] == f"step 6: BAD: {relative}: sha256 digest mismatch " + (
        f"({damaged.stat().st_size} bytes; the content differs from what was written)"
    )
    assert "step(s) 6 do not match their integrity manifests" in captured.err

    assert convert_main(["verify", str(workdir), "--step", "3"]) == 0
    assert capsys.readouterr().out.startswith("step 3: ok")
    (workdir / "checkpoints" / "3" / MANIFEST).unlink()
    assert convert_main(["verify", str(workdir / "checkpoints"), "--step", "3"]) == 0  # not bad, but said
    assert capsys.readouterr().out.startswith("step 3: unverified: no integrity manifest")


def objects_under(gcs: GCSServer, prefix: str) -> dict[str, bytes]:
    return {name[len(prefix) :]: o.data for (_, name), o in gcs.objects.items() if name.startswith(prefix)}


def test_in_a_bucket_a_damaged_step_is_set_aside_and_the_one_before_restored(bucket):
    model = nnx.Linear(8, 16, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    shardings = jax.tree.map(lambda x: x.sharding, state)
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    directory = "gs://cft/run/checkpoints"
    checkpointer = Checkpointer(directory, keep=3, async_save=True)
    for step in (1, 2):
        weights = jax.tree.map(lambda x, s=step: x * s, state)
        opt_state = {"count": jnp.asarray(step)}
        checkpointer.save(step, params=weights, opt_state=opt_state, data_iter_state={"n": step}, meta={})
    checkpointer.wait()
    checkpointer.close()

    for step in (1, 2):
        written = objects_under(bucket, f"run/checkpoints/{step}/")
        assert MANIFEST in written  # written after Orbax committed the step
        listed = set(json.loads(written.pop(MANIFEST))["files"])
        assert listed == set(written)  # every object, including tensorstore's array files
    step_2 = objects_under(bucket, "run/checkpoints/2/")
    damaged = max((n for n in step_2 if "/d/" in n), key=lambda n: len(step_2[n]))
    data = bytearray(step_2[damaged])
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    bucket.put("cft", f"run/checkpoints/2/{damaged}", bytes(data))

    resumed = Checkpointer(directory, keep=3, async_save=True)
    verdict = resumed.verify(2)
    assert verdict.status == "bad" and verdict.problems[0].startswith(f"{damaged}: sha256 digest mismatch")
    step, restored, opt_state, data_state, _ = resumed.restore_latest(
        abstract_params=abstract_with_shardings(state, shardings),
        abstract_opt_state={"count": jax.ShapeDtypeStruct((), jnp.int32, sharding=one_device)},
    )
    assert (step, data_state, int(opt_state["count"])) == (1, {"n": 1}, 1)
    np.testing.assert_array_equal(np.asarray(restored["kernel"].value), np.asarray(state["kernel"].value))
    assert resumed.latest_step() == 1  # Orbax no longer lists the step set aside
    resumed.close()

    assert objects_under(bucket, "run/checkpoints/2/") == {}
    [kept] = {n.split("/")[0] for n in objects_under(bucket, "run/checkpoints/quarantine/") if "/" in n}
    assert kept.startswith("2.corrupt-")
    step_2[damaged] = bytes(data)
    assert objects_under(bucket, f"run/checkpoints/quarantine/{kept}/") == step_2  # every object, as it was
    assert bucket.unhandled == []


def small_state(features: int = 256) -> nnx.State:
    """A 64 x `features` kernel: large enough for tensorstore to store it in a data file, not inline."""
    return nnx.state(nnx.Linear(64, features, rngs=nnx.Rngs(0)), nnx.Param)


def save_steps(directory: Path | str, steps: tuple[int, ...], state: nnx.State) -> None:
    checkpointer = Checkpointer(directory, keep=len(steps), async_save=False)
    for step in steps:
        weights = jax.tree.map(lambda x, s=step: x * s, state)
        opt_state = {"count": jnp.asarray(step)}
        checkpointer.save(step, params=weights, opt_state=opt_state, data_iter_state={"n": step}, meta={})
    checkpointer.close()


def restore_latest(directory: Path | str, state: nnx.State):
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    checkpointer = Checkpointer(directory, keep=3, async_save=False)
    try:
        return checkpointer.restore_latest(
            abstract_params=abstract_with_shardings(state, jax.tree.map(lambda x: x.sharding, state)),
            abstract_opt_state={"count": jax.ShapeDtypeStruct((), jnp.int32, sharding=one_device)},
        )
    finally:
        checkpointer.close()


# A failed restore leaves Orbax's other pending reads for the garbage collector to close.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_unverified_step_is_restored_if_it_can_be_and_set_aside_if_not(tmp_path, capsys):
    state = small_state()
    save_steps(tmp_path, (1, 2), state)
    for step in (1, 2):
        (tmp_path / str(step) / MANIFEST).unlink()  # as written before manifests existed
    for data_file in (tmp_path / "2" / "model").rglob("ocdbt.process_0/d/*"):
        data_file.write_bytes(b"")  # what made main's resume die with OUT_OF_RANGE

    step, *_ = restore_latest(tmp_path, state)
    err = capsys.readouterr().err
    assert step == 1
    assert f"{tmp_path / '2'}: not verified (no integrity manifest" in err
    assert "checkpoint step 2" in err and "is corrupt: restoring it failed: " in err and "OUT_OF_RANGE" in err
    assert "resuming from step 1 instead of step 2: 1 step of work lost" in err
    assert len(list((tmp_path / "quarantine").glob("2.corrupt-*"))) == 1


# A failed restore leaves Orbax's other pending reads for the garbage collector to close.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_intact_files_that_do_not_fit_the_run_stop_it_and_nothing_is_moved(tmp_path):
    save_steps(tmp_path, (1, 2), small_state(features=16))
    with pytest.raises(
        CheckpointIntegrityError, match="step 2 matches its integrity manifests .* yet restoring"
    ):
        restore_latest(tmp_path, small_state(features=32))  # another model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


# A failed restore leaves Orbax's other pending reads for the garbage collector to close.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_no_step_left_stops_the_run_and_the_next_one_says_what_quarantine_holds(tmp_path, capsys):
    state = small_state()
    save_steps(tmp_path, (1, 2), state)
    for step in (1, 2):
        (tmp_path / str(step) / "data_iter" / "process_0-of-1.json").unlink()
    with pytest.raises(
        CheckpointIntegrityError, match=r"none of the checkpoint steps \[1, 2\] .* Nothing was deleted"
    ):
        restore_latest(tmp_path, state)
    kept = sorted(p.name.split(".")[0] for p in (tmp_path / "quarantine").glob("*.corrupt-*"))
    assert kept == ["1", "2"]
    capsys.readouterr()

    assert Checkpointer(tmp_path, keep=3, async_save=False).latest_step() is None
    assert "training starts at step 0, while" in capsys.readouterr().err
