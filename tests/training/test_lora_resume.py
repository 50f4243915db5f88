"""A LoRA run through real `python -m cft_jax.train` processes: its checkpoints hold the adapters alone
(and the base's fingerprint), a resume from step 3 is bit-identical to the uninterrupted run (dropout
on, so the masks must be redrawn exactly), its PEFT export is byte-identical, and a resume onto
another base is refused."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cft_jax.config import ConfigError, load_config
from cft_jax.models.config import ModelConfig
from cft_jax.models.hf import param_leaves
from cft_jax.models.sharding import make_mesh
from cft_jax.train import resume
from cft_jax.training.checkpoint import Checkpointer
from cft_jax.training.metrics import read_jsonl
from cft_jax.training.state import TrainStep, abstract_params
from tests.trainer_runs import REPO, SMALL_RUN, trainer_env

LORA_RUN = [
    *SMALL_RUN,
    "--config.logging.tensorboard=false",
    "--config.lora.rank=4",
    "--config.lora.dropout=0.1",
    "--config.optimizer.lr=1e-2",
    "--config.export.lora=adapter",
]


def train(workdir: Path, cache: Path) -> None:
    args = [sys.executable, "-m", "cft_jax.train", f"--config.training.workdir={workdir}", *LORA_RUN]
    result = subprocess.run(
        args, cwd=REPO, env=trainer_env(cache), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def saved(workdir: Path, step: int, item: str) -> dict:
    return ocp.PyTreeCheckpointer().restore((workdir / "checkpoints" / str(step) / item).absolute())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Sharding info not provided")  # reading back as host arrays is the point
def test_a_lora_run_checkpoints_adapters_only_and_resumes_exactly(tmp_path):
    cache, straight, resumed = tmp_path / "xla_cache", tmp_path / "straight", tmp_path / "resumed"
    train(straight, cache)
    adapters = param_leaves(saved(straight, 6, "model"))
    assert {path[-1] for path in adapters} == {"lora_a", "lora_b"}
    assert len(adapters) == 14  # 7 projections x (A, B), each stacked over the layers
    moments = jax.tree.leaves(saved(straight, 6, "opt_state"))
    assert {m.shape for m in moments if np.ndim(m)} <= {a.shape for a in adapters.values()}
    peft_files = sorted(p.name for p in (straight / "hf" / "step_6").glob("adapter_*"))
    assert peft_files == ["adapter_config.json", "adapter_model.safetensors"]

    # The run as it stood once step 3 was saved; the resumed process trains steps 4-6 again.
    shutil.copytree(straight, resumed, ignore=shutil.ignore_patterns("6", "step_6"))
    train(resumed, cache)
    losses = {r["step"]: r["loss"] for r in read_jsonl(straight / "metrics.jsonl")}
    assert sorted(losses) == [1, 2, 3, 4, 5, 6] and losses[6] < losses[1]
    assert {r["step"]: r["loss"] for r in read_jsonl(resumed / "metrics.jsonl")} == losses
    for path, leaf in param_leaves(saved(resumed, 6, "model")).items():
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(adapters[path]), err_msg=str(path))
    export = Path("hf", "step_6", "adapter_model.safetensors")
    assert (resumed / export).read_bytes() == (straight / export).read_bytes()

    # The same checkpoint offered to a run whose base weights differ: refused, naming both.
    config = load_config(
        REPO / "configs" / "cpu_demo.py", [*LORA_RUN[2:], f"--config.training.workdir={resumed}"]
    )
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    graphdef, params, rest = abstract_params(config, ModelConfig.from_hf(config.model.init_config), mesh)
    step_fn = TrainStep.build(config, mesh, graphdef, rest, params, total_steps=6)
    meta = json.loads((straight / "checkpoints" / "6" / "meta" / "metadata").read_text())
    assert meta["lora"]["base_model"] == "random init (training.seed=0)"
    fingerprint = meta["lora"]["base_fingerprint"][:12]
    other_base = {**meta, "lora": {**meta["lora"], "base_fingerprint": "0" * 64}}
    checkpointer = Checkpointer(resumed / "checkpoints", keep=3, async_save=False)
    try:
        trained_on = (
            f"LoRA adapters on the base random init (training.seed=0) (weights fingerprint {fingerprint})"
        )
        with pytest.raises(ConfigError, match=re.escape(f"a checkpoint of {trained_on}, but this run is")):
            resume(checkpointer, step_fn, params, step_fn.abstract_opt_state(params), None, other_base)
    finally:
        checkpointer.close()
