"""A vLLM failure reaches the user as one line naming the cause and the knob, never a traceback.

A bad directory is refused by `python -m cft_jax.eval|critique` run in .venv-vllm as a user runs it
(before vLLM is imported: fast); the engine's own failures are run by the driver (one vLLM import)
through the same `run_cli`, with everything the process wrote to stderr captured.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.vllm_cpu.side_env import KV_CACHE_GIB, KV_HEAVY_LEN, run_side_tool

EVAL = ["cft_jax.eval", "generate", "--backend", "vllm", "--benchmarks", "gsm8k", "--limit", "1"]


def error_line(done) -> str:
    """The one `error:` line of a command that failed on its input (status 2), with no traceback."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize("case", ["missing", "no_config", "no_weights"])
def test_a_bad_model_dir_is_named_with_what_it_lacks(case, vllm_python, tmp_path, smollm2_hf_dir):
    model = tmp_path / "ckpt"
    if case != "missing":
        model.mkdir()
    if case == "no_weights":
        (model / "config.json").write_text((smollm2_hf_dir / "config.json").read_text())
    line = error_line(run_side_tool(*EVAL, "--model", str(model), "--out", str(tmp_path / "out")))
    expected = {"missing": "no such directory", "no_config": "no config.json", "no_weights": "no weights"}[
        case
    ]
    assert f"--model {model}: {expected}" in line and "RUN/hf/step_N" in line


def test_the_jax_backend_from_the_side_tools_environment_says_where_to_run_it(vllm_python, tmp_path):
    argv = [
        "cft_jax.eval",
        "generate",
        "--backend",
        "jax",
        "--model",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    assert "run this command from the core's .venv" in error_line(run_side_tool(*argv))


def test_critique_sample_names_a_bad_model_dir_too(vllm_python, tmp_path, vllm_inputs):
    argv = ["cft_jax.critique", "sample", "--problems", str(vllm_inputs["problems"])]
    argv += ["--out", str(tmp_path / "s.jsonl"), "--backend", "vllm", "--model", str(tmp_path / "nowhere")]
    done = run_side_tool(*argv)
    assert "no such directory" in error_line(done)


def captured_error_line(result: dict) -> str:
    """`error_line` of a command the driver ran through `run_cli`, its file descriptor 2 captured."""
    return error_line(SimpleNamespace(returncode=result["status"], stderr=result["stderr"], stdout=""))


def test_out_of_kv_cache_names_the_cause_and_both_knobs(vllm_results, vllm_inputs):
    # KV_HEAVY_LEN tokens of this model need 2 GiB of KV cache; the engine gets KV_CACHE_GIB = 1.
    line = captured_error_line(vllm_results["errors"]["kv"])
    assert line.startswith(
        f"error: vLLM on {vllm_inputs['kv_heavy']}: its KV cache cannot hold one request of the maximum "
        f"length ({KV_HEAVY_LEN} tokens) (2.0 GiB needed, {KV_CACHE_GIB}.0 GiB there); give vLLM more KV "
        "cache (VLLM_CPU_KVCACHE_SPACE=GiB"
    ), line
    # What fits: 1 GiB at 1 KiB a token, less what vLLM keeps back.
    fits = int(line.split("--max-model-len ")[1].split()[0])
    assert 2**20 * 0.9 < fits <= 2**20, line


def test_a_max_model_len_beyond_the_config_names_the_limit(vllm_results, smollm2_hf_dir):
    assert captured_error_line(vllm_results["errors"]["too_long"]) == (
        f"error: vLLM on {smollm2_hf_dir}: --max-model-len 100000 is longer than the model's config allows "
        "(max_position_embeddings=8192); pass --max-model-len 8192 or less"
    )
