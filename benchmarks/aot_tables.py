"""The compiler's tables in docs/performance.md and docs/scaling.md: each step compiled ahead of time.

    python benchmarks/aot_tables.py recipes              # every recipe config on its documented topology
    python benchmarks/aot_tables.py scaling [--targets v5p-8,v6e-8]   # Qwen2.5 sizes x slices
    .venv-gpu/bin/python benchmarks/aot_tables.py scaling --targets h100x8,h200x8   # GPU columns

Each cell is `python -m cft_jax.train ... --aot TARGET` (per-device memory from the compiler's
`memory_analysis()`, the `--dry_run` plan beside it, collectives per step from the optimized HLO).
The weights are never needed: each recipe names the public architecture of its base model. Prints
markdown tables and the command; `--json` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cft_jax.config import config_module  # noqa: E402

GiB = 2**30

# Every config with a TOPOLOGY (the recipes, the GPU bench shapes) -> (its BASE_SHAPE, that topology);
# a config without BASE_SHAPE carries its architecture in init_config.
RECIPES = {
    f"configs/{path.name}": (getattr(module, "BASE_SHAPE", None), module.TOPOLOGY)
    for path in sorted((REPO / "configs").glob("*.py"))
    if hasattr(module := config_module(path), "TOPOLOGY")
}

SIZES = ("qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b", "qwen2.5-14b")
TPU_TARGETS = ("v5p-8", "v5p-16", "v5p-64", "v5p-128", "v6e-8", "v6e-16", "v6e-64")
ROWS_PER_DEVICE = 4  # per micro-batch: the CFT recipe's 512 x 2048 tokens, accumulated


def compile_one(config: str, target: str, shape: str | None, extra: list[str], out: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "cft_jax.train",
        "--config",
        config,
        "--aot",
        target,
        "--aot_json",
        str(out),
    ]
    command += (["--shape", shape] if shape else []) + extra
    result = subprocess.run(
        command, cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True
    )
    if result.returncode:
        error = next((line for line in reversed(result.stderr.splitlines()) if line.startswith("error")), "")
        return {"command": shlex.join(command[1:]), "error": error or result.stderr[-500:]}
    return {"command": shlex.join(command[1:]), **json.loads(out.read_text())}


def cell(r: dict) -> str:
    if "error" in r:
        return "does not fit" if "HBM" in r["error"] else "fails"
    return f"{r['memory']['total'] / GiB:.2f}"


def recipes(work: Path, targets: list[str] | None) -> list[dict]:
    rows = []
    for config, (shape, target) in RECIPES.items():
        if targets and target not in targets:
            continue
        r = compile_one(config, target, shape, [], work / f"{Path(config).stem}.json")
        rows.append({"config": config, "shape": shape or "(in the config)", **r})
    print("| recipe | model | target | mesh (d, f, t) | rows x seq x micro-batches | attention | memory GiB "
          "(compiler) | plan GiB | HBM GiB | collectives GiB/step | compile s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(
                f"| `{r['config']}` | {r['shape']} | {r.get('target', '')} | | | | "
                f"{r['error'][:80]} | | | | |"
            )
            continue
        mesh = r["mesh"]
        collectives = sum(t["bytes"] for t in r["collectives"].values()) / GiB
        print(
            f"| `{r['config']}` | {r['shape']} | {r['target']} | "
            f"{mesh['data']}, {mesh['fsdp']}, {mesh['tensor']} | "
            f"{r['rows_per_device']} x {r['seq_len']} x {r['accumulation_steps']} | {r['attention']} | "
            f"{r['memory']['total'] / GiB:.2f} | {r['estimate']['total'] / GiB:.2f} "
            f"({r['estimate']['total'] / r['memory']['total']:.2f}x) | {r['hbm_bytes'] / GiB:.1f} | "
            f"{collectives:.1f} | {r['compile_s']:.0f} |"
        )
    return rows


def scaling(work: Path, targets: list[str]) -> list[dict]:
    from cft_jax.aot.targets import resolve_target

    rows = []
    for shape in SIZES:
        for target in targets:
            devices = resolve_target(target).num_devices
            micro = max(512 // (ROWS_PER_DEVICE * devices), 1)
            extra = [
                "--config.mesh.data=1",
                "--config.mesh.fsdp=-1",
                f"--config.training.accumulation_steps={micro}",
            ]
            r = compile_one("configs/qwen7b_v5p.py", target, shape, extra, work / f"{shape}_{target}.json")
            rows.append({"shape": shape, "target": target, "accumulation_steps": micro, **r})
    print("| model | " + " | ".join(targets) + " |")
    print("|---|" + "---|" * len(targets))
    print(
        "| accumulation_steps | "
        + " | ".join(str(r["accumulation_steps"]) for r in rows[: len(targets)])
        + " |"
    )
    for shape in SIZES:
        cells = [cell(r) for r in rows if r["shape"] == shape]
        print(f"| {shape} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=["recipes", "scaling"])
    parser.add_argument(
        "--targets", default="", help="comma-separated; default: the TPU slices / all recipes"
    )
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "aot_tables"))
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    targets = [t for t in args.targets.split(",") if t]
    print(f"command: python benchmarks/aot_tables.py {shlex.join(sys.argv[1:])}\n")
    rows = recipes(work, targets) if args.table == "recipes" else scaling(work, targets or list(TPU_TARGETS))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
