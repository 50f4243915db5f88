"""YAML config files load as Python ones do, and their bad keys and values are named with file:line;
list keys are set on the command line without Python literals."""

from __future__ import annotations

from pathlib import Path

import pytest

from cft_jax.config import ConfigError, build_config, load_config
from tests.training.conftest import TINY

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_the_yaml_recipe_and_the_python_recipe_resolve_to_the_same_config():
    from_yaml, from_python = load_config(CONFIGS / "qwen7b_v5p.yaml"), load_config(CONFIGS / "qwen7b_v5p.py")
    assert from_yaml == from_python
    # Read as YAML 1.1 alone, `5e-6` would be a string and every tuple a list: the two must be typed alike.
    assert from_yaml.optimizer.lr == 5e-6 and from_yaml.data.train_paths == ("data/WebInstruct-CFT-50K.json",)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_each_bad_key_and_value_of_a_yaml_file_is_named_with_its_line(tmp_path):
    path = write(
        tmp_path,
        "model:\n"
        "  init_config: {hidden_size: 64}\n"
        "optimizer:\n"
        "  lrr: 1e-5\n"
        "  warmup_ratio: 1.5\n"
        "training:\n"
        "  learning_rate: 3e-6\n"
        "  global_batch: eight\n"
        "data:\n"
        "  seq_len: 4096\n",
    )
    with pytest.raises(ConfigError) as error:
        load_config(path, ["--config.data.seq_len=0"])
    message = str(error.value)
    assert message.startswith(f"{path}: 5 bad config value(s):")
    assert f"{path}:4: optimizer.lrr: unknown config key; did you mean 'optimizer.lr'?" in message
    assert f"{path}:5: optimizer.warmup_ratio=1.5: must be in [0, 1]" in message
    assert f"{path}:7: training.learning_rate: unknown config key; did you mean 'optimizer.lr'?" in message
    assert f"{path}:8: training.global_batch='eight': must be int, got str" in message
    # The override, not the file, set the bad seq_len: no line of the file is blamed for it.
    assert "\n  data.seq_len=0: must be > 0" in message


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("optimizer:\n  lr: [1e-5\n", "run.yaml:3: not valid YAML"),
        (
            "optimizer:\n  lr: 1e-5\n  b1: 0.8\n  lr: 2e-5\n",
            "run.yaml:4: optimizer.lr: given twice (first on line 2)",
        ),
        ("- model\n- data\n", "run.yaml:1: the file must be a mapping of sections"),
        ("model: checkpoints/Qwen\n", "run.yaml:1: model='checkpoints/Qwen': a section, not a value"),
    ],
)
def test_a_broken_yaml_file_is_named_with_its_line(tmp_path, text, named):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    assert named in str(error.value)


def test_an_empty_yaml_file_is_the_defaults(tmp_path):
    config = load_config(write(tmp_path, "# nothing yet\n"), ["--config.model.init_config.hidden_size=64"])
    assert config.model.init_config == {"hidden_size": 64} and config.optimizer.lr == 5e-6


def test_a_missing_yaml_file_is_named():
    with pytest.raises(ConfigError, match="nowhere.yaml: no such config file"):
        load_config("nowhere.yaml")


@pytest.mark.parametrize(
    ("text", "paths"),
    [
        ("a.jsonl,b.jsonl", ("a.jsonl", "b.jsonl")),
        ("data/x.jsonl", ("data/x.jsonl",)),
        ('["a.jsonl", "b.jsonl"]', ("a.jsonl", "b.jsonl")),
        ("('a.jsonl',)", ("a.jsonl",)),
        ("", ()),
    ],
)
def test_a_list_key_is_set_as_a_b_or_json_or_a_python_literal(text, paths):
    config = build_config({"model": {"init_config": TINY}}, [f"--config.data.train_paths={text}"])
    assert config.data.train_paths == paths


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('["a.jsonl", 3]', "data.train_paths='[\"a.jsonl\", 3]': item 1 (3): must be str, got int"),
        ("[a.jsonl", "cannot read '[a.jsonl' as a list: write a,b or JSON"),
    ],
)
def test_a_bad_list_names_the_item_or_the_forms(text, named):
    with pytest.raises(ConfigError) as error:
        build_config({"model": {"init_config": TINY}}, [f"--config.data.train_paths={text}"])
    assert named in str(error.value)
