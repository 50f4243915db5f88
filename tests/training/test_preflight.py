"""Preflight: each file a config names that is missing, unreadable or at odds with the rest fails before
anything is loaded or compiled, naming its config key, its value and the fix; all of them at once.

Every config here is the CPU demo's (a random-init model with the Qwen2.5 vocabulary, the shipped
critiques) with one thing broken; none of these tests builds a model or compiles a step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cft_jax import train as train_module
from cft_jax.config import ConfigError, TrainConfig, load_config
from cft_jax.train import main, train
from cft_jax.training.preflight import preflight
from tests.training.test_config_recipes import ARCHITECTURES, CONFIGS

GOOD_CRITIQUE = {"id": "a", "question": "1+1?", "solution": "2", "critique": "Right.", "verdict": "right"}


def demo(*overrides: str) -> TrainConfig:
    return load_config(CONFIGS / "cpu_demo.py", list(overrides))


def jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def problems(config: TrainConfig, **checks: bool) -> str:
    with pytest.raises(ConfigError) as error:
        preflight(config, **checks)
    return str(error.value)


def test_the_demo_config_passes():
    preflight(demo())


def test_a_missing_hf_path_is_named(tmp_path):
    config = demo("--config.model.init_config={}", f"--config.model.hf_path={tmp_path / 'nowhere'}")
    assert f"model.hf_path={str(tmp_path / 'nowhere')!r}: no such directory (local or gs://)" in problems(
        config
    )


def test_an_hf_path_without_config_json_is_named(tmp_path):
    config = demo("--config.model.init_config={}", f"--config.model.hf_path={tmp_path}")
    assert f"model.hf_path={str(tmp_path)!r}: no config.json in it" in problems(config)


def test_an_init_config_the_decoder_cannot_build_is_named():
    config = demo("--config.model.init_config.model_type='gpt2'")
    assert "model.init_config: " in problems(config)


def test_a_tokenizer_that_does_not_load_is_named(tmp_path):
    config = demo(f"--config.data.tokenizer={tmp_path}")
    assert f"data.tokenizer: tokenizer {str(tmp_path)!r}: {tmp_path} has none of" in problems(config)


def test_a_model_vocabulary_smaller_than_the_tokenizer_fails_here_not_as_a_nan_loss():
    config = demo("--config.model.init_config.vocab_size=1000")
    assert (
        "data.tokenizer='qwen2.5': 151665 tokens (ids 0..151664), but the model's embedding has "
        "vocab_size=1000 rows" in problems(config)
    )


def test_a_pad_id_past_the_embedding_is_named():
    config = demo("--config.data.pad_id=151936")
    assert "data.pad_id=151936: no row in the model's embedding (vocab_size=151936)" in problems(config)


def test_the_deepseek_recipe_refuses_a_model_without_a_row_for_im_end(tmp_path):
    small = {**ARCHITECTURES["deepseek_math_7b"], "vocab_size": 100015}
    (tmp_path / "config.json").write_text(json.dumps(small))
    config = load_config(CONFIGS / "deepseek_math_7b.py", [f"--config.model.hf_path={tmp_path}"])
    assert "data.chatml_add_im_end=True: <|im_end|> gets token id 100015" in problems(config, data=False)


def test_the_tokenizer_template_needs_a_tokenizer_with_a_chat_template():
    config = demo(
        "--config.data.template=tokenizer",
        "--config.data.tokenizer=deepseek_llm",
        "--config.model.init_config.vocab_size=102400",
    )
    message = problems(config, data=False)
    assert "data.template='tokenizer' with data.tokenizer='deepseek_llm': " in message
    assert "has no chat template; use template 'chatml' or 'raw', or a tokenizer that has one" in message


def test_chatml_on_a_tokenizer_without_chatml_tokens_names_the_switch():
    config = demo("--config.data.tokenizer=llama3", "--config.model.init_config.vocab_size=128256")
    assert "set data.chatml_add_im_end=True" in problems(config, data=False)


def test_a_missing_training_file_is_named(tmp_path):
    config = demo(f"--config.data.train_paths=('{tmp_path / 'nowhere.jsonl'}',)")
    assert f"data.train_paths[0]: {tmp_path / 'nowhere.jsonl'}: no such file or directory" in problems(config)


def test_a_bad_first_record_is_named_with_its_line(tmp_path):
    path = jsonl(tmp_path / "c.jsonl", [GOOD_CRITIQUE, {"id": "b", "question": "2+2?", "solution": "4"}])
    config = demo(f"--config.data.train_paths=('{path}',)")
    assert f"data.train_paths[0]: {path}:2: field 'critique': missing" in problems(config)


def test_only_the_head_of_a_file_is_read(tmp_path):
    records = [GOOD_CRITIQUE] * 3 + [{"id": "b"}]
    path = jsonl(tmp_path / "c.jsonl", records)
    preflight(demo(f"--config.data.train_paths=('{path}',)"))


def test_no_training_data_is_named():
    assert "data.train_paths=(): no training data" in problems(demo("--config.data.train_paths=()"))


def test_a_missing_held_out_file_is_named_when_evaluating(tmp_path):
    config = demo(
        f"--config.data.eval_paths=('{tmp_path / 'val.jsonl'}',)", "--config.evaluation.every_steps=5"
    )
    assert f"data.eval_paths[0]: {tmp_path / 'val.jsonl'}: no such file" in problems(config)


def test_every_problem_is_listed_at_once(tmp_path):
    config = demo(
        "--config.model.init_config.vocab_size=1000",
        "--config.data.template=tokenizer",
        "--config.data.tokenizer=deepseek_llm",
        f"--config.data.train_paths=('{tmp_path / 'nowhere.jsonl'}',)",
    )
    message = problems(config)
    assert message.startswith("preflight: 3 problem(s)")
    assert all(key in message for key in ("data.tokenizer=", "data.template=", "data.train_paths[0]"))


def test_train_fails_at_preflight_before_the_model_is_built(monkeypatch):
    def build_model(*args):
        raise AssertionError("the model was built")

    monkeypatch.setattr(train_module, "build_model", build_model)
    with pytest.raises(ConfigError, match="vocab_size=1000 rows"):
        train(demo("--config.model.init_config.vocab_size=1000"))


def test_dry_run_checks_the_model_and_tokenizer_but_not_the_data(tmp_path, capsys):
    def dry_run(*overrides: str) -> None:
        main(["--config", str(CONFIGS / "cpu_demo.py"), "--dry_run", "--dry_run_devices", "8", *overrides])

    dry_run("--config.training.max_steps=0", f"--config.data.train_paths=('{tmp_path / 'elsewhere.jsonl'}',)")
    assert "(data not found here)" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="vocab_size=1000 rows"):
        dry_run("--config.model.init_config.vocab_size=1000")


def test_a_gs_hf_path_is_checked_in_the_bucket(bucket):
    bucket.put("cft", "base/config.json", json.dumps(ARCHITECTURES["oneshot_qwen_math_1p5b"]).encode())
    preflight(demo("--config.model.init_config={}", "--config.model.hf_path=gs://cft/base"), data=False)
    config = demo("--config.model.init_config={}", "--config.model.hf_path=gs://cft/elsewhere")
    assert "model.hf_path='gs://cft/elsewhere': no such directory" in problems(
        config, tokenizer=False, data=False
    )


def test_a_run_whose_model_and_data_are_in_a_bucket_is_planned_from_there(bucket, capsys):
    """The same path abstraction as loading: a gs:// model and data are checked and counted in place."""
    from cft_jax.data import asset_path

    bucket.put("cft", "base/config.json", json.dumps(ARCHITECTURES["oneshot_qwen_math_1p5b"]).encode())
    bucket.put("cft", "data/critiques.jsonl.gz", asset_path("realcritic_critiques").read_bytes())
    main(
        [
            "--config", str(CONFIGS / "cpu_demo.py"), "--dry_run", "--dry_run_devices", "8",
            "--config.model.init_config={}", "--config.model.hf_path=gs://cft/base",
            "--config.data.train_paths=('gs://cft/data/critiques.jsonl.gz',)",
            "--config.training.max_steps=0",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "model: qwen2, 1.5" in out and "steps: 67 (532 rows per epoch, 67 batches)" in out
