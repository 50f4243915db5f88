"""Compile MaxText's real train step for a TPU topology on a CPU-only machine, as a reference for cft_jax.

The TPU compiler in libtpu runs on the host: the step is lowered and compiled against abstract TPU
devices from jax.experimental.topologies, so no TPU is needed. Every step goes through MaxText's own
functions, in the order its train_compile entry point calls them (config with overrides, topology
mesh, shaped sharded train state, the functional train step, jit/lower/compile); nothing from
cft_jax is imported, because this runs in its own environment (.venv-maxtext, Python 3.12,
maxtext[tpu] 0.2.5, jax 0.12) made by benchmarks/maxtext_env.sh.

Run from the repository root:

    bash benchmarks/maxtext_env.sh
    .venv-maxtext/bin/python benchmarks/maxtext_compile.py --model qwen2.5-7b --topology v5p-32 \\
        --seq 2048 --per-device-batch 8 --grad-accum 4 --remat full --attention flash --out /tmp/mt-7b

Writes to --out: memory.json (every field of compiled.memory_analysis(), plus the per-chip total),
cost.json (compiled.cost_analysis()), hlo.txt (compiled.as_text()), config.json (the resolved knobs,
MaxText's own model-FLOP count and the compile time).

Loop knobs. MaxText 0.2.5 has `scan_layers` (true: one jax.lax.scan over the decoder layers; false:
straight-line layers) but no config key for the unroll factor of the layer scan or of the gradient
accumulation scan. --layer-unroll passes `unroll=` to the decoder's layer-scan helper (a parameter
that helper already takes, defaulting to 1); --grad-accum-unroll sets `unroll=` on the one
jax.lax.scan in maxtext.utils.gradient_accumulation. They exist because cost_analysis() counts a
while loop's body once: the difference of compiles at unroll 2 and 4 is two iterations
(benchmarks/aot_vs_maxtext.py rebuilds the step with cft_jax.aot.cost.rebuild, which says why not
1 and 2). On multi-chip FSDP meshes XLA
also puts windowed-einsum loops around sharded matmuls; --no-windowed-einsum turns them off so those
matmuls are counted too (memory is unchanged). --no-scan-layers needs no layer difference but
compiles several times slower and plans more memory.

Environment: no TPU variables are needed; libtpu's warnings about TPU_ACCELERATOR_TYPE and
TPU_WORKER_HOSTNAMES are harmless here. ALLOW_MULTIPLE_LIBTPU_LOAD is set (see below).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

# Compile-only: no TPU is opened, so several compiles (or other libtpu users on the machine) may
# coexist; without this libtpu refuses to load while another process holds /tmp/libtpu_lockfile.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

GIB = 1024**3
# XLA's loops that overlap an FSDP all-gather / reduce-scatter with the matmul consuming it, chunk
# by chunk; cost_analysis() would count one chunk of each.
NO_WINDOWED_EINSUM = (
    "--xla_tpu_enable_windowed_einsum_for_all_gather=false "
    "--xla_tpu_enable_windowed_einsum_for_reduce_scatter=false"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-7b", help="MaxText model_name (a configs/models/*.yml)")
    parser.add_argument("--topology", default="v5p-32", help="MaxText compile_topology, e.g. v5p-8, v5p-32")
    parser.add_argument("--num-slices", type=int, default=1)
    parser.add_argument("--seq", type=int, default=2048, help="max_target_length")
    parser.add_argument(
        "--per-device-batch",
        type=float,
        default=8,
        help="MaxText per_device_batch_size: rows per chip in one micro-batch",
    )
    parser.add_argument(
        "--grad-accum", type=int, default=1, help="gradient_accumulation_steps (micro-batches)"
    )
    parser.add_argument(
        "--remat", default="full", help="remat_policy (full, minimal, save_dot_except_mlp, ...)"
    )
    parser.add_argument(
        "--attention", default="flash", help="attention kernel: flash is the Pallas splash kernel on TPU"
    )
    parser.add_argument("--scan-layers", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--layer-unroll", type=int, default=1, help="unroll factor of the decoder-layer scan")
    parser.add_argument(
        "--grad-accum-unroll", type=int, default=1, help="unroll factor of the micro-batch scan"
    )
    parser.add_argument(
        "--xla-flags",
        default="",
        help="'--flag=value ...' passed as compiler options of this compile (MaxText's compile_xla_flags)",
    )
    parser.add_argument(
        "--no-windowed-einsum", action="store_true", help=f"add {NO_WINDOWED_EINSUM} to --xla-flags"
    )
    parser.add_argument(
        "--libtpu-init-args",
        default="",
        help="appended to LIBTPU_INIT_ARGS before libtpu loads (flags that must be set at start-up)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other MaxText config override; repeatable",
    )
    parser.add_argument("--no-hlo", action="store_true", help="skip hlo.txt (it is large for big models)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    return parser.parse_args(argv)


def patch_loop_unrolls(layer_unroll: int, grad_accum_unroll: int) -> None:
    """Make MaxText's layer scan and gradient-accumulation scan use the given unroll factors."""
    if layer_unroll != 1:
        from maxtext.layers import nnx_decoders

        original = nnx_decoders.NNXDecoder._apply_layers_sequentially

        @functools.wraps(original)
        def with_unroll(self, *args, **kwargs):
            # Only the default changes: call sites that pick their own unroll (Gemma 4) keep it.
            kwargs.setdefault("unroll", layer_unroll)
            return original(self, *args, **kwargs)

        nnx_decoders.NNXDecoder._apply_layers_sequentially = with_unroll

    if grad_accum_unroll != 1:
        import jax

        original_scan = jax.lax.scan
        ga_module = "maxtext.utils.gradient_accumulation"

        @functools.wraps(original_scan)
        def scan(*args, **kwargs):
            # That module calls jax.lax.scan exactly once (the micro-batch loop); other callers,
            # including JAX's own, go through untouched.
            if sys._getframe(1).f_globals.get("__name__") == ga_module:
                kwargs.setdefault("unroll", grad_accum_unroll)
            return original_scan(*args, **kwargs)

        jax.lax.scan = scan


