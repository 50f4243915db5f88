"""The whole step's cost from the TPU compiler's cost model, and the step time and MFU it implies.

The cost model (`compiled.cost_analysis()`) counts a while loop's body once, whatever its trip
count, so the step is compiled four times: as it is, and with one loop at a time unrolled by 2
(`cft_jax.models.loops`): the decoder layers, the loss's vocabulary chunks, the micro-batches. Each
difference is one more iteration of that loop, and the whole step is rebuilt as

    whole = base + (L - 1) * layer + (C - 1) * chunk + (A - 1) * (micro + (L - 1) * layer + (C - 1) * chunk)

for L layers, C full vocabulary chunks and A micro-batches (`micro` is one micro-batch's body as the
base counts it: each inner loop once). XLA's windowed-einsum loops hide cost the same way, so these
compiles turn them off (memory is unchanged). Flops, bytes accessed and the model's own time
(`optimal_seconds`) are rebuilt alike.

The cost model prices a collective as memory traffic only. The estimate adds the interconnect: the
ring traffic of the collectives (`cft_jax.aot.hlo`) over the chip's ICI bandwidth, assuming, as XLA's
asynchronous collectives are scheduled to, that they overlap with compute: step time =
max(compute, interconnect). Everything here is a compiler estimate, not a measurement.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cft_jax.aot.compile import AotReport, compile_for
from cft_jax.aot.targets import Target
from cft_jax.config import TrainConfig
from cft_jax.models.config import ModelConfig
from cft_jax.models.loops import Unroll
from cft_jax.training.step import vocab_chunks

# The windowed-einsum rewrites put their own while loops around matmuls (their bodies would be
# counted once too); turning them off changes the schedule, not the memory.
NO_WINDOWED_EINSUM = {
    "xla_tpu_enable_windowed_einsum_for_all_gather": False,
    "xla_tpu_enable_windowed_einsum_for_reduce_scatter": False,
}
COSTS = ("flops", "bytes accessed", "optimal_seconds")


@dataclasses.dataclass
class StepCost:
    """The rebuilt whole-step estimate for one device, and its parts."""

    whole: dict[str, float]  # flops, bytes accessed, optimal_seconds of the whole step
    per_layer: dict[str, float]  # one decoder layer, forward + backward (+ remat), one micro-batch
    per_chunk: dict[str, float]  # one vocabulary chunk of the loss, forward + backward
    outside: dict[str, float]  # the optimizer update and everything outside the micro-batch loop
    model_flops: float  # 6N + attention per token (MaxText's count), per device per step
    interconnect_s: float  # ring traffic of the collectives / ICI bandwidth
    compute_s: float
    step_s: float
    mfu: float
    tokens_per_s_per_device: float
    base: AotReport = dataclasses.field(repr=False)


def _costs(report: AotReport) -> dict[str, float]:
    if not report.cost:
        raise ValueError(f"{report.target.name}: this compiler has no cost model (only TPU's does)")
    return {k: report.cost.get(k, 0.0) for k in COSTS}


def _minus(a: dict[str, float], b: dict[str, float], divide: float = 1.0) -> dict[str, float]:
    return {k: (a[k] - b[k]) / divide for k in COSTS}


def whole_step_cost(config: TrainConfig, model_config: ModelConfig, target: Target) -> StepCost:
    """Compiles the step four times for `target` and rebuilds its whole cost (module docstring)."""
    layers = model_config.num_layers
    chunks, _ = vocab_chunks(model_config.vocab_size, config.training.vocab_chunk)
    micro = config.training.accumulation_steps

    def compiled(unroll: Unroll) -> AotReport:
        return compile_for(config, model_config, target, unroll=unroll, compiler_options=NO_WINDOWED_EINSUM)

    base = compiled(Unroll())
    c0 = _costs(base)
    # An unroll by 2 of an odd trip count adds a remainder copy of the body beside the loop.
    layer = _minus(_costs(compiled(Unroll(layers=2))), c0, 1 + layers % 2) if layers > 1 else c0
    chunk = _minus(_costs(compiled(Unroll(vocab_chunks=2))), c0, 1 + chunks % 2) if chunks > 1 else None
    chunk = chunk or dict.fromkeys(COSTS, 0.0)
    step = {k: c0[k] + (layers - 1) * layer[k] + (chunks - 1) * chunk[k] for k in COSTS}
    if micro > 1:
        body = _minus(_costs(compiled(Unroll(micro_batches=2))), c0, 1 + micro % 2)
        one_micro = {k: body[k] + (layers - 1) * layer[k] + (chunks - 1) * chunk[k] for k in COSTS}
        step = {k: step[k] + (micro - 1) * one_micro[k] for k in COSTS}
        outside = {k: c0[k] - body[k] for k in COSTS}
    else:
        outside = dict.fromkeys(COSTS, 0.0)
    traffic = sum(totals["traffic_bytes"] for totals in base.collectives.values())
    interconnect_s = traffic / target.chip.interconnect_bytes_per_s
    compute_s = step["optimal_seconds"]
    step_s = max(compute_s, interconnect_s)
    tokens = config.training.global_batch * config.data.seq_len / target.num_devices
    model_flops = model_config.flops_per_token(config.data.seq_len) * tokens
    return StepCost(
        whole=step,
        per_layer=layer,
        per_chunk=chunk,
        outside=outside,
        model_flops=model_flops,
        interconnect_s=interconnect_s,
        compute_s=compute_s,
        step_s=step_s,
        mfu=model_flops / (step_s * target.chip.peak_bf16_flops),
        tokens_per_s_per_device=tokens / step_s,
        base=base,
    )


def format_cost(cost: StepCost) -> str:
    """The estimate as the lines `--aot ... --cost` prints, labelled as the estimate it is."""
    chip = cost.base.target.chip
    w = cost.whole
    return "\n".join(
        [
            "whole-step estimate from the compiler's cost model (an ESTIMATE, not a measurement; "
            "loops rebuilt from unroll-2 compiles, windowed einsums off):",
            f"  compute {cost.compute_s:.3f} s, interconnect {cost.interconnect_s:.3f} s "
            f"(ring traffic at {chip.interconnect_bytes_per_s / 1e9:.0f} GB/s, {chip.source}): "
            f"step {cost.step_s:.3f} s assuming they overlap",
            f"  {w['flops'] / 1e12:.2f} TFLOP executed per device ({w['flops'] / cost.model_flops:.3f}x the "
            f"model's {cost.model_flops / 1e12:.2f}: remat and the loss recompute), "
            f"{w['bytes accessed'] / 2**30:.1f} GiB of HBM traffic",
            f"  estimated MFU {100 * cost.mfu:.1f}% of {chip.peak_bf16_flops / 1e12:.0f} TFLOP/s bf16, "
            f"{cost.tokens_per_s_per_device:.0f} tokens/s per device",
            f"  per layer (fwd + bwd, one micro-batch) {cost.per_layer['optimal_seconds'] * 1e3:.2f} ms, "
            f"per loss chunk {cost.per_chunk['optimal_seconds'] * 1e3:.2f} ms, "
            f"outside the micro-batches (optimizer) {cost.outside['optimal_seconds'] * 1e3:.2f} ms",
        ]
    )


def cost_numbers(cost: StepCost) -> dict[str, Any]:
    """JSON-ready numbers of the estimate."""
    return {
        "whole": cost.whole,
        "per_layer": cost.per_layer,
        "per_chunk": cost.per_chunk,
        "outside": cost.outside,
        "model_flops": cost.model_flops,
        "compute_s": cost.compute_s,
        "interconnect_s": cost.interconnect_s,
        "step_s": cost.step_s,
        "mfu": cost.mfu,
        "tokens_per_s_per_device": cost.tokens_per_s_per_device,
        # Of the windowed-einsums-off compile the estimate is made from (the default compile's are in
        # the report: the windowed loops turn some all-gathers into collective-permutes).
        "collective_bytes": sum(t["bytes"] for t in cost.base.collectives.values()),
        "collective_traffic_bytes": sum(t["traffic_bytes"] for t in cost.base.collectives.values()),
    }
