"""`python -m cft_jax.sampling generate|serve`: the KV-cache sampler on an HF or Orbax checkpoint.

    python -m cft_jax.sampling generate --model HF_DIR --prompt "2+2=" [--max-new-tokens 64]
    python -m cft_jax.sampling serve --model HF_DIR [--batch-size 8] [--mesh 1,-1,1]

`--model` is an HF directory, or a training run's Orbax checkpoint: the run's work directory or its
`checkpoints/` (the newest step), or one step, `checkpoints/<step>` (local or `gs://`). Only the
checkpoint's model item is read, straight into the mesh (`cft_jax.convert.checkpoint.load_params`),
with the model config and tokenizer the trainer keeps in `checkpoints/hf/`.

`serve` is the JAX backend of the evaluation tool (`python -m cft_jax.eval generate --backend jax`),
which imports no JAX and runs this in a child process: one JSON request a line on stdin
(`{"prompts": [...], "max_new_tokens", "temperature", "top_p", "n", "seed"}`), one reply a line on
stdout (`{"completions": [[n texts] per prompt], "generated_tokens": N}`). Everything else the
process prints goes to stderr. Completions are cut at the evaluation's stop strings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from etils import epath
from flax import nnx

from cft_jax.convert.checkpoint import load_params
from cft_jax.errors import InputError, run_cli
from cft_jax.evaluation.prompts import STOP_STRINGS
from cft_jax.models.checkpoint_layout import HF_ASSETS
from cft_jax.models.hf import load_hf
from cft_jax.models.sharding import make_mesh, mesh_shape
from cft_jax.models.transformer import Decoder
from cft_jax.remote import as_path, local_copy
from cft_jax.sampling.sampler import SampleConfig, Sampler
from cft_jax.sampling.text import sample_texts


def eos_token_ids(model_dir: Path, tokenizer: Any) -> tuple[int, ...]:
    """The ids that end a row: the checkpoint's generation config (else config) and the tokenizer's."""
    ids: list[int] = []
    for name in ("generation_config.json", "config.json"):
        path = model_dir / name
        if path.is_file() and (value := json.loads(path.read_text()).get("eos_token_id")) is not None:
            ids += value if isinstance(value, list) else [value]
            break
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return tuple(dict.fromkeys(ids))


def parse_mesh(text: str) -> tuple[int, int, int]:
    """`--mesh DATA,FSDP,TENSOR` -> the three sizes over this process's devices (-1: the rest)."""
    try:
        data, fsdp, tensor = (int(x) for x in text.split(","))
        return mesh_shape(data, fsdp, tensor, jax.device_count())
    except ValueError as error:
        raise InputError(
            f"--mesh {text!r}: give DATA,FSDP,TENSOR sizes whose product is the {jax.device_count()} "
            f"devices, e.g. 1,-1,1 (-1: the rest) ({error})"
        ) from None


def orbax_checkpoint(model: str) -> tuple[epath.Path, int | None] | None:
    """(checkpoint directory, step or None for the newest) when `model` is a training run, its
    `checkpoints/` or one `checkpoints/<step>`; None for anything else (an HF directory)."""
    path = as_path(model)
    if (path / "config.json").exists():
        return None
    if (path / "checkpoints" / HF_ASSETS / "config.json").exists():
        return path / "checkpoints", None
    if (path / HF_ASSETS / "config.json").exists():
        return path, None
    if path.name.isdigit() and (path.parent / HF_ASSETS / "config.json").exists():
        return path.parent, int(path.name)
    return None


def load_orbax(ckpt_dir: epath.Path, step: int | None, *, dtype: jnp.dtype, mesh) -> Decoder:
    """The decoder of a checkpoint's model item, its parameters cast to `dtype`, on `mesh`."""
    params, config = load_params(ckpt_dir, step=step, mesh=mesh)
    abstract = nnx.eval_shape(
        lambda: Decoder(config, param_dtype=dtype, compute_dtype=dtype, rngs=nnx.Rngs(0))
    )
    graphdef, state = nnx.split(abstract)
    nnx.replace_by_pure_dict(state, jax.tree.map(lambda x: x.astype(dtype), params))
    return nnx.merge(graphdef, state)


