"""Every shipped config loads, validates and plans (`--dry_run`); bad values fail naming their key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cft_jax.config import ConfigError, build_config, config_module, load_config
from cft_jax.data.pipeline import load_examples, training_tokenizer
from cft_jax.models.shapes import SHAPES
from cft_jax.train import dry_run_report, main
from tests.training.conftest import TINY

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# Each recipe's base model (its BASE_SHAPE), as its public config.json (cft_jax/models/shapes.py: only
# what the decoder reads, plus the keys every HF config carries).
HF_CLASSES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}
BASE_SHAPES = {
    path.stem: module.BASE_SHAPE
    for path in sorted(CONFIGS.glob("*.py"))
    if hasattr(module := config_module(path), "BASE_SHAPE")
}
ARCHITECTURES = {
    name: {**SHAPES[shape], "architectures": [HF_CLASSES[SHAPES[shape]["model_type"]]], "hidden_act": "silu"}
    for name, shape in BASE_SHAPES.items()
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_recipe_config_loads_validates_and_plans(name, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(ARCHITECTURES[name]))
    config = load_config(CONFIGS / f"{name}.py", [f"--config.model.hf_path={tmp_path}"], num_devices=16)
    assert config.training.global_batch == 512 and config.optimizer.lr == 5e-6
    report = dry_run_report(config, num_devices=16)
    assert "per-device memory estimate" in report and "tokens per step: " in report


@pytest.mark.parametrize("name", ["cpu_demo", "bench_smollm2_135m", "bench_qwen15b_gpu"])
def test_random_init_config_loads_validates_and_plans(name):
    config = load_config(CONFIGS / f"{name}.py", num_devices=4)
    assert "per-device memory estimate" in dry_run_report(config, num_devices=4)


def test_the_paper_recipe_is_what_the_paper_says(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(ARCHITECTURES["qwen7b_v5p"]))
    c = load_config(CONFIGS / "qwen7b_v5p.py", [f"--config.model.hf_path={tmp_path}"], num_devices=16)
    assert (c.optimizer.schedule, c.optimizer.warmup_ratio, c.optimizer.b2, c.optimizer.weight_decay) == (
        "cosine",
        0.1,
        0.999,
        0.0,
    )
    assert (c.data.seq_len, c.data.epochs, c.data.template, c.data.system_prompt, c.data.packing) == (
        2048,
        1,
        "chatml",
        "You are a helpful assistant.",
        False,
    )


def test_deepseek_recipe_tokenizes_chatml_as_llama_factory_did(tmp_path):
    """DeepSeek's tokenizer lacks ChatML tokens: the recipe adds <|im_end|> (id 100015) and trains on it."""
    (tmp_path / "config.json").write_text(json.dumps(ARCHITECTURES["deepseek_math_7b"]))
    data = tmp_path / "cft.jsonl"
    record = {
        "instruction": "Critique the solution.",
        "input": "Question: 1+1?\nSolution: 2",
        "output": "Correct.",
    }
    data.write_text(json.dumps(record) + "\n")
    overrides = [f"--config.model.hf_path={tmp_path}", f"--config.data.train_paths=('{data}',)"]
    config = load_config(CONFIGS / "deepseek_math_7b.py", overrides, num_devices=16)
    assert (config.data.tokenizer, config.data.template, config.data.chatml_add_im_end) == (
        "deepseek_llm",
        "chatml",
        True,
    )
    [example], report = load_examples(config.data)
    tokenizer = training_tokenizer(config.data)
    ids, mask = example["input_ids"].tolist(), example["loss_mask"].tolist()
    assert tokenizer.eos_token_id == 100015 and ids[-1] == 100015 and ids.count(100015) == 3
    assert tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m]) == "Correct.<|im_end|>"
    assert report.examples == 1


def test_cpu_demo_dry_run_prints_the_plan(capsys):
    main(["--config", str(CONFIGS / "cpu_demo.py"), "--dry_run", "--dry_run_devices", "8"])
    out = capsys.readouterr().out
    assert "mesh: data=1" in out and "steps: 40" in out


def test_command_line_overrides_are_typed():
    config = build_config(
        {"model": {"init_config": TINY}, "data": {"epochs": None}, "training": {"max_steps": 3}},
        [
            "--config.optimizer.lr=2e-6",
            "--config.checkpoint.async_save=false",
            "--config.data.train_paths=('a',)",
        ],
    )
    assert config.optimizer.lr == 2e-6 and config.checkpoint.async_save is False
    assert config.data.train_paths == ("a",)


@pytest.mark.parametrize(
    ("values", "overrides", "named"),
    [
        ({"optimizer": {"lrr": 1e-5}}, [], "optimizer.lrr: unknown config key; did you mean 'optimizer.lr'?"),
        ({"trainig": {"seed": 1}}, [], "trainig: unknown config key; did you mean 'training'?"),
        ({}, ["--config.training.global_batch=8.5"], "training.global_batch='8.5': must be int"),
        ({}, ["--config.optimizer.lr=fast"], "optimizer.lr='fast': cannot read 'fast' as a float"),
        ({"model": {"remat": "some"}}, [], "model.remat='some': must be one of"),
        ({"optimizer": {"warmup_ratio": 1.5}}, [], "optimizer.warmup_ratio=1.5: must be in [0, 1]"),
        ({"training": {"accumulation_steps": 3}}, [], "training.accumulation_steps=3: must divide"),
        ({"training": {"global_batch": 12}}, [], "training.global_batch=12: each micro-batch (12 sequences)"),
        ({"mesh": {"data": -1, "fsdp": -1}}, [], "each axis is >= 1, with at most one -1"),
        ({}, ["--config.training.seed"], "write --config.KEY=VALUE"),
    ],
)
def test_a_bad_value_fails_at_load_naming_its_key(values, overrides, named):
    values = {**values, "model": {"init_config": TINY, **values.get("model", {})}}
    with pytest.raises(ConfigError) as error:
        build_config(values, overrides, num_devices=8)
    assert named in str(error.value)


def test_every_bad_key_is_reported_at_once():
    with pytest.raises(ConfigError) as error:
        build_config({"model": {"init_config": TINY, "hf_pth": "x"}, "optimizer": {"b2": 1.0, "lr": -1.0}})
    message = str(error.value)
    assert "3 bad config value(s)" in message
    assert all(key in message for key in ("model.hf_pth", "optimizer.b2", "optimizer.lr"))
