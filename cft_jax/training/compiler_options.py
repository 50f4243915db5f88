"""The XLA / libtpu options the train step is compiled with (`training.compiler_options`).

"auto" takes the table below for the chip the mesh is made of; anything else is an explicit list of
flags, "--name=value ...", as MaxText's `compile_xla_flags` (or "" for the compiler's defaults). They
go to `jax.jit(..., compiler_options=...)`, so they reach the step's compile on the pod and under
`--aot`, and nothing else (the sampler, the evaluation step keep the defaults).

Why each entry (docs/performance.md, "Compiler options"): on TPU v5p the scoped VMEM limit of 96 MiB
(the compiler's default is smaller) lets the compiler keep more of a layer's operands in VMEM. On the
Qwen2.5-1.5B / v5p-8 / 2 x 4096 step with `save_dots_no_batch`, libtpu 0.0.42.1's cost model puts the
step at 0.243 s against 0.265 s without it, 231 against 278 GiB of HBM traffic, at the same flops and
memory (a compiler estimate, not a measurement). Other chips have no entry: nothing was compiled
there to choose a value with.
"""

from __future__ import annotations

from typing import Any

from cft_jax.config import parse_flags

# device_kind of the mesh's devices -> the options "auto" uses.
TUNED: dict[str, dict[str, Any]] = {
    "TPU v5": {"xla_tpu_scoped_vmem_limit_kib": 98304},  # v5p ("TPU v5 lite" is v5e)
}


def step_compiler_options(setting: str, device_kind: str) -> dict[str, Any]:
    """The options for a step on devices of `device_kind` under `training.compiler_options=setting`."""
    if setting.strip() == "auto":
        return dict(TUNED.get(device_kind, {}))
    return parse_flags(setting)
