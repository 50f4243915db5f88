"""`python -m cft_jax.convert`: HF <-> Orbax checkpoints, and GGUF -> HF.

    python -m cft_jax.convert import HF_DIR CKPT_DIR [--dtype bfloat16]
    python -m cft_jax.convert export CKPT_DIR HF_DIR [--max-shard-size 2GB] [--dtype bfloat16] [--step N]
    python -m cft_jax.convert from-gguf FILE.gguf OUT_DIR [--max-shard-size 2GB]

See docs/convert.md for the checkpoint layout. Never imports torch.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import jax.numpy as jnp

from cft_jax.convert.checkpoint import HF_ASSETS, load_params, save_model
from cft_jax.convert.from_gguf import convert_gguf
from cft_jax.errors import run_cli
from cft_jax.models.hf import export_hf, load_hf, parse_size

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _run(_parser().parse_args(argv))
    return 0


def _run(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    if args.command == "from-gguf":
        out = convert_gguf(args.gguf_file, args.out_dir, max_shard_size=args.max_shard_size)
    else:
        if args.command == "import":
            model, config = load_hf(args.hf_dir, dtype=jnp.dtype(args.dtype))
            out = save_model(args.ckpt_dir, model, config, hf_dir=args.hf_dir, step=args.step)
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


if __name__ == "__main__":
    run_cli(main)
