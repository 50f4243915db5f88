"""Bad HF checkpoints fail with a `CheckpointError` naming the file and the tensor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from cft_jax.models.config import ConfigError
from cft_jax.models.hf import load_hf
from cft_jax.models.safetensors_io import INDEX_FILE, CheckpointError


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_hf) -> Path:
    return tiny_hf("llama", tmp_path_factory.mktemp("tiny") / "hf")


@pytest.fixture
def broken(tiny_dir, tmp_path) -> Path:
    """A fresh copy of the tiny checkpoint to damage."""
    return Path(shutil.copytree(tiny_dir, tmp_path / "hf"))


def rewrite(directory: Path, change) -> Path:
    """Rewrites model.safetensors after `change(tensors)` edits the dict of tensors in place."""
    file = directory / "model.safetensors"
    tensors = load_file(file)
    change(tensors)
    save_file(tensors, file, metadata={"format": "pt"})
    return file


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        load_hf(tmp_path / "nowhere")


def test_missing_config(broken):
    (broken / "config.json").unlink()
    with pytest.raises(CheckpointError, match=f"{broken / 'config.json'}: missing"):
        load_hf(broken)


def test_missing_weights(broken):
    (broken / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=f"{broken}: no weights: expected model.safetensors"):
        load_hf(broken)


def test_missing_shard_named_by_index(broken):
    index = {"metadata": {}, "weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}
    (broken / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"'model.norm.weight' is in model-00002-of-00002.safetensors"):
        load_hf(broken)


def test_truncated_file(broken):
    file = broken / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=rf"{file}: truncated safetensors file: tensor '[\w.]+' ends"):
        load_hf(broken)


def test_tensor_of_the_wrong_shape(broken):
    name = "model.layers.1.self_attn.k_proj.weight"
    file = rewrite(broken, lambda t: t.update({name: np.zeros((8, 32), np.float32)}))
    with pytest.raises(
        CheckpointError, match=rf"{file}: tensor '{name}' has shape \[8, 32\], expected \[16, 32\]"
    ):
        load_hf(broken)


def test_unknown_tensor(broken):
    name = "model.layers.0.mlp.extra_proj.weight"
    file = rewrite(broken, lambda t: t.update({name: np.zeros((2, 2), np.float32)}))
    with pytest.raises(CheckpointError, match=rf"{file}: unknown tensor '{name}'"):
        load_hf(broken)


def test_layer_beyond_num_hidden_layers_is_unknown(broken):
    name = "model.layers.2.input_layernorm.weight"
    file = rewrite(broken, lambda t: t.update({name: np.zeros((32,), np.float32)}))
    with pytest.raises(CheckpointError, match=rf"{file}: unknown tensor '{name}'"):
        load_hf(broken)


def test_missing_tensor(broken):
    name = "model.layers.1.mlp.up_proj.weight"
    rewrite(broken, lambda t: t.pop(name))
    with pytest.raises(
        CheckpointError, match=rf"{broken}: tensor '{name}' \(our layers.mlp.up_proj.kernel\) is missing"
    ):
        load_hf(broken)


def test_unsupported_config_names_the_field(broken):
    config = json.loads((broken / "config.json").read_text())
    config["hidden_act"] = "gelu"
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="hidden_act"):
        load_hf(broken)
