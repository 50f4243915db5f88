"""Every recipe in configs/ trains two steps, as written, on a tiny random model of its family.

Each recipe keeps its own data format, template, tokenizer, system prompt, length policy, optimizer,
remat and dtypes; only the paths (checkpoint, data, work dir), the model's size (a checkpoint with
the family's real vocabulary, tie and RoPE, but hidden 32 and 1 layer), the batch (8 rows, one per
simulated device, no accumulation), the sequence length (128) and the run's length (2 updates) are
overridden, and the validation inside training shrunk to 2 problems x 4 new tokens. The paper
recipe runs as a pod user would: its model and data by their real hub ids, from
a hub on 127.0.0.1 (tests/hub_server.py), its work dir in a bucket (tests/gcs_server.py), then
`eval select` over its exports with the transformers backend. In one process, one after the other:
each compiles its own step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from etils import epath

from cft_jax.assets.tokenizers import tokenizer_dir
from cft_jax.config import config_module, load_config
from cft_jax.data.records import CFT_INSTRUCTION
from cft_jax.evaluation import cli as eval_cli
from cft_jax.models.config import ModelConfig
from cft_jax.models.hf import export_hf
from cft_jax.models.shapes import SHAPES
from cft_jax.train import train
from tests.training.conftest import tiny_model
from tests.training.test_config_recipes import BASE_SHAPES, CONFIGS

TINY_SIZE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
}
ROWS = 16  # two batches of 8


def records(fmt: str) -> list[dict]:
    """ROWS short critiques in the recipe's data format (WebInstruct-CFT's alpaca, one-shot's messages)."""
    out = []
    for i in range(ROWS):
        question, solution = f"What is {i} + {i}?", f"{i} + {i} = {2 * i}."
        critique = f"Critique:\nThe sum is {2 * i}. Conclusion: right [END]"
        if fmt == "alpaca":
            out.append(
                {
                    "instruction": CFT_INSTRUCTION,
                    "input": f"Question:\n{question}\n\nSolution:\n{solution}\n",
                    "output": critique,
                }
            )
        else:
            prompt = f"{CFT_INSTRUCTION}Question:\n{question}\n\nSolution:\n{solution}\n\n"
            out.append(
                {
                    "messages": [
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": critique},
                    ]
                }
            )
    return out


def tiny_checkpoint(name: str, recipe: dict, out: Path) -> Path:
    config = ModelConfig.from_hf({**SHAPES[BASE_SHAPES[name]], **TINY_SIZE})
    return Path(
        export_hf(tiny_model(config), config, out, tokenizer_dir=tokenizer_dir(recipe["data"]["tokenizer"]))
    )


# The two one-shot recipes differ only in what this test overrides (the model's path and size, the work
# dir, the accumulation): training the 7B one as well would run the 1.5B one's step again.
SAME_AS = {"oneshot_qwen_math_7b": "oneshot_qwen_math_1p5b"}
OVERRIDDEN = {"model": ("hf_path",), "training": ("workdir", "accumulation_steps")}


def test_the_recipes_left_out_differ_only_in_what_the_test_overrides():
    def kept(name: str) -> dict:
        recipe = config_module(CONFIGS / f"{name}.py").get_config()
        return {
            section: {k: v for k, v in keys.items() if k not in OVERRIDDEN.get(section, ())}
            for section, keys in recipe.items()
        }

    for name, twin in SAME_AS.items():
        assert kept(name) == kept(twin), name


@pytest.mark.parametrize("name", sorted(set(BASE_SHAPES) - set(SAME_AS)))
def test_every_recipe_trains_two_steps_on_a_tiny_model_of_its_family(name, tmp_path, request):
    recipe = config_module(CONFIGS / f"{name}.py").get_config()
    checkpoint = tiny_checkpoint(name, recipe, tmp_path / "model")
    data = tmp_path / "train.json"
    data.write_text(json.dumps(records(recipe["data"]["format"])))
    hf_path, train_path, workdir = str(checkpoint), str(data), str(tmp_path / "run")
    if name == "qwen7b_v5p":  # the paper recipe: its model and data by hub id, its run in a bucket
        hub = request.getfixturevalue("hub")
        bucket = request.getfixturevalue("bucket")
        workdir = "gs://cft/run"
        hub.add_model("Qwen/Qwen2.5-Math-7B", hub.files_of(checkpoint))
        hub.add_dataset("TIGER-Lab/WebInstruct-CFT", {"WebInstruct-CFT-50K.json": data.read_bytes()})
        hf_path = recipe["model"]["hf_path"]
        train_path = "hf://datasets/TIGER-Lab/WebInstruct-CFT/WebInstruct-CFT-50K.json"
    overrides = [
        f"--config.model.hf_path={hf_path}",
        f"--config.data.train_paths=('{train_path}',)",
        f"--config.training.workdir={workdir}",
        "--config.training.global_batch=8",
        "--config.training.accumulation_steps=1",
        "--config.training.max_steps=2",
        "--config.data.seq_len=128",
        "--config.data.num_workers=0",
        "--config.logging.progress_bar=false",
        "--config.logging.tensorboard=false",
        # The recipes' validation inside training (every 2 updates on MATH-500 for the CFT ones), shrunk.
        "--config.evaluation.generate_limit=2",
        "--config.evaluation.max_new_tokens=4",
        "--config.evaluation.generate_batch_size=8",
    ]
    config = load_config(CONFIGS / f"{name}.py", overrides, num_devices=8)
    record = train(config)
    assert record["loss"] > 0
    metrics = epath.Path(workdir) / "metrics.jsonl"
    logged = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [1, 2]
    validated = [2] if config.evaluation.generate_every_steps == 2 else []  # the CFT recipes: at step 2
    assert [r["step"] for r in logged if "val_accuracy" in r] == validated
    if name == "qwen7b_v5p":
        # Its export every 2 updates carries the hub checkpoint's tokenizer, and `eval select` on the
        # bucket scores it on the recipe's benchmark (MATH-500, from the run's metadata).
        assert ("cft", "run/hf/step_2/tokenizer.json") in bucket.objects
        # Its validation at step 2 (two MATH-500 problems here) picked that step and exported it.
        best = json.loads(bucket.objects[("cft", "run/best.json")].data)
        assert (best["step"], best["benchmark"], best["n"]) == (2, "math-500", 2)
        assert ("cft", "run/hf/best/config.json") in bucket.objects
        select = ["--backend", "transformers", "--limit", "1", "--max-new-tokens", "2", "--workers", "1"]
        eval_cli.main(["select", "--run", workdir, *select])
        selection = json.loads(bucket.objects[("cft", "run/eval/selection.json")].data)
        assert selection["benchmark"] == "math-500"
        assert selection["best_dir"] == "gs://cft/run/hf/step_2"
