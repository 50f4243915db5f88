"""`select` as a pod user runs it: a `gs://` run, the recipe's benchmark from the run's metadata, one
model loaded at a time; a clear error without vLLM; `export.keep` pruning old exports but not the best.

The model is a tiny random Qwen2 (hidden 8, one layer) with the shipped Qwen2.5 tokenizer, saved by
transformers, scored by the real transformers backend; the bucket is the local GCS server
(tests/gcs_server.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from etils import epath

from cft_jax.errors import InputError
from cft_jax.evaluation import backends, cli
from cft_jax.schema import read_jsonl
from cft_jax.training.exports import prune_exports


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> Path:
    """An HF directory as the trainer exports one: config, safetensors, generation config, tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from cft_jax.assets.tokenizers import tokenizer_dir

    out = tmp_path_factory.mktemp("tiny_export")
    shape = {"hidden_size": 8, "intermediate_size": 16, "num_attention_heads": 2, "num_key_value_heads": 1}
    config = Qwen2Config(vocab_size=151936, num_hidden_layers=1, tie_word_embeddings=True, **shape)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir("qwen2.5")).save_pretrained(out)
    return out


def upload(bucket, local: Path, prefix: str) -> None:
    for path in local.iterdir():
        bucket.put("cft", f"{prefix}/{path.name}", path.read_bytes())


SELECT = ["--backend", "transformers", "--limit", "1", "--max-new-tokens", "2", "--workers", "1"]


def test_select_scores_a_gs_run_on_its_recipes_benchmark_one_model_at_a_time(
    bucket, tiny_export, monkeypatch, capsys
):
    for step in ("step_10", "step_2"):
        upload(bucket, tiny_export, f"run/hf/{step}")
    bucket.put("cft", "run/run.json", json.dumps({"select_benchmark": "gsm8k"}).encode())
    events = []
    real_init, real_close = backends.TransformersBackend.__init__, backends.TransformersBackend.close

    def spy_init(self, model_dir, **options):
        events.append(("load", Path(model_dir).name, Path(model_dir).is_dir()))
        real_init(self, model_dir, **options)

    def spy_close(self):
        events.append(("close",))
        real_close(self)

    monkeypatch.setattr(backends.TransformersBackend, "__init__", spy_init)
    monkeypatch.setattr(backends.TransformersBackend, "close", spy_close)

    cli.main(["select", "--run", "gs://cft/run", *SELECT])

    # Staged on local disk, loaded, closed before the next one loads; in step order.
    assert events == [("load", "step_2", True), ("close",), ("load", "step_10", True), ("close",)]
    selection = json.loads(bucket.objects[("cft", "run/eval/selection.json")].data)
    assert selection["benchmark"] == "gsm8k"  # the recipe's, from run.json: no --benchmark given
    assert set(selection["accuracy"]) == {"step_2", "step_10"}
    assert selection["best"] == "step_2"  # identical weights: the tie goes to the earlier export
    assert selection["best_dir"] == "gs://cft/run/hf/step_2"
    # The staged copies are gone (a 7B export is 15 GB of local disk); the responses stay locally.
    mirror = Path(os.environ["CFT_JAX_CACHE"]) / "remote" / "gs" / "cft" / "run"
    assert not (mirror / "hf").exists() or not any((mirror / "hf").iterdir())
    assert (mirror / "eval" / "step_10" / "gsm8k.jsonl").is_file()
    assert bucket.unhandled == []


def test_generate_scores_a_gs_checkpoint_into_a_local_directory(bucket, tiny_export, tmp_path):
    upload(bucket, tiny_export, "ckpt")
    command = ["generate", "--model", "gs://cft/ckpt", "--benchmarks", "gsm8k", *SELECT]
    with pytest.raises(InputError, match="give a local directory"):
        cli.main([*command, "--out", "gs://cft/out"])
    cli.main([*command, "--out", str(tmp_path / "out")])
    (record,) = [r for _, r in read_jsonl(tmp_path / "out" / "gsm8k.jsonl")]
    assert record["provenance"]["model"] == "gs://cft/ckpt" and isinstance(record["correct"], bool)


def test_select_without_a_recipe_benchmark_asks_for_one(tmp_path):
    (tmp_path / "hf" / "step_1").mkdir(parents=True)
    (tmp_path / "hf" / "step_1" / "config.json").write_text("{}")
    with pytest.raises(InputError, match=r"run.json.*--benchmark"):
        cli.main(["select", "--run", str(tmp_path), *SELECT])
    (tmp_path / "run.json").write_text(json.dumps({"select_benchmark": "math-5000"}))
    with pytest.raises(InputError, match=r"select_benchmark 'math-5000' is not one of"):
        cli.main(["select", "--run", str(tmp_path), *SELECT])


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_missing_vllm_names_the_extra_and_the_other_backends(tmp_path):
    with pytest.raises(InputError) as error:
        cli.main(["generate", "--model", str(tmp_path), "--out", str(tmp_path / "out"), "--limit", "1"])
    message = str(error.value)
    assert "cft_jax[vllm]" in message and "scripts/env_vllm.sh" in message
    assert "--backend transformers" in message and "--backend openai" in message


@pytest.mark.parametrize("where", ["local", "gs"])
def test_export_keep_prunes_old_exports_but_never_the_best(where, tmp_path, request):
    if where == "gs":
        request.getfixturevalue("bucket")
        workdir = epath.Path("gs://cft/run")
    else:
        workdir = epath.Path(tmp_path / "run")
    for step in (2, 4, 6, 8):
        (workdir / "hf" / f"step_{step}").mkdir(parents=True, exist_ok=True)
        (workdir / "hf" / f"step_{step}" / "config.json").write_text("{}")
    (workdir / "hf" / "step_10").mkdir(parents=True, exist_ok=True)  # being written: no config.json yet
    (workdir / "hf" / "step_10" / "model.safetensors").write_text("partial")
    (workdir / "eval").mkdir(parents=True, exist_ok=True)
    (workdir / "eval" / "selection.json").write_text(json.dumps({"best": "step_2"}))

    assert prune_exports(workdir, keep=2) == ["step_4"]
    assert prune_exports(workdir, keep=0) == []  # 0 keeps them all
    left = sorted(p.name for p in (workdir / "hf").iterdir())
    assert left == ["step_10", "step_2", "step_6", "step_8"]
