"""cft_jax's train step and MaxText's, compiled by the same TPU compiler and estimated the same way.

Both steps are compiled ahead of time on this CPU machine for the same model shape, TPU topology,
sequence length, rows per chip, micro-batches, remat policy and attention kernel (splash):
  - cft_jax through `python -m cft_jax.train --aot ... --aot_cost` (cft_jax.aot.cost);
  - MaxText 0.2.5 as installed (benchmarks/maxtext_env.sh makes .venv-maxtext) through its own
    train_compile functions (benchmarks/maxtext_compile.py), as it runs and at the layer-scan and
    gradient-accumulation-scan unrolls cft_jax.aot.cost takes (2, then each loop at 4), windowed
    einsums off, and its whole step rebuilt by the same function (`cft_jax.aot.cost.rebuild`);
then the same estimate is applied to both: the compiler's cost model for compute, the ring traffic of
the optimized HLO's collectives (cft_jax.aot.hlo, trip counts applied) over the chip's ICI bandwidth,
step = max(compute, interconnect), MFU = MaxText's own model-FLOP count / (step x peak). Every number
is a COMPILER ESTIMATE, not a measurement. MaxText runs with libtpu 0.0.52 (what its jax needs);
cft_jax runs with its pinned libtpu 0.0.42.1 and, with --same-libtpu, also with 0.0.52 (installed into
a side folder, HLO read from XLA's dump since jaxlib 0.10.2 cannot read that compiler's HLO back).

    bash benchmarks/maxtext_env.sh
    python benchmarks/aot_vs_maxtext.py --case 7b --case 1.5b [--json out.json]
        [--remat save_dots_no_batch] (both sides; MaxText's "minimal")  [--same-libtpu]

Takes ~40 minutes on 2 cores for both cases (--same-libtpu: ~15 more).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cft_jax.aot import hlo  # noqa: E402
from cft_jax.aot.cost import COSTS, HIGH_UNROLL, low_unroll, rebuild  # noqa: E402
from cft_jax.aot.targets import CHIPS, resolve_target  # noqa: E402
from cft_jax.config import format_flags  # noqa: E402
from cft_jax.models.loops import Unroll  # noqa: E402
from cft_jax.models.shapes import SHAPES  # noqa: E402
from cft_jax.training.compiler_options import step_compiler_options  # noqa: E402

GiB = 2**30
# name -> (our shape, MaxText model, topology, seq, rows per chip per micro-batch, micro-batches)
CASES = {
    "7b": ("qwen2.5-7b", "qwen2.5-7b", "v5p-32", 2048, 8, 4),
    "1.5b": ("qwen2.5-1.5b", "qwen2.5-1.5b", "v5p-8", 4096, 2, 1),
    # The 7B case's 65,536 tokens per chip per step in 16 micro-batches of 2 rows: small enough that a
    # policy saving the projections (`--remat save_dots_no_batch`) compiles at the unroll of 4.
    "7b-2x16": ("qwen2.5-7b", "qwen2.5-7b", "v5p-32", 2048, 2, 16),
}
MAXTEXT_PYTHON = REPO / ".venv-maxtext" / "bin" / "python"
LIBTPU_052 = Path(tempfile.gettempdir()) / "cft_jax_libtpu_0.0.52"


# Our remat policy -> MaxText's of the same meaning ("minimal" saves every projection's output).
REMAT = {"full": "full", "save_dots_no_batch": "minimal"}
POLICY = "full"  # --remat
OPTIONS = "auto"  # --compiler-options: both sides' (cft_jax's training.compiler_options)
REUSE = False  # --reuse: a compile whose output is already in --work is not run again


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    print("$ " + shlex.join(command), flush=True)
    # jax points TPU_LIBRARY_PATH at the libtpu it loaded (this process's, for resolve_target): a child
    # must find its own environment's libtpu (MaxText's 0.0.52, or the side folder's).
    inherited = {k: v for k, v in os.environ.items() if k not in ("TPU_LIBRARY_PATH", "TPU_SKIP_MDS_QUERY")}
    result = subprocess.run(
        command, cwd=REPO, env={**inherited, **(env or {})}, capture_output=True, text=True
    )
    if result.returncode:
        sys.exit(f"failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def ours(case: str, out: Path, libtpu_path: Path | None = None) -> dict:
    shape, _, topology, seq, rows, micro = CASES[case]
    chips = resolve_target(topology).num_devices
    command = [
        sys.executable, "-m", "cft_jax.train", "--config", "configs/qwen7b_v5p.py", "--shape", shape,
        "--aot", topology, "--aot_cost", "--aot_json", str(out),
        "--config.model.attention_impl=auto", f"--config.model.remat={POLICY}",
        f"--config.data.seq_len={seq}", f"--config.training.global_batch={rows * chips * micro}",
        f"--config.training.accumulation_steps={micro}", f"--config.training.compiler_options={OPTIONS}",
    ]  # fmt: skip
    env = {"JAX_PLATFORMS": "cpu"}
    if libtpu_path is not None:
        dump = out.with_suffix(".dump")
        env |= {"PYTHONPATH": str(libtpu_path), "XLA_FLAGS": f"--xla_dump_to={dump} --xla_dump_hlo_as_text"}
    if not (REUSE and out.exists()):
        run(command, env)
    return json.loads(out.read_text())


def maxtext_trips(case: str) -> Unroll:
    shape, *_, micro = CASES[case]
    layers = SHAPES[shape]["num_hidden_layers"]
    return Unroll(layers=layers, loss_chunks=1, micro_batches=micro)  # its loss has no chunk loop


def maxtext(case: str, out: Path) -> dict:
    """MaxText's step compiled at the unrolls `cft_jax.aot.cost.rebuild` takes (cft_jax's loops'
    names; MaxText's layer scan and gradient-accumulation scan)."""
    _, model, topology, seq, rows, micro = CASES[case]
    trips = maxtext_trips(case)
    low = low_unroll(trips)
    variants = {"base": Unroll(), "low": low}
    variants |= {
        f"high_{loop}": dataclasses.replace(low, **{loop: HIGH_UNROLL})
        for loop in ("layers", "micro_batches")
        if getattr(trips, loop) > 1
    }
    knobs = [
        "--model", model, "--topology", topology, "--seq", str(seq), "--per-device-batch", str(rows),
        "--grad-accum", str(micro), "--remat", REMAT[POLICY], "--attention", "flash", "--no-windowed-einsum",
    ]  # fmt: skip
    kind = resolve_target(topology).devices[0].device_kind
    flags = format_flags(step_compiler_options(OPTIONS, kind))
    # "=" form: argparse would read a value starting with "--" as the next option.
    knobs += [f"--xla-flags={flags}"] if flags else []  # the options cft_jax's step compiles with
    results = {}
    for name, unroll in variants.items():
        directory = out / name
        loops = ["--layer-unroll", str(unroll.layers), "--grad-accum-unroll", str(unroll.micro_batches)]
        if not (REUSE and (directory / "cost.json").exists()):
            hlo_text = [] if name == "base" else ["--no-hlo"]
            script = [str(MAXTEXT_PYTHON), "benchmarks/maxtext_compile.py"]
            run([*script, *knobs, *loops, "--out", str(directory), *hlo_text])
        files = ("memory", "cost", "config")
        results[name] = {f: json.loads((directory / f"{f}.json").read_text()) for f in files}
        if name == "base":
            results[name]["hlo"] = (directory / "hlo.txt").read_text()
    return results