class TextSampler:
    """A checkpoint loaded for sampling: the model on its mesh, the tokenizer, the EOS ids."""

    def __init__(self, model: str, *, batch_size: int, dtype: str, cache_dtype: str, mesh: str):
        from transformers import AutoTokenizer

        device_mesh = make_mesh(*parse_mesh(mesh))
        orbax = orbax_checkpoint(model)
        if orbax is None:
            directory = local_copy(model)
            decoder, _ = load_hf(directory, dtype=jnp.dtype(dtype), mesh=device_mesh)
        else:
            decoder = load_orbax(*orbax, dtype=jnp.dtype(dtype), mesh=device_mesh)
            directory = local_copy(orbax[0] / HF_ASSETS)  # the model config and tokenizer: small files
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.sampler = Sampler(
            decoder, mesh=device_mesh, cache_dtype=jnp.dtype(cache_dtype), batch_size=batch_size
        )
        self.batch_size = batch_size
        self.eos = eos_token_ids(directory, self.tokenizer)

    def complete(self, prompts: Sequence[str], request: dict[str, Any]) -> tuple[list[list[str]], int]:
        """`n` completions of each prompt (the rows of one prompt differ by their draws) and the tokens."""
        n = int(request.get("n", 1))
        config = SampleConfig(
            max_new_tokens=int(request.get("max_new_tokens", 256)),
            temperature=float(request.get("temperature", 0.0)),
            top_p=float(request.get("top_p", 1.0)),
            seed=int(request.get("seed", 0)),
            eos_token_ids=self.eos,
        )
        repeated = [p for p in prompts for _ in range(n)]
        texts, generated = sample_texts(
            self.sampler,
            self.tokenizer,
            repeated,
            config,
            stop_strings=STOP_STRINGS,
            batch_size=self.batch_size,
        )
        return [texts[i * n : (i + 1) * n] for i in range(len(prompts))], generated


def _serve(args: argparse.Namespace) -> None:
    # The replies own stdout; whatever else is printed (JAX, transformers) goes to stderr.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sampler = _text_sampler(args)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        completions, generated = sampler.complete(request["prompts"], request)
        replies.write(json.dumps({"completions": completions, "generated_tokens": generated}) + "\n")
        replies.flush()


def _generate(args: argparse.Namespace) -> None:
    sampler = _text_sampler(args)
    request = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p}
    completions, _ = sampler.complete(args.prompt, {**request, "seed": args.seed})
    for prompt, (text,) in zip(args.prompt, completions, strict=True):
        print(json.dumps({"prompt": prompt, "completion": text}, ensure_ascii=False))


def _text_sampler(args: argparse.Namespace) -> TextSampler:
    return TextSampler(
        args.model, batch_size=args.batch_size, dtype=args.dtype, cache_dtype=args.cache_dtype, mesh=args.mesh
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cft_jax.sampling", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--model",
        required=True,
        help="HF checkpoint directory, or a training run / its checkpoints/ / one checkpoints/STEP (local or gs://)",
    )
    common.add_argument("--batch-size", type=int, default=8, help="rows per compiled batch")
    common.add_argument("--dtype", default="float32", help="parameter and compute dtype")
    common.add_argument("--cache-dtype", default="bfloat16", help="KV cache dtype")
    common.add_argument("--mesh", default="1,-1,1", help="DATA,FSDP,TENSOR device mesh (-1: the rest)")
    p = sub.add_parser("generate", parents=[common], help="complete prompts given on the command line")
    p.add_argument("--prompt", action="append", required=True, help="a prompt (repeat for a batch)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_generate)
    p = sub.add_parser("serve", parents=[common], help="the evaluation tool's JAX backend (JSON lines)")
    p.set_defaults(func=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    run_cli(main)
