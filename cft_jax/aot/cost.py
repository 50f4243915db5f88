"""The whole step's cost from the TPU compiler's cost model, and the step time and MFU it implies.

The cost model (`compiled.cost_analysis()`) counts a while loop's body once, whatever its trip
count, so one loop body's cost is taken as a difference of compiles that contain different numbers
of copies of it (`cft_jax.models.loops`: the decoder layers, the loss's chunks, the
micro-batches). The difference is taken between unroll 2 and unroll 4, never between 1 and 2: an
unrolled scan reshapes its stacked inputs to [trips, unroll, ...], and the program around the loop
changes with it (the optimizer's fusions over the reshaped gradients and the zeroed accumulators:
+3.2 ms of the compiler's per-instruction cycle estimates for Qwen2.5-1.5B on v5p-8, the same at
unroll 2 and 4); a 1-to-2 difference charges that once-per-step change to every layer, 27 times.
So the step is compiled as it is (`base`), with every loop at unroll 2 (`low`; a loop of 2 or 3
trips stays rolled there and is compared with its full unroll), and with one loop at a time at
unroll 4; with L layers, C loss chunks (token chunks, or full vocabulary chunks: a remainder chunk is
outside the loop) and A micro-batches,

    layer = (layers at 4 - low) / (extra layer copies),  chunk likewise,
    micro = (micro-batches at 4 - low) / (extra micro copies) - copies of the inner bodies in one,
    whole = base + (A - 1) * micro + (A * L - 1) * layer + (A * C - 1) * chunk

(`micro` is what one micro-batch adds besides its layers and chunks: embedding, loss tail). XLA's
windowed-einsum loops hide cost the same way, so these compiles turn them off (memory is
unchanged). Flops, bytes accessed and the model's own time (`optimal_seconds`) are rebuilt alike.

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
from cft_jax.config import TrainConfig, resolve_mesh
from cft_jax.models.config import ModelConfig
from cft_jax.models.loops import Unroll
from cft_jax.training.step import train_loss_chunks

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
    outside: dict[str, float]  # everything but the loop bodies: the optimizer update, embedding, ...
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


# The two unroll factors whose difference is a loop body's cost (module docstring). A loop of 2 or 3
# trips holds all its copies at either, so it is compared rolled (1 copy) against fully unrolled.
LOW_UNROLL, HIGH_UNROLL = 2, 4


def copies(unroll: int, trips: int) -> int:
    """How many copies of a scan's body a compile at `unroll` holds: `unroll` in the loop plus the
    remainder inlined after it (jax.lax.scan), or all of them once the unroll covers the trips."""
    return trips if unroll >= trips else unroll + trips % unroll


def low_unroll(trips: Unroll) -> Unroll:
    """The unroll of the `low` compile: `LOW_UNROLL` for each loop of 4 or more trips, else 1."""
    return Unroll(*(LOW_UNROLL if n > HIGH_UNROLL - 1 else 1 for n in dataclasses.astuple(trips)))


def rebuild(
    base: dict[str, float], low: dict[str, float], high: dict[str, dict[str, float]], trips: Unroll
) -> dict[str, dict[str, float]]:
    """The whole step and its parts from the costs of compiles (module docstring).

    base: the step as it runs; low: compiled at `low_unroll(trips)`; high[loop]: `low` with that loop
    (a field of `Unroll`) at `HIGH_UNROLL`, for each loop of more than one trip; trips: each loop's
    trip count, as an `Unroll`.
    """
    zero = dict.fromkeys(COSTS, 0.0)
    unroll = low_unroll(trips)

    def low_copies(loop: str) -> int:
        return copies(getattr(unroll, loop), getattr(trips, loop))

    def body(loop: str, per_copy_of: int) -> dict[str, float]:
        n = getattr(trips, loop)
        if n <= 1:
            return zero
        added = (copies(HIGH_UNROLL, n) - low_copies(loop)) * per_copy_of
        return {k: (high[loop][k] - low[k]) / added for k in COSTS}

    layer = body("layers", low_copies("micro_batches"))
    chunk = body("loss_chunks", low_copies("micro_batches"))
    inner = {k: low_copies("layers") * layer[k] + low_copies("loss_chunks") * chunk[k] for k in COSTS}
    micro = (
        {k: v - inner[k] for k, v in body("micro_batches", 1).items()} if trips.micro_batches > 1 else zero
    )
    a, n_layers, n_chunks = trips.micro_batches, trips.layers, trips.loss_chunks
    whole = {
        k: base[k] + (a - 1) * micro[k] + (a * n_layers - 1) * layer[k] + (a * n_chunks - 1) * chunk[k]
        for k in COSTS
    }
    outside = {k: base[k] - layer[k] - chunk[k] - micro[k] for k in COSTS}
    return {"whole": whole, "layer": layer, "chunk": chunk, "micro": micro, "outside": outside}


def whole_step_cost(config: TrainConfig, model_config: ModelConfig, target: Target) -> StepCost:
    """Compiles the step 3-5 times for `target` and rebuilds its whole cost (module docstring)."""
    t = config.training
    data, fsdp, tensor = resolve_mesh(config.mesh, target.num_devices)
    local_tokens = t.global_batch // t.accumulation_steps // (data * fsdp) * config.data.seq_len
    chunks = train_loss_chunks(model_config.vocab_size, t.vocab_chunk, local_tokens, fsdp, tensor)
    trips = Unroll(model_config.num_layers, chunks, t.accumulation_steps)

    def compiled(unroll: Unroll) -> AotReport:
        return compile_for(config, model_config, target, unroll=unroll, compiler_options=NO_WINDOWED_EINSUM)

    base = compiled(Unroll())
    low = low_unroll(trips)
    high = {
        loop: _costs(compiled(dataclasses.replace(low, **{loop: HIGH_UNROLL})))
        for loop, n in dataclasses.asdict(trips).items()
        if n > 1
    }
    parts = rebuild(_costs(base), _costs(base if low == Unroll() else compiled(low)), high, trips)
    step = parts["whole"]
    traffic = sum(totals["traffic_bytes"] for totals in base.collectives.values())
    interconnect_s = traffic / target.chip.interconnect_bytes_per_s
    compute_s = step["optimal_seconds"]
    step_s = max(compute_s, interconnect_s)
    tokens = config.training.global_batch * config.data.seq_len / target.num_devices
    model_flops = model_config.flops_per_token(config.data.seq_len) * tokens
    return StepCost(
        whole=step,
        per_layer=parts["layer"],
        per_chunk=parts["chunk"],
        outside=parts["outside"],
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
            "loops rebuilt from unroll-2 and unroll-4 compiles, windowed einsums off):",
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
            f"outside the loop bodies (optimizer, embedding, loss tail) "
            f"{cost.outside['optimal_seconds'] * 1e3:.2f} ms",
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
