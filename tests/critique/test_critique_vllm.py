"""Offline vLLM sampling on a GPU (skipped without vLLM and a CUDA device)."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from cft_jax.critique.client import RetryPolicy
from cft_jax.critique.config import spec_from_dict
from cft_jax.critique.sample import sample


def _gpu_reason() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install 'cft_jax[vllm]')"
    if shutil.which("nvidia-smi") is None:
        return "no CUDA GPU (nvidia-smi not found)"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_reason() is not None, reason=_gpu_reason() or "")
def test_vllm_backend_samples_k_solutions_and_resumes(tmp_path, smollm2_transformers_dir):
    problems, out = tmp_path / "p.jsonl", tmp_path / "s.jsonl"
    problems.write_text(
        json.dumps({"id": "p0", "question": "What is 2 + 3?", "reference_answer": "5"}) + "\n"
    )
    spec = spec_from_dict(
        {
            "model": str(smollm2_transformers_dir),
            "backend": "vllm",
            "k": 3,
            "max_tokens": 32,
            "temperature": 0.7,
        },
        role="generator",
        where="test",
    )
    summary = sample(problems, out, tmp_path / "f.jsonl", [spec], RetryPolicy())
    again = sample(problems, out, tmp_path / "f.jsonl", [spec], RetryPolicy())
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.written == 3 and again.skipped == 3 and len({r["id"] for r in records}) == 3
    assert all(
        r["provenance"]["backend"] == "vllm" and r["provenance"]["usage"]["completion_tokens"]
        for r in records
    )
