"""Ahead-of-time compile of the trainer's exact step for hardware that is not here (`--aot TARGET`).

`compile_for(config, model_config, target)` builds the run's `TrainStep` around abstract parameters
on the target's abstract devices (no weights, no data, no accelerator), lowers it with the target's
fused attention kernel and compiles it with that platform's real compiler (libtpu, or XLA's CUDA
compiler). The report is the compiler's: per-device memory (`memory_analysis`), the collectives of
the optimized HLO with their bytes per step (loop trip counts applied, `cft_jax.aot.hlo`), and, on
TPU, the compiler's cost model. A step that does not fit fails with the compiler's own message turned
into advice.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path
from typing import Any

import jax

from cft_jax.aot import hlo
from cft_jax.aot.targets import Target, devices_needed
from cft_jax.config import TrainConfig, format_flags, resolve_mesh
from cft_jax.errors import InputError
from cft_jax.models.attention_kernels import choose_attention, lowering_for
from cft_jax.models.config import ModelConfig
from cft_jax.models.loops import ROLLED, Unroll, unrolled
from cft_jax.models.sharding import make_mesh
from cft_jax.training.metrics import memory_plan
from cft_jax.training.state import TrainStep, abstract_params

GiB = 2**30


@dataclasses.dataclass
class AotReport:
    """What the compiler says about one compiled step."""

    target: Target
    mesh: tuple[int, int, int]
    attention: str
    remat: str
    rows_per_device: int  # per micro-batch
    seq_len: int
    accumulation_steps: int
    compiler_options: dict[str, Any]  # the step's own (training.compiler_options), then the caller's
    compile_s: float
    memory: dict[str, float]  # bytes per device: argument, output, alias, temp, total
    estimate: dict[str, float]  # the --dry_run plan's bytes per device, same keys as memory_estimate
    collectives: dict[str, dict[str, float]]  # kind -> count, bytes, traffic_bytes per step
    cost: dict[str, float]  # the compiler's cost model ({} where it has none, e.g. GPU)
    hlo_text: str = dataclasses.field(repr=False, default="")

    @property
    def fits(self) -> bool:
        return self.memory["total"] <= self.target.chip.hbm_bytes


def _memory(compiled: Any) -> dict[str, float]:
    stats = compiled.memory_analysis()
    memory = {
        "argument": float(stats.argument_size_in_bytes),
        "output": float(stats.output_size_in_bytes),
        "alias": float(stats.alias_size_in_bytes),
        "temp": float(stats.temp_size_in_bytes),
    }
    memory["code"] = float(stats.generated_code_size_in_bytes)
    # Donated state is aliased: its outputs reuse the arguments' memory; the program itself lives in HBM.
    memory["total"] = (
        memory["argument"] + memory["output"] - memory["alias"] + memory["temp"] + memory["code"]
    )
    memory["host_temp"] = float(getattr(stats, "host_temp_size_in_bytes", 0))
    return memory


def _cost(compiled: Any) -> dict[str, float]:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - the GPU compiler has no cost model ("not supported")
        return {}
    cost = cost[0] if isinstance(cost, list) else cost
    # A multi-slice compile reports optimal_seconds -8: the model does not price DCN; leave it out.
    wanted = ("flops", "bytes accessed", "optimal_seconds")
    return {k: float(v) for k, v in (cost or {}).items() if k in wanted and float(v) >= 0}


def compile_for(
    config: TrainConfig,
    model_config: ModelConfig,
    target: Target,
    *,
    unroll: Unroll = ROLLED,
    compiler_options: dict[str, Any] | None = None,
) -> AotReport:
    """Compiles the step `config` trains, for `target`; InputError with advice when it does not fit."""
    mesh_shape = resolve_mesh(config.mesh, target.num_devices)
    devices_needed(target, mesh_shape)
    mesh = make_mesh(*mesh_shape, devices=list(target.devices))
    graphdef, params, rest = abstract_params(config, model_config, mesh)
    step = TrainStep.build(
        config, mesh, graphdef, rest, params, total_steps=max(config.training.max_steps, 1)
    )
    t = config.training
    rows = t.global_batch // t.accumulation_steps // (mesh_shape[0] * mesh_shape[1])
    q = jax.ShapeDtypeStruct(
        (rows, config.data.seq_len, model_config.num_heads // mesh_shape[2], model_config.head_dim),
        jax.numpy.dtype(config.model.compute_dtype),
    )
    k = jax.ShapeDtypeStruct(
        (*q.shape[:2], max(model_config.num_kv_heads // mesh_shape[2], 1), q.shape[3]), q.dtype
    )
    attention = choose_attention(config.model.attention_impl, q, k, target.platform)
    estimate = memory_plan(config, model_config, target.num_devices)
    start = time.perf_counter()
    with lowering_for(target.platform), unrolled(unroll):
        lowered = step.lower(
            params,
            step.abstract_opt_state(params),
            step.abstract_batch(t.global_batch, config.data.seq_len),
        )
    try:
        compiled = lowered.compile(compiler_options=compiler_options)  # added to the step's own
    except jax.errors.JaxRuntimeError as error:
        raise InputError(out_of_memory_advice(str(error), config, target, estimate)) from None
    compile_s = time.perf_counter() - start
    text = optimized_hlo(compiled)
    return AotReport(
        target=target,
        mesh=mesh_shape,
        attention=attention,
        remat=config.model.remat,
        rows_per_device=rows,
        seq_len=config.data.seq_len,
        accumulation_steps=t.accumulation_steps,
        compiler_options={**step.compiler_options, **(compiler_options or {})},
        compile_s=compile_s,
        memory=_memory(compiled),
        estimate=estimate,
        collectives=hlo.per_step_totals(hlo.collectives(text, target.num_devices)),
        cost=_cost(compiled),
        hlo_text=text,
    )


def optimized_hlo(compiled: Any) -> str:
    """The optimized HLO text of a compiled step. jaxlib cannot read back the HLO of a libtpu newer
    than its own (async ops changed shape); XLA's dump (XLA_FLAGS=--xla_dump_to=DIR), which libtpu
    writes itself, has the same text."""
    try:
        return compiled.as_text()
    except jax.errors.JaxRuntimeError as error:
        match = re.search(r"--xla_dump_to=(\S+)", os.environ.get("XLA_FLAGS", ""))
        dumps = sorted(Path(match.group(1)).glob("*train_step*after_optimizations.txt")) if match else []
        if not dumps:
            raise InputError(
                f"this jaxlib cannot read the compiled step back ({str(error).splitlines()[0]}); "
                "rerun with XLA_FLAGS=--xla_dump_to=DIR --xla_dump_hlo_as_text to read it from the dump"
            ) from None
        return max(dumps, key=lambda p: p.stat().st_mtime).read_text()


# The compiler's own accounting in its out-of-memory messages: "Used 187.3G of 95.0G hbm" or "the
# total memory required for HLO temporaries (39.55G) exceeds available HBM (31.25G)".
_USED = re.compile(r"([0-9.]+)([KMGT])?i?B?\s+of\s+[0-9.]+[KMGT]?i?B?\s+hbm", re.IGNORECASE)
_TEMPORARIES = re.compile(r"HLO temporaries \(([0-9.]+)([KMGT])?\)", re.IGNORECASE)
_SCALE = {None: 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def out_of_memory_advice(
    message: str, config: TrainConfig, target: Target, estimate: dict[str, float]
) -> str:
    """The compiler's failure, and for an out-of-memory one which knob to turn and by how much."""
    first = next((line for line in message.splitlines() if line.strip()), message)
    if not re.search(r"RESOURCE_EXHAUSTED|out of memory|HbmOom|exceed", message, re.IGNORECASE):
        return f"--aot {target.name}: the compiler failed: {first}"
    needed = estimate["total"]
    if match := _USED.search(message):
        needed = float(match.group(1)) * _SCALE[match.group(2)]
    elif match := _TEMPORARIES.search(message):  # the temporaries alone: at least that
        needed = max(needed, float(match.group(1)) * _SCALE[match.group(2)])
    hbm = target.chip.hbm_bytes
    over = needed - hbm
    t = config.training
    activations = estimate["activations"]
    advice = [
        f"--aot {target.name}: the step needs at least {needed / GiB:.1f} GiB per device of "
        f"{hbm / GiB:.1f} GiB HBM",
        f"(the compiler: {first.strip()[:300]})",
    ]
    # Smaller micro-batches shrink the activations by 1 - 1/factor; suggest it only where that suffices.
    factor = 2
    while activations * (1 - 1 / factor) < over and t.global_batch % (2 * factor * t.accumulation_steps) == 0:
        factor *= 2
    fits = activations * (1 - 1 / factor) >= over and t.global_batch % (factor * t.accumulation_steps) == 0
    if activations > 0 and fits:
        advice.append(
            f"raise training.accumulation_steps from {t.accumulation_steps} to "
            f"{t.accumulation_steps * factor} "
            f"(activations, ~{activations / GiB:.1f} GiB of the plan, scale with the micro-batch)"
        )
    if config.model.remat != "full":
        advice.append(f"set model.remat=full (now {config.model.remat!r}): only each layer's input is kept")
    if config.optimizer.mu_dtype == "param" and config.model.param_dtype == "float32":
        saved = estimate["optimizer"] / 4
        advice.append(
            f"set optimizer.mu_dtype=bfloat16: AdamW's first moment in bf16 saves {saved / GiB:.1f} GiB"
        )
    advice.append("or use more chips, or mesh.tensor > 1 (both split the parameters and optimizer state)")
    return "; ".join(advice)


