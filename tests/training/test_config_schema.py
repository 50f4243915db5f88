"""The schema: every choice is a Literal in sync with the table that implements it, so a typo fails at
load naming the choices; and loading reads no file (`gs://` or missing paths load: preflight's business)."""

from __future__ import annotations

import typing

import pytest

from cft_jax.config import ConfigError, DataConfig, ModelSection, build_config, data_errors
from cft_jax.data.length import LENGTH_POLICIES
from cft_jax.data.records import FORMATS, OBJECTIVES
from cft_jax.data.templates import TEMPLATES
from cft_jax.models.attention import ATTENTION_IMPLS
from cft_jax.models.transformer import REMAT_POLICIES
from tests.training.conftest import TINY


def choices(section: type, name: str) -> list[str]:
    return list(typing.get_args(typing.get_type_hints(section)[name]))


@pytest.mark.parametrize(
    ("section", "name", "table"),
    [
        (ModelSection, "attention_impl", list(ATTENTION_IMPLS)),
        (ModelSection, "remat", list(REMAT_POLICIES)),
        (DataConfig, "format", ["auto", *FORMATS]),
        (DataConfig, "objective", list(OBJECTIVES)),
        (DataConfig, "template", list(TEMPLATES)),
        (DataConfig, "length_policy", list(LENGTH_POLICIES)),
    ],
)
def test_each_literal_lists_exactly_what_its_table_implements(section, name, table):
    assert choices(section, name) == table


@pytest.mark.parametrize(
    ("key", "value"),
    [("model.attention_impl", "splsh"), ("data.template", "chatm1"), ("data.length_policy", "cut")],
)
def test_a_mistyped_choice_fails_at_load_with_the_choices(key, value):
    section, name = key.split(".")
    with pytest.raises(ConfigError) as error:
        build_config({"model": {"init_config": TINY}}, [f"--config.{key}={value}"])
    known = choices(ModelSection if section == "model" else DataConfig, name)
    assert f"{key}={value!r}: must be one of {known}" in str(error.value)


@pytest.mark.parametrize("hf_path", ["gs://bucket/Qwen2.5-Math-7B", "/nowhere/Qwen2.5-Math-7B"])
def test_an_hf_path_loads_without_being_read(hf_path, monkeypatch):
    def no_io(*args, **kwargs):
        raise AssertionError("validation read a file")

    monkeypatch.setattr("builtins.open", no_io)
    config = build_config({"model": {"hf_path": hf_path}, "data": {"tokenizer": "/nowhere"}}, num_devices=8)
    assert config.model.hf_path == hf_path


def test_a_data_config_built_in_code_is_checked_like_a_loaded_one():
    bad = DataConfig(template="chatm1", seq_len=0, skip_bad=True)
    assert data_errors(bad) == [
        "data.template='chatm1': must be one of ['chatml', 'qwen25_math', 'llama3', 'raw', 'tokenizer']",
        "data.seq_len=0: must be > 0",
        "data.skip_bad=True: set data.rejects_path, the JSONL file skipped records go to",
    ]


def test_evaluating_needs_held_out_files():
    with pytest.raises(ConfigError, match=r"evaluation.every_steps=5 with data.eval_paths=\(\)"):
        build_config({"model": {"init_config": TINY}, "evaluation": {"every_steps": 5}})


def test_a_held_out_fraction_of_the_training_questions_can_be_the_eval_split():
    data = {"train_paths": ("a.jsonl", "b.jsonl"), "val_fraction": 0.05}
    config = build_config({"model": {"init_config": TINY}, "evaluation": {"every_steps": 5}, "data": data})
    assert config.data.val_fraction == 0.05
    with pytest.raises(ConfigError, match=r"data.val_fraction=0.05 with data.eval_paths=\('c.jsonl',\)"):
        build_config({"model": {"init_config": TINY}, "data": {**data, "eval_paths": ("c.jsonl",)}})
    with pytest.raises(ConfigError, match=r"data.train_weights=\(1.0,\): one weight per data.train_paths"):
        build_config({"model": {"init_config": TINY}, "data": data}, ["--config.data.train_weights=(1.0,)"])
