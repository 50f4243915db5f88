"""`python -m cft_jax.convert`: HF <-> Orbax checkpoints, and GGUF -> HF.

    python -m cft_jax.convert import HF_DIR_OR_HUB_ID CKPT_DIR [--dtype bfloat16]
    python -m cft_jax.convert export CKPT_DIR HF_DIR [--max-shard-size 2GB] [--dtype bfloat16] [--step N]
    python -m cft_jax.convert from-gguf FILE.gguf OUT_DIR [--max-shard-size 2GB]
    python -m cft_jax.convert verify RUN_OR_CKPT_DIR [--step N]
    python -m cft_jax.convert download hf://OWNER/NAME[@REV] [OUT_DIR]     (or hf://datasets/OWNER/NAME[/PATH])

See docs/convert.md for the checkpoint layout. Never imports torch.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax.numpy as jnp

from cft_jax import hub, integrity
from cft_jax.convert.checkpoint import (
    OrbaxCheckpointError,
    checkpoint_dir,
    committed_steps,
    load_params,
    save_model,
)
from cft_jax.convert.from_gguf import convert_gguf
from cft_jax.errors import run_cli
from cft_jax.models.checkpoint_layout import HF_ASSETS
from cft_jax.models.hf import export_hf, load_hf
from cft_jax.models.safetensors_io import parse_size

DTYPES = ("float32", "bfloat16", "float16")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cft_jax.convert", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    to_orbax = commands.add_parser("import", help="HF safetensors directory -> Orbax checkpoint")
    to_orbax.add_argument("hf_dir")
    to_orbax.add_argument("ckpt_dir")
    to_orbax.add_argument("--dtype", choices=DTYPES, default="float32", help="parameter dtype to store")
    to_orbax.add_argument("--step", type=int, default=0, help="checkpoint step number to write")
    to_hf = commands.add_parser("export", help="Orbax checkpoint (weights, or a full training one) -> HF")
    to_hf.add_argument("ckpt_dir")
    to_hf.add_argument("hf_dir")
    to_hf.add_argument(
        "--max-shard-size", type=parse_size, default="5GB", help="largest safetensors shard, e.g. 2GB, 500MB"
    )
    to_hf.add_argument(
        "--dtype", choices=DTYPES, default=None, help="stored dtype (default: the checkpoint's)"
    )
    to_hf.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    gguf = commands.add_parser("from-gguf", help="llama-architecture GGUF -> HF directory (fp32)")
    gguf.add_argument("gguf_file")
    gguf.add_argument("out_dir")
    gguf.add_argument("--max-shard-size", type=parse_size, default="5GB")
    check = commands.add_parser("verify", help="check checkpoint steps against their integrity manifests")
    check.add_argument("run_or_ckpt_dir", help="a run's work directory (with checkpoints/) or a CKPT_DIR")
    check.add_argument("--step", type=int, default=None, help="only this step (default: every step)")
    fetch = commands.add_parser(
        "download",
        help="a hub model (config, weights, tokenizer) or a dataset's files into the hub cache, before a run",
    )
    fetch.add_argument("hub_id", help="hf://OWNER/NAME[@REV] or hf://datasets/OWNER/NAME[@REV][/PATH]")
    fetch.add_argument(
        "out_dir", nargs="?", default="", help="also copy the files here (local or gs://: for every host)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "verify":
        return _verify(args.run_or_ckpt_dir, args.step)
    if args.command == "download":
        return _download(args.hub_id, args.out_dir)
    _run(args)
    return 0


def _run(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    if args.command == "from-gguf":
        out = convert_gguf(args.gguf_file, args.out_dir, max_shard_size=args.max_shard_size)
    else:
        if args.command == "import":
            hf_dir = hub.model_dir(args.hf_dir) if hub.is_hub(args.hf_dir) else args.hf_dir
            model, config = load_hf(hf_dir, dtype=jnp.dtype(args.dtype))
            out = save_model(args.ckpt_dir, model, config, hf_dir=hf_dir, step=args.step)
        else:
            params, config = load_params(args.ckpt_dir, step=args.step)
            out = export_hf(
                params,
                config,
                args.hf_dir,
                max_shard_size=args.max_shard_size,
                tokenizer_dir=f"{args.ckpt_dir}/{HF_ASSETS}",
                dtype=None if args.dtype is None else jnp.dtype(args.dtype),
            )
    print(f"{args.command}: wrote {out} in {time.perf_counter() - start:.1f}s", file=sys.stderr)


def _download(hub_id: str, out_dir: str) -> int:
    """Prints the local directory (or OUT_DIR) holding the files: the path to give model.hf_path or data."""
    start = time.perf_counter()
    parsed = hub.parse(hub_id)
    if parsed.repo_type == "model":
        local = hub.model_dir(hub_id)
    else:
        local = Path(hub.download(parsed, tuple(f"*{s}" for s in hub.DATA_SUFFIXES)))
    out = hub.mirror(local, out_dir) if out_dir else local
    print(f"download: {hub_id} in {out} in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    print(out)
    return 0


def _verify(path: str, only_step: int | None) -> int:
    """One line per step on stdout: ok, unverified (and why), or BAD (which files); 1 if any is bad.

    `path`: a run's work directory, a CKPT_DIR, or one step's directory (e.g. one set aside in
    `quarantine/`, before moving it back).
    """
    ckpt_dir = checkpoint_dir(path)
    if (ckpt_dir / "_CHECKPOINT_METADATA").is_file():
        steps = {ckpt_dir.name: ckpt_dir}
    else:
        steps = {str(step): ckpt_dir / str(step) for step in committed_steps(ckpt_dir)}
        if only_step is not None:
            if str(only_step) not in steps:
                raise OrbaxCheckpointError(
                    f"{ckpt_dir}: no checkpoint step {only_step} (found {list(steps)})"
                )
            steps = {str(only_step): steps[str(only_step)]}
        if not steps:
            raise OrbaxCheckpointError(f"{ckpt_dir}: no committed checkpoint steps")
    bad = []
    for step, step_dir in steps.items():
        start = time.perf_counter()
        verdict = integrity.verify(step_dir)
        checked = f"{verdict.files} files, {verdict.bytes / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s"
        if verdict.status == "ok":
            print(f"step {step}: ok ({checked})")
        elif verdict.status == "unverified":
            print(f"step {step}: unverified: {'; '.join(verdict.problems)} ({checked})")
        else:
            bad.append(step)
            print(f"step {step}: BAD: {'; '.join(verdict.problems)}")
    if bad:
        print(
            f"error: {ckpt_dir}: step(s) {', '.join(bad)} do not match their integrity manifests; a "
            "resume moves such a step into quarantine/ and restores the newest good one",
            file=sys.stderr,
        )
    return 1 if bad else 0


if __name__ == "__main__":
    run_cli(main)
