"""Shared fixtures: the real SmolLM2-135M-Instruct weights, as GGUF and as HF directories (ours and
transformers' own GGUF loading, the reference)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from filelock import FileLock

from cft_jax.assets import smollm2_gguf

# No machine here reaches a model hub; anything that tries must fail at once, not hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("CFT_JAX_TEST_CACHE", REPO / ".cache" / "tests"))
SHARED = REPO.parent / "shared"


def pytest_collection_modifyitems(items):
    """The slow tests first (a stable sort keeps each group's order): with the suite spread over
    workers (scripts/test.sh runs pytest-xdist), a several-minute test started last would leave the
    other workers idle while it finishes. tests/vllm_cpu/ share one minute-long vLLM driver run (a
    session fixture): they go to one worker (`--dist loadgroup`), first."""
    vllm = REPO / "tests" / "vllm_cpu"
    for item in items:
        if vllm in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("vllm_cpu"))
    items.sort(key=lambda item: (vllm not in item.path.parents, item.get_closest_marker("slow") is None))


def cache_lock(out: Path) -> FileLock:
    """A lock next to a cached test artifact, so two workers of the suite build it once."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{out}.lock")


@pytest.fixture(scope="session")
def smollm2_gguf_path() -> Path:
    return smollm2_gguf()


@pytest.fixture(scope="session")
def smollm2_hf_dir(smollm2_gguf_path) -> Path:
    """SmolLM2-135M-Instruct as an HF directory written by `python -m cft_jax.convert from-gguf`."""
    from cft_jax.convert.from_gguf import convert_gguf

    out = CACHE / "smollm2-cft-jax"
    with cache_lock(out):
        if not (out / "config.json").exists():
            tmp = out.with_suffix(".tmp")
            convert_gguf(smollm2_gguf_path, tmp)
            tmp.rename(out)
    return out


@pytest.fixture(scope="session")
def smollm2_transformers_dir(smollm2_gguf_path) -> Path:
    """SmolLM2 as transformers itself loads the GGUF, saved as an HF directory (the reference)."""
    out = CACHE / "smollm2-transformers"
    with cache_lock(out):
        if (out / "config.json").exists():
            return out
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kw = {"gguf_file": smollm2_gguf_path.name}
        tok = AutoTokenizer.from_pretrained(smollm2_gguf_path.parent, **kw)
        model = AutoModelForCausalLM.from_pretrained(smollm2_gguf_path.parent, **kw)
        tmp = out.with_suffix(".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        # transformers refuses save_pretrained on a GGUF-loaded model; its dequantized weights and
        # config are what we want, so write those directly.
        from safetensors.torch import save_file

        state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        model.config.quantization_config = None
        model.config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(out)
    return out


@pytest.fixture
def bucket(monkeypatch, tmp_path):
    """A GCS JSON-API server on 127.0.0.1 (tests/gcs_server.py) with one bucket, "cft", that this
    process's gs:// paths reach; a fresh staging cache, and no gcsfs listings cached from before."""
    import fsspec

    from tests.gcs_server import GCSServer

    with GCSServer(buckets=("cft",)) as gcs:
        for name, value in gcs.environment().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("CFT_JAX_CACHE", str(tmp_path / "cache"))
        fsspec.filesystem("gcs", finalize_on_close=True).invalidate_cache()
        yield gcs


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A Hugging Face Hub on 127.0.0.1 (tests/hub_server.py) that this process's `hf://` ids (and its
    subprocesses') reach, with a fresh hub cache. HF_HUB_OFFLINE is lifted here only: huggingface_hub
    reads it at import, so its module constant is switched too."""
    from huggingface_hub import constants

    from tests.hub_server import HubServer

    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        yield server