def maxtext_argv(args: argparse.Namespace) -> list[str]:
    """The command line MaxText's pyconfig.initialize would get from train_compile."""
    from maxtext.configs import pyconfig

    overrides = {
        "compile_topology": args.topology,
        "compile_topology_num_slices": args.num_slices,
        "model_name": args.model,
        "max_target_length": args.seq,
        "per_device_batch_size": args.per_device_batch,
        "gradient_accumulation_steps": args.grad_accum,
        "remat_policy": args.remat,
        "attention": args.attention,
        "scan_layers": str(args.scan_layers).lower(),
        # A compile writes nothing: keep MaxText's run directory and checkpointer out of the way.
        "base_output_directory": str(args.out / "maxtext_output"),
        "run_name": "maxtext_compile",
        "enable_checkpointing": "false",
    }
    xla_flags = " ".join(
        filter(None, [args.xla_flags, NO_WINDOWED_EINSUM if args.no_windowed_einsum else ""])
    )
    if xla_flags:
        overrides["compile_xla_flags"] = xla_flags
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set wants KEY=VALUE, got {item!r}")
        overrides[key] = value
    base_yml = os.path.join(pyconfig.MAXTEXT_CONFIGS_DIR, "base.yml")
    return ["maxtext_compile", base_yml, *(f"{k}={v}" for k, v in overrides.items())]


def compile_train_step(config):
    """MaxText's train step, compiled for config.compile_topology: (compiled, mesh)."""
    from flax.core.spmd import logical_axis_rules as axis_rules
    from maxtext.trainers.pre_train import train, train_compile
    from maxtext.utils import maxtext_utils, sharding

    train_compile.validate_config(config)
    mesh = train_compile.get_topology_mesh(config)
    shaped_args, shaped_kwargs, state_shardings, _, model = train_compile.get_shaped_inputs(mesh, config)
    params_shardings, state_shardings = sharding.maybe_update_params_sharding_with_opt(
        config, state_shardings
    )
    input_state_shardings = sharding.build_zero1_input_state_mesh_shardings(
        config, state_shardings, params_shardings
    )
    data_sharding = sharding.get_input_data_sharding(config, mesh)
    func, in_shard, out_shard, static_argnums, donate_argnums = (
        maxtext_utils.get_functional_train_with_signature(
            train.train_step, data_sharding, input_state_shardings, model, config, params_shardings
        )
    )
    compiled = train_compile.jit_and_compile(
        func,
        shaped_args,
        shaped_kwargs,
        mesh,
        in_shard,
        out_shard,
        static_argnums,
        donate_argnums,
        config,
        axis_rules(config.logical_axis_rules),
    )
    return compiled, mesh


