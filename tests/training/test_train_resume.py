"""Exact resume through real processes, validation accuracy and keep-best included: 15 updates
uninterrupted == 6 updates, SIGKILL, resume to 15.

All runs are `python -m cft_jax.train` on the CPU demo config shrunk to a 64-token, 4-row batch; they
share a persistent compilation cache so only the first process pays for compiling. The data makes
validation scores move: the tiny random-init model trains on three phases of answers, 3 updates on
rows answering "33333333", 6 on "11111111", 6 on "22222222" (no shuffling). A model this small, a
few updates in, answers every prompt with its most trained token repeated, so its greedy answers of
8 new tokens are one digit 8 times: the phase it has learnt. The validation set, a problems file
passed by path, has two problems answered "11111111" and one "22222222", so the score every 3
updates, graded by the evaluation tool's real grader, rises from 0 to 2/3 and falls to 1/3: the best
step is mid-training, no longer the newest checkpoint when `checkpoint.keep=1` prunes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from safetensors.numpy import load_file

from cft_jax.training.metrics import read_jsonl
from tests.trainer_runs import REPO, SMALL_RUN, trainer_env

PHASES = (("33333333", 3), ("11111111", 6), ("22222222", 6))  # (answer, updates)
ANSWERS = ("11111111", "11111111", "22222222")  # the validation problems' reference answers
STEPS = sum(updates for _, updates in PHASES)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("resume")
    turns = [(f"Question {i}?", answer) for answer, updates in PHASES for i in range(4 * updates)]
    rows = [
        {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
        for question, answer in turns
    ]
    problems = [
        {"id": f"p{i}", "question": f"What is problem {i}?", "reference_answer": answer}
        for i, answer in enumerate(ANSWERS)
    ]
    paths = {"train": root / "train.jsonl", "val": root / "val.jsonl", "cache": root / "xla_cache"}
    paths["train"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths["val"].write_text("".join(json.dumps(p) + "\n" for p in problems))
    return paths


def trainer(workdir: Path, files: dict[str, Path]) -> subprocess.Popen:
    args = [
        *SMALL_RUN,
        f"--config.training.workdir={workdir}",
        f"--config.data.train_paths=('{files['train']}',)",
        "--config.data.format=messages",
        "--config.data.shuffle=false",
        f"--config.training.max_steps={STEPS}",
        "--config.optimizer.lr=3e-2",
        "--config.optimizer.schedule=constant",
        "--config.optimizer.warmup_steps=0",
        "--config.checkpoint.keep=1",
        "--config.evaluation.generate_every_steps=3",
        f"--config.evaluation.benchmark={files['val']}",
        "--config.evaluation.max_new_tokens=8",
        "--config.evaluation.generate_batch_size=4",
        "--config.evaluation.grade_workers=1",
        "--config.logging.tensorboard=false",
        "--config.export.at_end=false",
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "cft_jax.train", *args],
        cwd=REPO,
        env=trainer_env(files["cache"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen) -> None:
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out


@pytest.fixture(scope="module")
def straight(files) -> Path:
    """An uninterrupted run's work directory."""
    workdir = files["train"].parent / "straight"
    finish(trainer(workdir, files))
    return workdir


def losses(workdir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(workdir / "metrics.jsonl") if "loss" in r}


def val_accuracy(workdir: Path) -> dict[int, float]:
    return {
        r["step"]: r["val_accuracy"] for r in read_jsonl(workdir / "metrics.jsonl") if "val_accuracy" in r
    }


def params(workdir: Path, step: int) -> dict:
    return ocp.PyTreeCheckpointer().restore((workdir / "checkpoints" / str(step) / "model").absolute())


def checkpoint_steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Sharding info not provided")  # reading back as host arrays is the point
def test_killed_and_resumed_run_equals_the_uninterrupted_run(straight, files):
    interrupted = files["train"].parent / "interrupted"
    process = trainer(interrupted, files)
    checkpoint = interrupted / "checkpoints" / "6"  # renamed into place once complete
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert 6 in checkpoint_steps(interrupted), "the kill should land after the checkpoint of step 6"

    finish(trainer(interrupted, files))
    assert losses(interrupted) == losses(straight)
    assert sorted(losses(straight)) == list(range(1, STEPS + 1))
    resumed, uninterrupted = params(interrupted, STEPS), params(straight, STEPS)
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(uninterrupted), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The same validation scores, the same best step kept and exported.
    assert val_accuracy(interrupted) == val_accuracy(straight)
    best, resumed_best = (json.loads((w / "best.json").read_text()) for w in (straight, interrupted))
    assert resumed_best == best
    assert checkpoint_steps(interrupted) == checkpoint_steps(straight)
    export = "hf/best/model.safetensors"
    assert (interrupted / export).read_bytes() == (straight / export).read_bytes()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Sharding info not provided")
def test_validation_logs_accuracy_keeps_the_best_checkpoint_and_exports_it(straight):
    scores = val_accuracy(straight)
    assert sorted(scores) == [3, 6, 9, 12, 15]
    assert scores[3] == 0 and scores[15] == pytest.approx(1 / 3)  # phase "3...", then phase "2..."
    assert max(scores.values()) == pytest.approx(2 / 3)
    best_step = min(s for s, v in scores.items() if v == max(scores.values()))  # the earliest of the best

    best = json.loads((straight / "best.json").read_text())
    assert (best["step"], best["score"], best["n"]) == (best_step, scores[best_step], len(ANSWERS))
    assert best["benchmark"].endswith("val.jsonl")
    assert {h["step"]: h["score"] for h in best["history"]} == scores
    # keep=1 left the newest checkpoint, and the best one through every later save.
    assert checkpoint_steps(straight) == [best_step, STEPS]

    # hf/best holds the best step's weights (its checkpoint's), and the answers that scored it are there.
    exported = load_file(straight / "hf" / "best" / "model.safetensors")
    embedding = params(straight, best_step)["embed"]["embedding"]
    np.testing.assert_array_equal(exported["model.embed_tokens.weight"], np.asarray(embedding))
    answers = [json.loads(line) for line in (straight / "validation" / f"step_{best_step}.jsonl").open()]
    assert [a["response"] for a in answers] == ["11111111"] * 3
    assert [a["correct"] for a in answers] == [True, True, False]
