"""Peak host RSS and wall time of HF import/export on a synthetic ~1 GB checkpoint, and of `from-gguf`.

    python benchmarks/bench_convert.py [--workdir /tmp/cft_bench] [--layers 12]

Each step runs in a fresh process so its peak RSS (`ru_maxrss`) is its own. "baseline" is that
process's current RSS after importing jax/flax, before touching the checkpoint (for export_hf: after
loading the model). On the CPU backend the loaded parameters themselves live in host memory, so an
import's floor is baseline + model size; the point is that it stays near that floor instead of holding
a second copy, and that an export adds about one output shard.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SYNTHETIC = dict(
    model_type="llama",
    vocab_size=32000,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=12,
    num_attention_heads=16,
    num_key_value_heads=16,
    head_dim=64,
    tie_word_embeddings=False,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    max_position_embeddings=2048,
    hidden_act="silu",
    architectures=["LlamaForCausalLM"],
    torch_dtype="float32",
)

# Run in a child process: argv[1] is the step, argv[2:] its paths. Prints one JSON line.
CHILD = r"""
import json, resource, sys, time
import jax
from flax import nnx
from cft_jax.models import hf
from cft_jax.convert.__main__ import main
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak MiB (Linux reports KiB)
current = lambda: int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
step, paths = sys.argv[1], sys.argv[2:]
base = current()
start = time.perf_counter()
if step == "load_hf":
    model, _ = hf.load_hf(paths[0])
    jax.block_until_ready(nnx.state(model))
elif step == "export_hf":
    model, config = hf.load_hf(paths[0])
    jax.block_until_ready(nnx.state(model))
    mid = current()
    start = time.perf_counter()
    hf.export_hf(model, config, paths[1], max_shard_size="200MB")
elif step == "cli":
    main(paths)
print(json.dumps({"step": step, "seconds": time.perf_counter() - start, "baseline_mib": base,
                  "peak_mib": rss(), **({"after_load_mib": mid} if step == "export_hf" else {})}))
"""


def make_synthetic(directory: Path, layers: int) -> float:
    """Writes a random untied Llama checkpoint in 500 MB shards; returns its size in GiB."""
    import numpy as np

    from cft_jax.models.config import ModelConfig
    from cft_jax.models.hf import RULES
    from cft_jax.models.safetensors_io import PlannedTensor, write_safetensors

    hf_config = {**SYNTHETIC, "num_hidden_layers": layers}
    config = ModelConfig.from_hf(hf_config)
    d, f, v, h, dh = (
        config.hidden_size,
        config.intermediate_size,
        config.vocab_size,
        config.num_heads,
        config.head_dim,
    )
    shapes = {
        "embed_tokens": (v, d),
        "lm_head": (v, d),
        "norm.weight": (d,),
        "layernorm": (d,),
        "q_proj": (h * dh, d),
        "k_proj": (h * dh, d),
        "v_proj": (h * dh, d),
        "o_proj": (d, h * dh),
        "gate_proj": (f, d),
        "up_proj": (f, d),
        "down_proj": (d, f),
    }
    rng = np.random.default_rng(0)
    planned = []
    for rule in RULES:
        if "bias" in rule.hf or "q_norm" in rule.hf or "k_norm" in rule.hf:
            continue
        shape = next(s for key, s in shapes.items() if key in rule.hf)
        for i in range(layers) if rule.stacked else [None]:
            planned.append(
                PlannedTensor(
                    rule.hf.format(i=i),
                    shape,
                    np.dtype(np.float32),
                    lambda s=shape: rng.standard_normal(s, dtype=np.float32) * 0.02,
                )
            )
    write_safetensors(planned, directory, "500MB")
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2))
    return sum(t.nbytes for t in planned) / 2**30


def child(*args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cft_bench"))
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()
    work = args.workdir
    start = time.perf_counter()
    size = make_synthetic(work / "hf", args.layers)
    elapsed = time.perf_counter() - start
    print(f"synthetic checkpoint: {size:.2f} GiB fp32 in {work / 'hf'} ({elapsed:.0f}s to write)")
    runs = [
        child("load_hf", str(work / "hf")),
        child("export_hf", str(work / "hf"), str(work / "export")),
        child("cli", "import", str(work / "hf"), str(work / "ckpt")),
        child("cli", "export", str(work / "ckpt"), str(work / "export_cli"), "--max-shard-size", "200MB"),
    ]
    from cft_jax.assets import smollm2_gguf

    runs.append(child("cli", "from-gguf", str(smollm2_gguf()), str(work / "smollm2")))
    names = [
        "load_hf",
        "export_hf (after load)",
        "CLI import HF->Orbax",
        "CLI export Orbax->HF",
        "from-gguf SmolLM2",
    ]
    print(f"{'step':28s} {'seconds':>8s} {'baseline MiB':>13s} {'peak MiB':>9s} {'peak - baseline':>16s}")
    for name, run in zip(names, runs, strict=True):
        seconds, base, peak = run["seconds"], run.get("after_load_mib", run["baseline_mib"]), run["peak_mib"]
        print(f"{name:28s} {seconds:8.1f} {base:13.0f} {peak:9.0f} {peak - base:16.0f}")


if __name__ == "__main__":
    main()