def format_report(report: AotReport) -> str:
    """The report as the lines `--aot` prints."""
    m, chip, target = report.memory, report.target.chip, report.target
    data, fsdp, tensor = report.mesh
    lines = [
        f"compiled for {target.name}: {target.num_devices} x {chip.kind} ({target.topology}, {target.slices} "
        f"slice(s)), mesh data={data} fsdp={fsdp} tensor={tensor}, in {report.compile_s:.1f} s",
        f"step: {report.rows_per_device} rows x {report.seq_len} tokens per device per micro-batch, "
        f"{report.accumulation_steps} micro-batch(es); attention {report.attention}, remat {report.remat}",
        "compiler options: " + (format_flags(report.compiler_options) or "the compiler's defaults"),
        "per-device memory from the compiler (GiB):",
        f"  arguments {m['argument'] / GiB:.2f}  outputs {m['output'] / GiB:.2f}  "
        f"aliased {m['alias'] / GiB:.2f}  "
        f"temporaries {m['temp'] / GiB:.2f}  total {m['total'] / GiB:.2f} of {chip.hbm_bytes / GiB:.1f} HBM"
        + ("" if report.fits else "  DOES NOT FIT"),
        f"  the --dry_run plan: {report.estimate['total'] / GiB:.2f} "
        f"({report.estimate['total'] / m['total']:.2f}x "
        "the compiler's; the compiler's number is the one to trust)",
        "collectives per step per device (loop trip counts applied):",
    ]
    for kind, totals in report.collectives.items():
        if totals["count"]:
            lines.append(
                f"  {kind:18s} {int(totals['count']):7d} ops  {totals['bytes'] / GiB:9.2f} GiB  "
                f"ring traffic {totals['traffic_bytes'] / GiB:9.2f} GiB"
            )
    total = sum(v["bytes"] for v in report.collectives.values())
    lines.append(f"  total              {total / GiB:21.2f} GiB")
    if report.cost:
        lines.append(
            "compiler cost model (an estimate; it counts each loop body once, see docs/performance.md): "
            + ", ".join(f"{k} {v:.4g}" for k, v in report.cost.items())
        )
    return "\n".join(lines)


def allow_shared_libtpu() -> None:
    """libtpu locks /tmp/libtpu_lockfile for the process that owns real chips; compiling for abstract
    ones touches no chip, so several compiles (or a compile beside a test run) may share the machine."""
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def report_numbers(report: AotReport) -> dict[str, Any]:
    """The report as JSON-ready numbers (bytes, seconds), for tables and benchmarks."""
    return {
        "target": report.target.name,
        "topology": report.target.topology,
        "chip": report.target.chip.kind,
        "devices": report.target.num_devices,
        "mesh": dict(zip(("data", "fsdp", "tensor"), report.mesh, strict=True)),
        "attention": report.attention,
        "remat": report.remat,
        "compiler_options": report.compiler_options,
        "rows_per_device": report.rows_per_device,
        "seq_len": report.seq_len,
        "accumulation_steps": report.accumulation_steps,
        "compile_s": report.compile_s,
        "memory": report.memory,
        "hbm_bytes": report.target.chip.hbm_bytes,
        "estimate": report.estimate,
        "collectives": report.collectives,
        "cost": report.cost,
    }
