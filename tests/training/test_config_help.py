"""`python -m cft_jax.train --help` lists every config key with its type, default and description; an
unknown key is answered with the key it meant, also under the names other trainers use."""

from __future__ import annotations

import sys

import pytest

from cft_jax.config import COMMON_NAMES, ConfigError, TrainConfig, build_config
from cft_jax.train import main
from cft_jax.training.config_help import config_keys, field_comments
from tests.training.conftest import TINY


def schema_keys() -> list[str]:
    return [f"{section}.{name}" for section, fields in TrainConfig().to_dict().items() for name in fields]


def test_help_lists_every_key_with_its_type_default_and_description(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    at = lines.index("  optimizer.lr: float = 5e-06")
    assert lines[at + 1].strip() == "the peak learning rate"
    assert "  model.remat: {none,full,save_dots,save_dots_no_batch,offload} = 'full'" in lines
    assert "  data.train_paths: list of str = ()" in lines and "  data.epochs: int or None = 1" in lines
    listed = [line.split(":")[0].strip() for line in lines if line.startswith("  ") and ": " in line]
    assert set(schema_keys()) <= set(listed)


def test_every_key_has_a_description_in_config_py():
    """The description is the field's comment: a key added to config.py without one fails here."""
    assert [key for key, _, _, description in config_keys() if not description] == []


def test_a_comment_is_the_one_on_the_field_s_line_else_the_lines_right_above():
    source = (
        "class S:\n"
        "    a: int = 1  # on its line\n"
        "    # above, first line\n"
        "    # and second\n"
        "    b: str = '#not a comment'\n"
        "\n"
        "    c: int = 2\n"
    )
    assert field_comments(source) == {("S", "a"): "on its line", ("S", "b"): "above, first line and second"}


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("training.learning_rate", "'optimizer.lr'"),
        ("learning_rate", "'optimizer.lr'"),
        ("training.lr", "'optimizer.lr'"),
        ("training.learnin_rate", "'optimizer.lr'"),
        ("optimizer.per_device_train_batch_size", "'training.global_batch' (sequences per update"),
        ("training.gradient_accumulation_steps", "'training.accumulation_steps'"),
        ("training.num_train_epochs", "'data.epochs'"),
        ("optimizer.warmup_ratio_", "'optimizer.warmup_ratio'"),
        ("data.cutoff_len", "'data.seq_len'"),
        ("training.lr_scheduler_type", "'optimizer.schedule'"),
        ("training.weight_decay", "'optimizer.weight_decay'"),
        ("optimizer.max_steps", "'training.max_steps'"),
        ("optimizer.seed", "'data.seed' or 'training.seed'"),
        ("training.globl_batch", "'training.global_batch'"),
        ("trainig.seed", "'training'"),
    ],
)
def test_an_unknown_key_is_answered_with_the_key_it_meant(key, meant):
    with pytest.raises(ConfigError) as error:
        build_config({"model": {"init_config": TINY}}, [f"--config.{key}=1"])
    named = key if key != "trainig.seed" else "trainig"
    assert f"{named}: unknown config key; did you mean {meant}" in str(error.value)


def test_every_common_name_points_at_a_real_key():
    assert {target.split(" ")[0] for target in COMMON_NAMES.values()} <= set(schema_keys())


def test_asking_for_wandb_without_it_installed_fails_at_load_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what an environment without wandb answers
    with pytest.raises(ConfigError) as error:
        build_config({"model": {"init_config": TINY}, "logging": {"wandb_project": "cft"}})
    assert "logging.wandb_project='cft': W&B is not installed; pip install 'cft_jax[wandb]'" in str(
        error.value
    )
