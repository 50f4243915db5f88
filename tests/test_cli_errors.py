"""Every command, fed bad input, prints one `error:` line naming the file:line (or key, or path) and exits 2.

Each case runs the real command (`python -m ...`) in a subprocess on a tiny bad input, so what is
checked is what a user sees: the status, the message on stderr, and no Python traceback unless
they ask for one (`--debug` or CFT_JAX_DEBUG=1). Every case fails while reading its input or its
config, before any model is built or compiled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.trainer_runs import xla_flags

REPO = Path(__file__).resolve().parents[1]
GOOD_CRITIQUE = {
    "id": "a",
    "question": "1+1?",
    "solution": "2",
    "critique": "Conclusion: right",
    "verdict": "right",
}
NO_CRITIQUE = {"id": "b", "question": "2+2?", "solution": "4"}  # line 2 lacks the field that trains
GOOD_RESPONSE = {"id": "a#0", "benchmark": "gsm8k", "response": "The answer is 2.", "answer": "2"}


def write_lines(path: Path, lines: list[dict | str]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def bad_critiques(tmp: Path) -> Path:
    return write_lines(tmp / "critiques.jsonl", [GOOD_CRITIQUE, NO_CRITIQUE])


def bad_key_config(tmp: Path) -> Path:
    config = tmp / "typo.py"
    config.write_text(
        f"import runpy\n\n\ndef get_config():\n"
        f"    config = runpy.run_path({str(REPO / 'configs' / 'cpu_demo.py')!r})['get_config']()\n"
        "    config['training']['globl_batch'] = 8\n    return config\n"
    )
    return config


# (id, module, arguments from a temporary directory, what stderr must name)
Case = tuple[str, str, Callable[[Path], list[str]], Callable[[Path], str]]
CASES: list[Case] = [
    (
        "data-inspect",
        "cft_jax.data",
        lambda t: ["inspect", str(bad_critiques(t))],
        lambda t: f"{t / 'critiques.jsonl'}:2: field 'critique': missing",
    ),
    (
        "data-check",
        "cft_jax.data",
        lambda t: ["check", str(bad_critiques(t))],
        lambda t: f"{t / 'critiques.jsonl'}:2: field 'critique': missing",
    ),
    (
        "data-contamination",
        "cft_jax.data",
        lambda t: ["contamination", str(bad_critiques(t)), "--benchmarks", "gsm8k"],
        lambda t: f"{t / 'critiques.jsonl'}:2: field 'critique': missing",
    ),
    (
        "data-prepare",
        "cft_jax.data",
        lambda t: ["prepare", str(bad_critiques(t)), "--out", str(t / "cft.array_record")],
        lambda t: f"{t / 'critiques.jsonl'}:2: field 'critique': missing",
    ),
    (
        "data-check-unknown-tfds-builder",
        "cft_jax.data",
        lambda t: ["check", "tfds:no_such_builder", "--tfds-data-dir", str(t)],
        lambda t: f"tfds:no_such_builder: no prepared TFDS builder 'no_such_builder' in {t}",
    ),
    (
        "data-inspect-missing-file",
        "cft_jax.data",
        lambda t: ["inspect", str(t / "nowhere.jsonl")],
        lambda t: f"{t / 'nowhere.jsonl'}: no such file",
    ),
    (
        "data-inspect-tokenizer-dir-without-tokenizer",
        "cft_jax.data",
        lambda t: ["inspect", str(write_lines(t / "c.jsonl", [GOOD_CRITIQUE])), "--tokenizer", str(t)],
        lambda t: f"tokenizer {str(t)!r}: {t} has none of",
    ),
    (
        "eval-grade",
        "cft_jax.eval",
        lambda t: ["grade", str(write_lines(t / "responses.jsonl", [GOOD_RESPONSE, '{"id": "b",']))],
        lambda t: f"{t / 'responses.jsonl'}:2: invalid JSON",
    ),
    (
        "eval-grade-missing-file",
        "cft_jax.eval",
        lambda t: ["grade", str(t / "nowhere.jsonl")],
        lambda t: f"{t / 'nowhere.jsonl'}: No such file or directory",
    ),
    (
        "eval-report",
        "cft_jax.eval",
        lambda t: (
            ["report", str(write_lines(t / "gsm8k.jsonl", [{"id": "a#0", "correct": True}]).parent)]
            + ["--out", str(t / "report")]
        ),
        lambda t: f"{t / 'gsm8k.jsonl'}:1: field 'benchmark' must be a string",
    ),
    (
        "eval-report-not-a-run",
        "cft_jax.eval",
        lambda t: ["report", str(t), "--out", str(t / "report")],
        lambda t: f"{t}: no <benchmark>.jsonl files",
    ),
    (
        "critique-filter",
        "cft_jax.critique",
        lambda t: ["filter", "--critiques", str(bad_critiques(t)), "--out", str(t / "kept.jsonl")],
        lambda t: f"{t / 'critiques.jsonl'}:2: missing field(s) ['critique'] for CritiqueRecord",
    ),
    (
        "critique-teach",
        "cft_jax.critique",
        lambda t: [
            "teach",
            "--solutions",
            str(write_lines(t / "solutions.jsonl", [{"id": "s", "problem_id": "p", "question": "q"}])),
            "--out",
            str(t / "critiques.jsonl"),
            "--model",
            "m",
            "--no-api-key",
            "--base-url",
            "http://127.0.0.1:9/v1",  # never reached: the input is refused first
        ],
        lambda t: f"{t / 'solutions.jsonl'}:1: missing field(s) ['solution'] for SolutionRecord",
    ),
    (
        "convert-export-not-a-checkpoint",
        "cft_jax.convert",
        lambda t: ["export", str(t), str(t / "hf")],
        lambda t: f"{t / 'hf' / 'config.json'}: missing; a cft_jax checkpoint keeps",
    ),
    (
        "convert-import-broken-config",
        "cft_jax.convert",
        lambda t: [
            "import",
            str(write_lines(t / "config.json", ['{"model_type": "llama",']).parent),
            str(t / "ck"),
        ],
        lambda t: f"{t / 'config.json'}: invalid JSON",
    ),
    (
        "sampling-bad-mesh",
        "cft_jax.sampling",
        lambda t: ["generate", "--model", str(t), "--prompt", "2+2=", "--mesh", "1,3,x"],
        lambda t: "--mesh '1,3,x': give DATA,FSDP,TENSOR sizes whose product is the",
    ),
    (
        "train-bad-key",
        "cft_jax.train",
        lambda t: ["--config", str(bad_key_config(t))],
        lambda t: "training.globl_batch: unknown config key; did you mean 'training.global_batch'?",
    ),
    (
        "train-yaml-bad-key",
        "cft_jax.train",
        lambda t: ["--config", str(write_lines(t / "run.yaml", ["training:", "  learning_rate: 1e-5"]))],
        lambda t: (
            f"{t / 'run.yaml'}:2: training.learning_rate: unknown config key; did you mean 'optimizer.lr'?"
        ),
    ),
    (
        "train-bad-record",
        "cft_jax.train",
        lambda t: [
            "--config",
            str(REPO / "configs" / "cpu_demo.py"),
            f"--config.data.train_paths=({str(bad_critiques(t))!r},)",
            f"--config.training.workdir={t / 'run'}",
        ],
        lambda t: f"{t / 'critiques.jsonl'}:2: field 'critique': missing",
    ),
    (
        "train-model-vocabulary-smaller-than-the-tokenizer",
        "cft_jax.train",
        lambda t: [
            "--config",
            str(REPO / "configs" / "cpu_demo.py"),
            "--config.model.init_config.vocab_size=1000",
            f"--config.training.workdir={t / 'run'}",
        ],
        lambda t: (
            "data.tokenizer='qwen2.5': 151665 tokens (ids 0..151664), but the model's embedding has "
            "vocab_size=1000 rows"
        ),
    ),
    (
        "bench-bad-key",
        "cft_jax.bench",
        lambda t: ["train", "--config", str(bad_key_config(t)), "--no_torch"],
        lambda t: "training.globl_batch: unknown config key",
    ),
]


def run(module: str, args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "CFT_JAX_DEBUG"}
    # One CPU device: the JAX commands must fail on their input, before any mesh, compile or search for
    # accelerators.
    environ |= {
        "PYTHONPATH": str(REPO),
        "JAX_PLATFORMS": "cpu",
        "HF_HUB_OFFLINE": "1",
        "XLA_FLAGS": xla_flags(1),
    }
    environ |= env
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environ,
        timeout=300,
    )


def message(stderr: str) -> str:
    """What follows `error: ` (a config error lists every bad key on the lines after it)."""
    assert "error: " in stderr, stderr
    return stderr.split("error: ", 1)[1]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_message_and_exit_status_2(case: Case, tmp_path: Path):
    _, module, args, names = case
    done = run(module, args(tmp_path), tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert names(tmp_path) in message(done.stderr), done.stderr
    assert "--debug or CFT_JAX_DEBUG=1" in done.stderr


DEBUG_CASES = [c for c in CASES if c[0] in ("data-check", "eval-grade", "critique-filter", "train-bad-key")]


@pytest.mark.parametrize("case", DEBUG_CASES, ids=[c[0] for c in DEBUG_CASES])
def test_cft_jax_debug_shows_the_traceback_too(case: Case, tmp_path: Path):
    _, module, args, names = case
    done = run(module, args(tmp_path), tmp_path, CFT_JAX_DEBUG="1")
    assert done.returncode == 2, done.stderr
    assert "Traceback (most recent call last)" in done.stderr, done.stderr
    assert names(tmp_path) in message(done.stderr), done.stderr


def test_debug_flag_shows_the_traceback_and_is_not_passed_on(tmp_path: Path):
    """`--debug` anywhere among the arguments; the command's own parser never sees it."""
    done = run("cft_jax.data", ["check", "--debug", str(bad_critiques(tmp_path))], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert f"error: {tmp_path / 'critiques.jsonl'}:2: field 'critique': missing" in done.stderr


def test_a_bug_keeps_its_traceback(tmp_path: Path):
    """Only bad input is turned into a message: anything else is a bug, reported as Python reports it."""
    code = (
        "from cft_jax.errors import run_cli\ndef main(argv):\n    raise KeyError('internal')\nrun_cli(main)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "KeyError: 'internal'" in done.stderr
