"""The vLLM paths on this machine: vLLM's CPU build in .venv-vllm, fed the project's own exports.

The core's environment (this pytest process: JAX, transformers 5.2x) makes the inputs: the real
SmolLM2 export, tiny random Qwen2 / Qwen3 / Llama decoders exported by `export_hf`, a training run's
`hf/step_N` directories. `.venv-vllm` (made by `scripts/env_vllm.sh`; `scripts/test.sh` runs it
before the tests) runs `tests/vllm_cpu/driver.py` once for the session: every check in one process, so
vLLM is imported once and each engine starts in-process (~8 s for SmolLM2 on two cores, a few for
a tiny model). The tests here read what it observed and compare it with transformers, run here.

Without .venv-vllm the fixture makes it (`bash scripts/env_vllm.sh`, ~2 minutes); only when that
fails are the tests skipped, with its error as the reason, and under CI (CI=true) they fail instead.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.vllm_cpu.side_env import (
    ERRORS_COMMON,
    GENERATE,
    KV_HEAVY_LEN,
    NEW_TOKENS,
    PROBLEMS,
    PROMPT_IDS,
    PYTHON,
    REPO,
    SAMPLE,
    SAMPLE_DROP,
    SELECT,
    vllm_env,
)


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """.venv-vllm's python, the environment made (or refreshed) first when its lock changed."""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "env_vllm.sh")], capture_output=True, text=True, cwd=REPO
    )
    if done.returncode != 0 or not PYTHON.is_file():
        reason = f"scripts/env_vllm.sh could not make .venv-vllm (status {done.returncode}): "
        reason += (done.stderr or done.stdout)[-1500:]
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return PYTHON


def tiny_configs():
    """One tiny decoder per family the project exports; vLLM's CPU attention needs head_dim >= 32."""
    from cft_jax.models import ModelConfig

    shape = dict(vocab_size=49152, hidden_size=64, intermediate_size=96, num_layers=2, head_dim=32)
    return {
        # untied lm_head, GQA 2:1
        "llama": ModelConfig(model_type="llama", num_heads=2, num_kv_heads=1, **shape),
        # q/k/v biases, tied embeddings
        "qwen2": ModelConfig(
            model_type="qwen2",
            num_heads=2,
            num_kv_heads=1,
            attention_bias=True,
            tie_word_embeddings=True,
            **shape,
        ),
        # q/k norms, heads x head_dim (128) != hidden (64), GQA 4:2
        "qwen3": ModelConfig(model_type="qwen3", num_heads=4, num_kv_heads=2, qk_norm=True, **shape),
    }


def tiny_decoder(config, seed: int, *, spread: bool):
    """A random decoder; `spread` moves its weights off their init so greedy decoding has no near
    ties: matrices 10x, norm scales around 1 and biases random (not their 1 and 0). Unspread, its
    next-token distribution is near uniform: samples at temperature 1 differ."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from cft_jax.models import Decoder

    model = Decoder(config, rngs=nnx.Rngs(seed))
    if not spread:
        return model
    leaves, treedef = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = []
    for (path, leaf), key in zip(leaves, keys, strict=True):
        name = jax.tree_util.keystr(path)
        if "norm" in name:
            new.append(1 + 0.5 * jax.random.normal(key, leaf.shape, leaf.dtype))
        elif "bias" in name:
            new.append(0.5 * jax.random.normal(key, leaf.shape, leaf.dtype))
        else:
            new.append(leaf * jnp.asarray(10, leaf.dtype))
    nnx.update(model, jax.tree_util.tree_unflatten(treedef, new))
    return model


@pytest.fixture(scope="session")
def vllm_inputs(smollm2_hf_dir, tmp_path_factory) -> dict:
    """What the driver runs on, all written by the project's `export_hf` (SmolLM2's by `from-gguf`),
    with SmolLM2's tokenizer and chat template."""
    import dataclasses

    from cft_jax.models import export_hf

    root = tmp_path_factory.mktemp("vllm")
    configs = tiny_configs()
    models = {f: tiny_decoder(c, seed=0, spread=True) for f, c in configs.items()}
    families = {
        f: str(export_hf(models[f], configs[f], root / f, tokenizer_dir=smollm2_hf_dir)) for f in models
    }
    # A training run's layout: two exports of the same shape, different weights.
    run = root / "run"
    for step, seed in (("step_1", 1), ("step_2", 2)):
        model = tiny_decoder(configs["llama"], seed=seed, spread=True)
        export_hf(model, configs["llama"], run / "hf" / step, tokenizer_dir=smollm2_hf_dir)
    sampler = export_hf(
        tiny_decoder(configs["llama"], seed=3, spread=False), configs["llama"], root / "sampler",
        tokenizer_dir=smollm2_hf_dir,
    )  # fmt: skip
    # The Qwen3 export again, with a maximum length whose KV cache is 2 GiB (2 layers x K and V x 2
    # heads x 32 x 4 bytes = 1 KiB a token, x 2**21 tokens): twice the KV_CACHE_GIB an engine gets.
    long = dataclasses.replace(configs["qwen3"], max_position_embeddings=KV_HEAVY_LEN)
    kv_heavy = export_hf(models["qwen3"], long, root / "kv_heavy", tokenizer_dir=smollm2_hf_dir)
    problems = root / "problems.jsonl"
    problems.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS), encoding="utf-8")
    return {
        "root": root,
        "smollm2": smollm2_hf_dir,
        "families": families,
        "run": run,
        "sampler": sampler,
        "kv_heavy": kv_heavy,
        "problems": problems,
    }


@pytest.fixture(scope="session")
def vllm_results(vllm_python, vllm_inputs) -> dict:
    """What tests/vllm_cpu/driver.py observed, every check run once in one .venv-vllm process."""
    root = vllm_inputs["root"]
    plan = {
        "checks": ["generate", "sample", "select", "families", "errors"],
        "work": str(root / "work"),
        "smollm2": str(vllm_inputs["smollm2"]),
        "sampler": str(vllm_inputs["sampler"]),
        "generate": GENERATE,
        "problems": str(vllm_inputs["problems"]),
        "sample": SAMPLE,
        "sample_drop": SAMPLE_DROP,
        "run": str(vllm_inputs["run"]),
        "select": SELECT,
        "families": vllm_inputs["families"],
        "prompt_ids": PROMPT_IDS,
        "new_tokens": NEW_TOKENS,
        "errors": {
            case: ["generate", "--backend", "vllm", "--out", str(root / "work" / case), *ERRORS_COMMON, *argv]
            for case, argv in (
                ("too_long", ["--model", str(vllm_inputs["smollm2"]), "--max-model-len", "100000"]),
                ("kv", ["--model", str(vllm_inputs["kv_heavy"]), "--max-model-len", str(KV_HEAVY_LEN)]),
            )
        },
    }
    (root / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    results = root / "results.json"
    done = subprocess.run(
        [str(vllm_python), str(Path(__file__).with_name("driver.py")), str(root / "plan.json"), str(results)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=vllm_env(),
        timeout=600,
    )
    (root / "driver.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    assert done.returncode == 0, (
        f"tests/vllm_cpu/driver.py failed (log: {root / 'driver.log'}):\n{done.stderr[-4000:]}"
    )
    return json.loads(results.read_text(encoding="utf-8"))
