"""Where a compiled TPU step spends its time, by libtpu's own per-instruction cycle estimates.

TPU's compiler writes an `estimated_cycles` figure into the backend config of each instruction it
schedules (XLA's fusions and copies; collectives, async copies and Pallas kernels carry none). Summed
with the loops' trip counts (`cft_jax.aot.hlo.instruction_cycles`) they give a whole-step view of the
program as it runs, without the unrolled recompiles `--aot_cost` needs, and a breakdown by loop body
and instruction. This is how the unroll-1-to-2 artifact of the old whole-step estimate was found
(docs/performance.md). Every number is a COMPILER ESTIMATE.

    python -m cft_jax.train --config configs/qwen7b_v5p.py --shape qwen2.5-1.5b --aot v5p-8 \\
        --aot_hlo /tmp/ours.hlo [overrides]
    python benchmarks/hlo_cycles.py /tmp/ours.hlo [/tmp/aot_vs_maxtext/maxtext_1.5b/base/hlo.txt] [--top 15]

Cycles become seconds at the chip's clock: v5p 1.75 GHz by default, what its 459 TFLOP/s bf16 gives
for 8 MXUs (4 per TensorCore, 2 TensorCores) of 128 x 128 multiply-adds (459e12 / 262,144).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cft_jax.aot.hlo import instruction_cycles  # noqa: E402


def short(op_name: str) -> str:
    """The JAX op name without the prefixes every instruction shares."""
    return re.sub(
        r"jit\(train_step\)/|(transpose\()?jvp\(\)\)?/|eval_jaxpr/|while/body/|closed_call/", "", op_name
    )


def report(path: str, clock_hz: float, top: int) -> float:
    found = instruction_cycles(Path(path).read_text())
    if not found:
        sys.exit(f"{path}: no estimated_cycles in this HLO (write it with --aot_hlo on TPU)")
    per_computation: dict[tuple[str, int], int] = defaultdict(int)
    for c in found:
        per_computation[(c.computation, c.per_step)] += c.cycles
    total = sum(c.cycles * c.per_step for c in found) / clock_hz
    print(f"{path}: {total * 1e3:.1f} ms per step of XLA-scheduled instructions (kernels not priced)")
    ranked = sorted(per_computation.items(), key=lambda item: -item[1] * item[0][1])
    for (name, times), cycles in ranked[:6]:
        each, per_step = cycles / clock_hz * 1e3, cycles * times / clock_hz * 1e3
        print(f"  {name[:56]:56} x{times:<4} {each:8.3f} ms each {per_step:8.1f} ms")
    heaviest = ranked[0][0][0]
    print(f"  top instructions of {heaviest}:")
    for c in sorted((c for c in found if c.computation == heaviest), key=lambda c: -c.cycles)[:top]:
        print(f"    {c.cycles / clock_hz * 1e6:8.1f} us  {c.opcode:10} {short(c.op_name)[-90:]}")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hlo", nargs="+", help="optimized HLO text (--aot_hlo, or MaxText's hlo.txt)")
    parser.add_argument("--clock_ghz", type=float, default=1.75)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    totals = [report(path, args.clock_ghz * 1e9, args.top) for path in args.hlo]
    if len(totals) > 1:
        print("ratios to the first: " + ", ".join(f"{t / totals[0]:.3f}" for t in totals[1:]))


if __name__ == "__main__":
    main()
