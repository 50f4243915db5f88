"""The device mesh (data, fsdp, tensor) and the one table that maps logical axes onto it.

Every parameter names its dimensions with logical axes ("embed", "q_heads", ...; see
docs/models.md), and so does every large activation inside the model (`constrain`). The table says
which mesh axes each logical axis is split over; the functions below turn those names into
`NamedSharding`s. A dimension whose size is not divisible by the size of its mesh axes is replicated
instead (a 1-kv-head model on tensor=2 keeps its kv heads whole), so one table serves every size.

Weights and activations differ in one place: a weight's hidden dimension ("embed") is split over
"fsdp", while an activation's ("activation_embed") is whole, its batch split over ("data", "fsdp").
That is FSDP: each layer's weights are all-gathered where they are used and their gradients
reduce-scattered, and no [batch, seq, hidden] activation is ever summed across devices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis, tuple of mesh axes, or None (replicated).
LOGICAL_AXIS_RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),
    "seq": None,
    "embed": "fsdp",
    "activation_embed": None,
    "vocab": "tensor",
    "mlp": "tensor",
    "q_heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "layers": None,
    "norm": None,
    # LoRA adapters (models/lora.py): the rank is small, kept whole; their other axes split as the kernel's.
    "lora_rank": None,
}


def mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) over `num_devices`, the one axis given as -1 taking the remaining devices.

    The only place the -1 is resolved: `make_mesh` and the trainer's config (`cft_jax.config.resolve_mesh`)
    both ask here, so a mesh the config accepts is the mesh that gets built.
    """
    sizes = [data, fsdp, tensor]
    named = f"mesh data={data} fsdp={fsdp} tensor={tensor}"
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"{named}: each axis is >= 1, with at most one -1 (the rest)")
    fixed = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % fixed:
            raise ValueError(
                f"{named}: the fixed axes ({fixed} devices) do not divide the {num_devices} devices"
            )
        sizes[sizes.index(-1)] = num_devices // fixed
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"{named}: {math.prod(sizes)} devices, but {num_devices} are available and the axes must equal "
            f"the {num_devices} devices; give one axis as -1 to take the rest"
        )
    return sizes[0], sizes[1], sizes[2]


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
    """A mesh with axes ("data", "fsdp", "tensor"); one size may be -1, meaning the remaining devices.

    Neighbouring devices share the innermost axis ("tensor"), whose collectives are the most frequent.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(data, fsdp, tensor, len(devices))
    grid = np.asarray(devices, dtype=object).reshape(sizes)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_to_spec(
    axes: Sequence[str | None], mesh: Mesh, shape: Sequence[int] | None = None
) -> PartitionSpec:
    """Logical axis names of one array -> its PartitionSpec on `mesh`.

    Raises ValueError when a logical axis has no rule, or when two dimensions of the array would be
    split over the same mesh axis. With `shape`, a dimension not divisible by its mesh axes' total
    size is replicated.
    """
    spec: list[str | tuple[str, ...] | None] = []
    used: dict[str, str] = {}
    for i, name in enumerate(axes):
        if name is None:
            spec.append(None)
            continue
        if name not in LOGICAL_AXIS_RULES:
            raise ValueError(f"logical axis {name!r} has no rule; add it to LOGICAL_AXIS_RULES")
        rule = LOGICAL_AXIS_RULES[name]
        mesh_axes = () if rule is None else (rule,) if isinstance(rule, str) else tuple(rule)
        for mesh_axis in mesh_axes:
            if mesh_axis in used:
                raise ValueError(
                    f"logical axes {tuple(axes)}: {used[mesh_axis]!r} and {name!r} both map to mesh axis "
                    f"{mesh_axis!r}; one array cannot be split twice over the same mesh axis"
                )
            used[mesh_axis] = name
        split = math.prod(mesh.shape[a] for a in mesh_axes)
        if not mesh_axes or (shape is not None and shape[i] % split):
            spec.append(None)
        else:
            spec.append(mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes)
    return PartitionSpec(*spec)


def logical_sharding(
    axes: Sequence[str | None], mesh: Mesh, shape: Sequence[int] | None = None
) -> NamedSharding:
    """Logical axis names -> NamedSharding on `mesh` (see `logical_to_spec`)."""
    return NamedSharding(mesh, logical_to_spec(axes, mesh, shape))


def model_shardings(abstract_state: Any, mesh: Mesh) -> Any:
    """A state-shaped tree whose Variables hold the NamedSharding of each parameter.

    `abstract_state` is `nnx.state(model)` of a real model or of `nnx.eval_shape(lambda: Decoder(...))`;
    each Variable's logical axes come from its `out_sharding` metadata (unannotated ones replicate).
    """

    def sharding(variable: nnx.Variable) -> nnx.Variable:
        axes = variable.get_metadata().get("out_sharding") or (None,) * len(variable.shape)
        return variable.replace(logical_sharding(axes, mesh, variable.shape))

    return jax.tree.map(sharding, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_model(model: nnx.Module, mesh: Mesh) -> nnx.Module:
    """Moves every parameter of an already built `model` to its sharding on `mesh`, in place."""
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, model_shardings(state, mesh)))
    return model


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """`x` constrained to the sharding its logical `axes` give on the ambient mesh (`jax.set_mesh`).

    Without an ambient mesh (one device, or a model called outside a sharded step) there is nothing
    to place and `x` is returned as is; the trainer, the bench and `--aot` trace under their mesh,
    and tests/training/test_step_collectives.py checks the compiled step's collectives.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(axes, mesh, x.shape))


def constrain_state(state: Any) -> Any:
    """Every Variable of `state` (parameters, or gradients shaped like them) constrained to the sharding
    its logical axes give on the ambient mesh: inside a jitted step, e.g. the gradient accumulator,
    which would otherwise be free to live replicated. Without an ambient mesh, `state` as is."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return state

    def place(variable: nnx.Variable) -> nnx.Variable:
        axes = variable.get_metadata().get("out_sharding") or (None,) * len(variable.shape)
        spec = logical_to_spec(axes, mesh, variable.shape)
        return variable.replace(jax.lax.with_sharding_constraint(variable[...], spec))

    return jax.tree.map(place, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def placed_value(variable: nnx.Variable) -> jax.Array:
    """The value of a parameter, constrained to its own sharding where it is used.

    Inside the scanned layers this pins each weight to its FSDP layout at the point of use, so XLA
    all-gathers it for the matmul and, in the backward pass (a constraint's transpose constrains the
    cotangent), reduce-scatters its gradient instead of all-reducing a full-size one.
    """
    axes = variable.get_metadata().get("out_sharding") or (None,) * len(variable.shape)
    return constrain(variable[...], axes)
