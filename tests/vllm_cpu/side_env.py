"""Where .venv-vllm is, how a command runs in it, and the flags the vLLM checks share (tests/vllm_cpu)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv-vllm"
PYTHON = VENV / "bin" / "python"
# The KV cache each engine gets, in GiB (vLLM's CPU build reads it): 1 GiB holds SmolLM2's 1024-token
# requests 22 times over (46,080 bytes a token in float32) and keeps each engine's memory small.
KV_CACHE_GIB = 1
NEW_TOKENS = 8  # greedy tokens compared per prompt and family
# Prompt token ids for the family checks (lengths 3, 7 and 12: positions and padding differ).
PROMPT_IDS = [
    np.random.default_rng(seed).integers(0, 49152, size=n).tolist() for seed, n in ((1, 3), (2, 7), (3, 12))
]
# Flags shared by `eval generate` with vLLM and with transformers on the real SmolLM2 export.
GENERATE = ["--benchmarks", "gsm8k", "--limit", "3", "--prompt", "deepseek-math", "--max-new-tokens", "16"]
GENERATE += ["--batch-size", "3", "--workers", "1", "--max-model-len", "1024", "--dtype", "float32"]
SAMPLE_K = 3
SAMPLE = ["-k", str(SAMPLE_K), "--temperature", "1.0", "--seed", "7", "--max-tokens", "12"]
SAMPLE += ["--max-model-len", "1024"]
SAMPLE_DROP = [1, 4]  # records removed before the rerun: one sample of each problem
SELECT = ["--benchmark", "gsm8k", "--limit", "2", "--max-new-tokens", "4", "--workers", "1"]
SELECT += ["--max-model-len", "256"]
ERRORS_COMMON = ["--benchmarks", "gsm8k", "--limit", "1", "--dtype", "float32"]  # the failing runs
KV_HEAVY_LEN = 2**21  # tokens a request of the kv_heavy export may hold: 2 GiB of KV cache
PROBLEMS = [
    {"id": "add", "question": "Name a number between 2 and 9.", "reference_answer": "5"},
    {"id": "word", "question": "Write one word about the sea.", "reference_answer": None},
]


def vllm_env() -> dict[str, str]:
    """The environment of a command run in .venv-vllm: offline, this checkout's cft_jax, a small KV cache."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), VLLM_CPU_KVCACHE_SPACE=str(KV_CACHE_GIB))
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_side_tool(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m cft_jax.eval|critique ...` in .venv-vllm, as a user types it."""
    return subprocess.run(
        [str(PYTHON), "-m", *argv], capture_output=True, text=True, cwd=REPO, env=vllm_env(), timeout=timeout
    )