def maxtext_estimate(case: str, results: dict) -> dict:
    """MaxText's whole step rebuilt by the function that rebuilds ours (`cft_jax.aot.cost.rebuild`)."""
    _, _, topology, seq, rows, micro = CASES[case]
    target = resolve_target(topology)

    def costs(name: str) -> dict[str, float]:
        return {k: results[name]["cost"][k] for k in COSTS}

    high = {name.removeprefix("high_"): costs(name) for name in results if name.startswith("high_")}
    whole = rebuild(costs("base"), costs("low"), high, maxtext_trips(case))["whole"]
    found = hlo.collectives(results["base"]["hlo"], target.num_devices)
    traffic = sum(c.traffic_bytes * c.per_step for c in found)
    collective_bytes = sum(c.bytes * c.per_step for c in found)
    interconnect = traffic / target.chip.interconnect_bytes_per_s
    step = max(whole["optimal_seconds"], interconnect)
    model_flops = results["base"]["config"]["maxtext_tflops_per_chip_step"]["total"] * 1e12
    memory = results["base"]["memory"]
    total = memory.get("total_bytes") or (
        memory["argument_size_in_bytes"] + memory["output_size_in_bytes"] - memory["alias_size_in_bytes"]
        + memory["temp_size_in_bytes"]
    )  # fmt: skip
    return {
        "memory_gib": total / GiB,
        "collective_gib": collective_bytes / GiB,
        "compute_s": whole["optimal_seconds"],
        "interconnect_s": interconnect,
        "step_s": step,
        "flops_ratio": whole["flops"] / model_flops,
        "model_tflop": model_flops / 1e12,
        "mfu": model_flops / (step * CHIPS["v5p"].peak_bf16_flops),
        "tokens_per_s_per_chip": seq * rows * micro / step,
    }