def memory_fields(compiled) -> dict:
    stats = compiled.memory_analysis()
    fields = {
        name: getattr(stats, name)
        for name in dir(stats)
        if not name.startswith("_") and isinstance(getattr(stats, name), int)
    }
    # Peak HBM per chip as XLA plans it: live inputs and outputs (donated ones counted once),
    # scratch, and the program itself.
    total = (
        fields["argument_size_in_bytes"]
        + fields["output_size_in_bytes"]
        - fields["alias_size_in_bytes"]
        + fields["temp_size_in_bytes"]
        + fields["generated_code_size_in_bytes"]
    )
    fields["total_per_chip_bytes"] = total
    fields["total_per_chip_gib"] = total / GIB
    return fields


def cost_fields(compiled) -> dict:
    cost = compiled.cost_analysis()
    # Older JAX returns one dict per device program; the SPMD step has one.
    if isinstance(cost, list | tuple):
        cost = cost[0] if len(cost) == 1 else {str(i): c for i, c in enumerate(cost)}
    return {key: float(value) for key, value in dict(cost).items()}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # train_compile's own start-up: its RNG implementation and the matching libtpu flag. Flags go in
    # before the TPU plugin is first initialised (when the topology is built).
    os.environ["LIBTPU_INIT_ARGS"] = " ".join(
        filter(
            None,
            [
                os.environ.get("LIBTPU_INIT_ARGS", ""),
                "--xla_tpu_spmd_rng_bit_generator_unsafe=true",
                args.libtpu_init_args,
            ],
        )
    )
    import jax
    from maxtext.configs import pyconfig
    from maxtext.utils import maxtext_utils

    jax.config.update("jax_default_prng_impl", "unsafe_rbg")
    patch_loop_unrolls(args.layer_unroll, args.grad_accum_unroll)

    config = pyconfig.initialize(maxtext_argv(args))
    start = time.perf_counter()
    compiled, mesh = compile_train_step(config)
    compile_seconds = time.perf_counter() - start

    memory = memory_fields(compiled)
    cost = cost_fields(compiled)
    total_tflops, weight_tflops, attention_tflops = maxtext_utils.calculate_tflops_training_per_device(
        config, log=False
    )
    chips = mesh.devices.size
    rows = config.per_device_batch_size
    resolved = {
        "model": config.model_name,
        "topology": config.compile_topology,
        "num_slices": config.compile_topology_num_slices,
        "chips": int(chips),
        "mesh": dict(zip(mesh.axis_names, (int(n) for n in mesh.devices.shape), strict=True)),
        "seq": config.max_target_length,
        "rows_per_chip_per_microbatch": rows,
        "microbatches": config.gradient_accumulation_steps,
        "tokens_per_chip_per_step": int(rows * config.max_target_length * config.gradient_accumulation_steps),
        "global_batch_rows": config.global_batch_size_to_train_on,
        "remat": config.remat_policy,
        "attention": config.attention,
        "scan_layers": config.scan_layers,
        "layer_unroll": args.layer_unroll,
        "grad_accum_unroll": args.grad_accum_unroll,
        "compile_xla_flags": config.compile_xla_flags,
        "libtpu_init_args": os.environ["LIBTPU_INIT_ARGS"],
        "overrides": args.set,
        "maxtext_tflops_per_chip_step": {
            "total": total_tflops,
            "learnable_weights": weight_tflops,
            "attention": attention_tflops,
        },
        "compile_seconds": compile_seconds,
        "versions": {"jax": jax.__version__, **_package_versions("maxtext", "libtpu", "flax")},
    }
    (args.out / "memory.json").write_text(json.dumps(memory, indent=1) + "\n")
    (args.out / "cost.json").write_text(json.dumps(cost, indent=1, sort_keys=True) + "\n")
    (args.out / "config.json").write_text(json.dumps(resolved, indent=1, default=str) + "\n")
    if not args.no_hlo:
        (args.out / "hlo.txt").write_text(compiled.as_text())

    print(
        f"{resolved['model']} on {resolved['topology']} ({chips} chips), seq {resolved['seq']}, "
        f"{rows:g} rows x {resolved['microbatches']} micro-batches per chip: "
        f"{memory['total_per_chip_gib']:.2f} GiB per chip, compile {compile_seconds:.0f} s, "
        f"cost_analysis flops {cost.get('flops', float('nan')) / 1e12:.2f} T (loop bodies once), "
        f"MaxText model count {total_tflops:.2f} TFLOP per chip-step; wrote {args.out}"
    )


def _package_versions(*names: str) -> dict[str, str]:
    from importlib import metadata

    return {name: metadata.version(name) for name in names}


if __name__ == "__main__":
    main()
