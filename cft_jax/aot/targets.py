"""Hardware to compile for without having it: Cloud TPU slices and GPU nodes as abstract devices.

`resolve_target("v5p-32")` gives the 16 abstract chips of a v5p-32 slice from libtpu's compiler
(`jax.experimental.topologies`), with what the chip offers (HBM, peak bf16 FLOP/s, ICI bandwidth),
so a step can be compiled, measured and planned on any CPU machine. Names:

  TPU slices  v4-N, v5p-N (N TensorCores, two per chip), v5e-N / v5litepod-N, v6e-N (N chips);
              "Kx" in front for K slices joined by DCN (2xv5p-32); or an explicit topology
              (`v5p:4x4x12`, `v6e:4x8`) for shapes the table below does not name.
  GPU nodes   h100xG, h200xG (one node of G GPUs), KxH100xG (K nodes); they need the CUDA plugin
              (`pip install -e '.[gpu]'`) and compile with JAX_PLATFORMS=cpu.
"""

from __future__ import annotations

import dataclasses
import math
import re
from importlib import resources
from typing import Any

from cft_jax.errors import InputError

# Chips of a slice -> the standard topology Cloud TPU gives that slice (gcloud / GKE's shapes).
TOPOLOGY_3D = {
    4: "2x2x1",
    8: "2x2x2",
    16: "2x2x4",
    32: "2x4x4",
    64: "4x4x4",
    128: "4x4x8",
    256: "4x8x8",
    512: "8x8x8",
    1024: "8x8x16",
    2048: "8x16x16",
    4096: "16x16x16",
}
TOPOLOGY_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator: what the compiler's plan is measured against. Figures from the vendor's
    published specifications (`source`)."""

    kind: str
    hbm_bytes: float
    peak_bf16_flops: float
    # Inter-chip bandwidth one chip can drive, bytes/s summed over its links (TPU ICI, GPU NVLink).
    interconnect_bytes_per_s: float
    source: str


GiB = 2**30
CHIPS = {
    "v4": Chip("TPU v4", 32 * GiB, 275e12, 2400e9 / 8, "cloud.google.com/tpu/docs/v4"),
    "v5e": Chip("TPU v5e", 16 * GiB, 197e12, 1600e9 / 8, "cloud.google.com/tpu/docs/v5e"),
    "v5p": Chip("TPU v5p", 95 * GiB, 459e12, 4800e9 / 8, "cloud.google.com/tpu/docs/v5p"),
    "v6e": Chip("TPU v6e", 32 * GiB, 918e12, 3584e9 / 8, "cloud.google.com/tpu/docs/v6e"),
    "h100": Chip("NVIDIA H100 SXM", 80e9, 989e12, 900e9, "nvidia.com/en-us/data-center/h100"),
    "h200": Chip("NVIDIA H200", 141e9, 989e12, 900e9, "nvidia.com/en-us/data-center/h200"),
}
# libtpu's names for each generation, and whether a slice's N counts TensorCores (two per chip).
TPU_GENERATIONS = {"v4": ("v4", True), "v5p": ("v5p", True), "v5e": ("v5e", False), "v6e": ("v6e", False)}
GPU_TARGET_FILES = {"h100": "h100_sxm.txtpb", "h200": "h200.txtpb"}

SLICE = re.compile(r"^(?:(\d+)x)?(v4|v5p|v5e|v5litepod|v6e)-(\d+)$")
TOPOLOGY = re.compile(r"^(?:(\d+)x)?(v4|v5p|v5e|v6e):(\d+(?:x\d+){1,2})$")
GPU_NODE = re.compile(r"^(?:(\d+)x)?(h100|h200)x(\d+)$")
EXAMPLES = "v5p-32, v6e-8, v5e-16, v4-8, 2xv5p-32, v5p:4x4x12, h100x8, h200x1, 2xh100x8"


@dataclasses.dataclass(frozen=True)
class Target:
    """Abstract devices of one slice (or several) or GPU node(s), and the chip they are."""

    name: str
    platform: str  # "tpu" or "gpu": whose compiler runs, and which fused attention kernel is chosen
    topology: str
    slices: int
    chip: Chip
    devices: tuple[Any, ...]

    @property
    def num_devices(self) -> int:
        return len(self.devices)


def resolve_target(name: str) -> Target:
    """The abstract devices of `name` (module docstring); InputError naming the known forms if unknown."""
    key = name.strip().lower()
    if match := SLICE.match(key):
        slices, generation, count = match.groups()
        generation = "v5e" if generation == "v5litepod" else generation
        libtpu_name, counts_cores = TPU_GENERATIONS[generation]
        chips = int(count) // 2 if counts_cores else int(count)
        table = TOPOLOGY_3D if counts_cores else TOPOLOGY_2D
        if chips not in table:
            sizes = ", ".join(f"{generation}-{c * 2 if counts_cores else c}" for c in table)
            raise InputError(
                f"--aot {name}: no standard topology for {chips} chips; known slices: {sizes}; "
                f"or name the topology, e.g. --aot {generation}:4x4x12"
            )
        return _tpu(name, generation, f"{libtpu_name}:{table[chips]}", int(slices or 1))
    if match := TOPOLOGY.match(key):
        slices, generation, shape = match.groups()
        return _tpu(name, generation, f"{TPU_GENERATIONS[generation][0]}:{shape}", int(slices or 1))
    if match := GPU_NODE.match(key):
        nodes, gpu, per_node = match.groups()
        return _gpu(name, gpu, int(nodes or 1), int(per_node))
    raise InputError(f"--aot {name!r}: not a TPU slice, topology or GPU node; use one of: {EXAMPLES}")


def _topologies():
    try:
        from jax.experimental import topologies
    except ImportError as e:  # pragma: no cover - jax always has it
        raise InputError(f"this jax has no jax.experimental.topologies ({e})") from e
    return topologies


def _tpu(name: str, generation: str, topology: str, slices: int) -> Target:
    import importlib.util

    if importlib.util.find_spec("libtpu") is None:
        raise InputError(
            f"--aot {name}: compiling for TPU needs libtpu, the TPU compiler: pip install -e '.[aot]'"
        )
    kwargs = {"chip_config_name": "megacore"} if generation == "v4" else {}
    if slices > 1:
        kwargs["num_slices"] = slices
    description = _topologies().get_topology_desc(platform="tpu", topology_name=topology, **kwargs)
    return Target(name, "tpu", topology, slices, CHIPS[generation], tuple(description.devices))


def _gpu(name: str, gpu: str, nodes: int, per_node: int) -> Target:
    import importlib.util

    if importlib.util.find_spec("jax_cuda12_plugin") is None:
        raise InputError(
            f"--aot {name}: compiling for GPU needs the CUDA plugin (about 5.5 GB): pip install -e '.[gpu]', "
            "then run with JAX_PLATFORMS=cpu"
        )
    target_config = resources.files("cft_jax.aot").joinpath("gpu", GPU_TARGET_FILES[gpu]).read_text()
    description = _topologies().get_topology_desc(
        platform="cuda", target_config=target_config, topology=f"{nodes}x1x{per_node}"
    )
    devices = tuple(description.devices)
    if len(devices) != nodes * per_node:
        raise InputError(
            f"--aot {name}: the CUDA compiler gave {len(devices)} devices, not {nodes * per_node}"
        )
    return Target(name, "gpu", f"{nodes}x1x{per_node}", nodes, CHIPS[gpu], devices)


def devices_needed(target: Target, mesh: tuple[int, int, int]) -> None:
    """Raises InputError when the (data, fsdp, tensor) mesh cannot use exactly the target's devices."""
    if math.prod(mesh) != target.num_devices:
        data, fsdp, tensor = mesh
        raise InputError(
            f"--aot {target.name}: {target.num_devices} devices, but mesh data={data} x fsdp={fsdp} x "
            f"tensor={tensor} = {math.prod(mesh)}; set one of --config.mesh.data/fsdp/tensor to -1"
        )