def our_estimate(numbers: dict) -> dict:
    cost = numbers["cost_estimate"]
    return {
        "memory_gib": numbers["memory"]["total"] / GiB,
        "collective_gib": cost.get("collective_bytes", 0.0) / GiB,
        "compute_s": cost["compute_s"],
        "interconnect_s": cost["interconnect_s"],
        "step_s": cost["step_s"],
        "flops_ratio": cost["whole"]["flops"] / cost["model_flops"],
        "model_tflop": cost["model_flops"] / 1e12,
        "mfu": cost["mfu"],
        "tokens_per_s_per_chip": cost["tokens_per_s_per_device"],
    }


def install_libtpu_052() -> Path:
    if not (LIBTPU_052 / "libtpu").is_dir():
        run([sys.executable, "-m", "pip", "install", "-q", "--target", str(LIBTPU_052), "libtpu==0.0.52"])
    return LIBTPU_052


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: both")
    parser.add_argument("--same-libtpu", action="store_true", help="also compile ours with MaxText's libtpu")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "aot_vs_maxtext"))
    parser.add_argument("--json", default="", help="also write the table's numbers here")
    parser.add_argument("--reuse", action="store_true", help="keep the compiles already in --work")
    parser.add_argument("--remat", default="full", choices=sorted(REMAT), help="both sides' remat policy")
    parser.add_argument(
        "--compiler-options",
        default="auto",
        help="both sides' compiler options: auto (cft_jax's tuned ones for the chip), '', '--name=value ...'",
    )
    args = parser.parse_args()
    global REUSE, POLICY, OPTIONS
    REUSE, POLICY, OPTIONS = args.reuse, args.remat, args.compiler_options
    if not MAXTEXT_PYTHON.exists():
        sys.exit("no .venv-maxtext: run `bash benchmarks/maxtext_env.sh` first")
    options = "" if OPTIONS == "auto" else "options-" + hashlib.sha256(OPTIONS.encode()).hexdigest()[:8]
    work = Path(args.work) / ("" if POLICY == "full" else POLICY) / options
    work.mkdir(parents=True, exist_ok=True)
    print("command: python benchmarks/aot_vs_maxtext.py " + shlex.join(sys.argv[1:]))
    table = {}
    for case in args.case or sorted(CASES):
        rows = {"cft_jax (libtpu 0.0.42.1)": our_estimate(ours(case, work / f"ours_{case}.json"))}
        if args.same_libtpu:
            numbers = ours(case, work / f"ours052_{case}.json", install_libtpu_052())
            rows["cft_jax (libtpu 0.0.52)"] = our_estimate(numbers)
        rows["MaxText 0.2.5 (libtpu 0.0.52)"] = maxtext_estimate(
            case, maxtext(case, work / f"maxtext_{case}")
        )
        table[case] = rows
    print("\nCOMPILER ESTIMATES (libtpu cost model + ICI ring traffic), per chip, same method both sides:")
    header = f"{'case':6} {'step':32} {'memory GiB':>10} {'coll. GiB':>9} {'compute s':>9} {'ICI s':>7} "
    print(header + f"{'step s':>7} {'flops/model':>11} {'est. MFU':>8} {'tok/s/chip':>10}")
    for case, rows in table.items():
        for name, r in rows.items():
            print(
                f"{case:6} {name:32} {r['memory_gib']:10.2f} {r['collective_gib']:9.1f} "
                f"{r['compute_s']:9.3f} {r['interconnect_s']:7.3f} {r['step_s']:7.3f} "
                f"{r['flops_ratio']:11.3f} {100 * r['mfu']:7.1f}% {r['tokens_per_s_per_chip']:10.0f}"
            )
        ours_row, theirs = rows["cft_jax (libtpu 0.0.42.1)"], rows["MaxText 0.2.5 (libtpu 0.0.52)"]
        print(f"{case:6} ratio cft_jax / MaxText: est. MFU {ours_row['mfu'] / theirs['mfu']:.3f}, "
              f"memory {ours_row['memory_gib'] / theirs['memory_gib']:.3f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
