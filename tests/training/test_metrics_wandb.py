"""W&B beside JSONL and TensorBoard: the same scalars at the same steps and the config as the run config,
written in W&B's offline mode (no network) and read back from the run's .wandb file by wandb's own
reader; nothing imported or written when W&B is not asked for, or off process 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from cft_jax.config import build_config
from cft_jax.training.loop import StepMeter
from cft_jax.training.metrics import MetricsWriter, read_jsonl
from tests.training.conftest import TINY

SECRET = "0123456789abcdef0123456789abcdef01234567"  # what a W&B API key looks like


def wandb_records(run_dir: Path) -> list[dict]:
    """The records of the run's transaction log, as `wandb leet inspect --json` prints them."""
    [log] = run_dir.glob("run-*.wandb")
    done = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def write_steps(workdir: Path, config, steps, initial_step: int = 0, late: dict | None = None) -> None:
    """What the trainer writes: StepMeter's numbers of each step, an eval loss on the last, and
    `late` = {step: accuracy}: validation scores that arrive after the last step."""
    writer = MetricsWriter(
        workdir,
        total_steps=10,
        initial_step=initial_step,
        jsonl=True,
        tensorboard=False,
        progress_bar=False,
        wandb_project=config.logging.wandb_project,
        wandb_run_name=config.logging.wandb_run_name,
        run_config=config.to_dict(),
    )
    meter = StepMeter(tokens_per_step=256, flops_per_token=1e6, num_devices=1, peak_flops=1e12)
    for step in steps:
        metrics = {
            "loss": np.float32(3.0 / step),
            "lr": np.float32(1e-5 * step),
            "grad_norm": np.float32(0.5),
        }
        meter.swap(step, metrics)
        _, numbers = meter.take()
        if step == steps[-1]:
            numbers["eval_loss"] = 1.25
        writer.write(step, numbers, advance=1)
    for step, accuracy in (late or {}).items():
        writer.write(step, {"val_accuracy": accuracy})
    writer.close()


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    wandb_dir = tmp_path / "wandb_dir"
    wandb_dir.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("WANDB_SILENT", "true")
    return wandb_dir


def test_wandb_gets_the_scalars_jsonl_gets_and_the_config(tmp_path, offline):
    config = build_config(
        {"model": {"init_config": TINY}, "logging": {"wandb_project": "cft", "wandb_run_name": "tiny"}}
    )
    workdir = tmp_path / "run"
    write_steps(workdir, config, [1, 2, 3], late={2: 0.5})
    [run_dir] = (offline / "wandb").glob("offline-run-*")
    records = wandb_records(run_dir)

    history = [r["history"] for r in records if r["type"] == "history"]
    logged = [
        {"step": h["step"]["num"], **{k: v for k, v in h["item"].items() if not k.startswith("_")}}
        for h in history
    ]
    jsonl = read_jsonl(workdir / "metrics.jsonl")
    assert [r["step"] for r in jsonl] == [1, 2, 3, 2]
    # The late validation score rides in the last step's row, at its own step on the val_step axis.
    assert logged[-1].pop("val_accuracy") == 0.5 and logged[-1].pop("val_step") == 2
    assert [r["step"] for r in logged] == [1, 2, 3]
    for ours, theirs in zip(jsonl, logged, strict=False):
        assert ours.keys() == theirs.keys()
        assert theirs == pytest.approx(ours, rel=1e-6)
    assert "eval_loss" in logged[-1]

    [run] = [r["run"] for r in records if r["type"] == "run"]
    assert (run["project"], run["display_name"]) == ("cft", "tiny")
    assert run["run_id"] == (workdir / "wandb_run_id").read_text().strip()
    run_config = {k: v for k, v in run["config"]["update"].items() if k != "_wandb"}
    assert run_config == json.loads(json.dumps(config.to_dict()))  # tuples are lists in W&B, as in JSON

    files = [p for p in [*offline.rglob("*"), *workdir.rglob("*")] if p.is_file()]
    assert not [p for p in files if SECRET.encode() in p.read_bytes()], "the API key was written"


def test_a_resumed_run_continues_its_wandb_run(tmp_path, offline):
    config = build_config({"model": {"init_config": TINY}, "logging": {"wandb_project": "cft"}})
    workdir = tmp_path / "run"
    write_steps(workdir, config, [1, 2])
    first = (workdir / "wandb_run_id").read_text()
    write_steps(workdir, config, [3], initial_step=2)
    assert (workdir / "wandb_run_id").read_text() == first
    runs = {}  # each start writes its own offline run directory, to be synced into the one W&B run
    for run_dir in (offline / "wandb").glob("offline-run-*"):
        records = wandb_records(run_dir)
        [run] = [r["run"] for r in records if r["type"] == "run"]
        runs[run_dir] = (
            run["run_id"],
            [r["history"]["step"]["num"] for r in records if r["type"] == "history"],
        )
    assert sorted(runs.values()) == [(first.strip(), [1, 2]), (first.strip(), [3])]


@pytest.mark.parametrize("process", [0, 1])
def test_nothing_of_wandb_is_imported_or_written_unless_asked_for_on_process_0(
    tmp_path, monkeypatch, process
):
    monkeypatch.setitem(sys.modules, "wandb", None)  # any import of wandb now fails
    monkeypatch.setattr(jax, "process_index", lambda: process)
    project = "cft" if process else ""  # asked for, but not on process 0
    writer = MetricsWriter(
        tmp_path, total_steps=2, initial_step=0, jsonl=True, tensorboard=False, progress_bar=False,
        wandb_project=project,
    )  # fmt: skip
    writer.write(1, {"loss": 1.0}, advance=1)
    writer.close()
    assert not (tmp_path / "wandb_run_id").exists() and not (tmp_path / "wandb").exists()
