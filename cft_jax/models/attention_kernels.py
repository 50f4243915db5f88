"""Fused attention kernels for packed rows (TPU splash, Pallas GPU flash) and the choice between them.

Both kernels compute what `cft_jax.models.attention.xla_attention` computes: causal attention in
which a query attends only to keys of its own segment, with grouped-query heads. They differ from the
reference only on padding rows (segment id 0): a kernel lets padding attend to earlier padding, the
reference spreads it over all keys; both are finite and neither is ever read (the loss masks padding).

`choose_attention` maps a requested `attention_impl` to the kernel that will run. "auto" picks the
kernel of the backend (TPU: splash, GPU: Pallas flash, CPU: the XLA reference) and falls back to the
reference, with a logged reason, when that kernel cannot take the shapes or dtype. A kernel named
explicitly is honoured or refused with the reason; on a backend without its hardware it runs in Pallas
interpret mode (slow, exact: how the tests check it on CPU).

Under a mesh set with `jax.set_mesh`, a kernel runs per device inside `shard_map`: batch over the
("data", "fsdp") axes, heads over "tensor". XLA cannot partition a Pallas call itself.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import math
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.gpu import attention as pallas_gpu
from jax.experimental.pallas.ops.tpu import splash_attention as splash
from jax.sharding import PartitionSpec

from cft_jax.errors import InputError

logger = logging.getLogger(__name__)

# With segment ids, splash tiles the kv axis in lanes of 128, so every block (and the sequence) is a
# multiple of 128. Larger forward blocks amortise the per-block overhead on TPU (MaxText uses 512).
SPLASH_LANES = 128
SPLASH_BLOCK_CHOICES = (512, 256, 128)
# The Pallas GPU kernel's own defaults: 128-row forward tiles, 32-row backward tiles.
PALLAS_GPU_BLOCK = 128
PALLAS_GPU_BLOCKS = pallas_gpu.BlockSizes.get_default()

BATCH_MESH_AXES = ("data", "fsdp")
HEADS_MESH_AXIS = "tensor"

_LOWERING_FOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("lowering_for", default=None)


def target_backend() -> str:
    """The backend the code being traced will run on: `jax.default_backend()`, unless `lowering_for`
    names another."""
    return _LOWERING_FOR.get() or jax.default_backend()


@contextlib.contextmanager
def lowering_for(backend: str) -> Iterator[None]:
    """Traces for `backend` ("tpu" or "gpu") on a host without it: kernel choice and kernels follow
    that backend (real Pallas kernels, not interpret mode). For ahead-of-time lowering only, e.g.
    `jax.export.export(step, platforms=["tpu"])`; what is traced inside cannot run here."""
    token = _LOWERING_FOR.set(backend)
    try:
        yield
    finally:
        _LOWERING_FOR.reset(token)


def _splash_block(seq: int) -> int:
    """The largest of `SPLASH_BLOCK_CHOICES` dividing `seq` (a multiple of 128)."""
    return next(b for b in SPLASH_BLOCK_CHOICES if seq % b == 0)


def splash_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, *, interpret: bool = False
) -> jax.Array:
    """TPU splash attention on one device; the `xla_attention` contract (shapes in its docstring).

    Grouped-query heads run natively: the kernel takes k/v with fewer heads than q and maps each query
    head to its kv head, so nothing is repeated in memory (MaxText calls it the same way). One kernel
    covers all heads of a row; it is vmapped over the batch.
    """
    _, seq, heads, head_dim = q.shape
    block = _splash_block(seq)
    blocks = splash.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    mask = splash.MultiHeadMask([splash.CausalMask((seq, seq))] * heads)
    kernel = splash.make_splash_mha(
        mask, block_sizes=blocks, head_shards=1, q_seq_shards=1, interpret=interpret
    )
    # The kernel has no softmax scale: fold 1/sqrt(head_dim) into q, as MaxText does.
    q = (q * head_dim**-0.5).astype(q.dtype)
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))  # [b, heads, s, d]

    def one_row(q: jax.Array, k: jax.Array, v: jax.Array, ids: jax.Array) -> jax.Array:
        return kernel(q, k, v, segment_ids=splash.SegmentIds(q=ids, kv=ids))

    return jax.vmap(one_row)(q, k, v, segment_ids).transpose(0, 2, 1, 3)


def pallas_gpu_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, *, interpret: bool = False
) -> jax.Array:
    """The Pallas (Triton) GPU flash attention on one device; the `xla_attention` contract.

    The kernel indexes k/v by query head, so each kv head is repeated over its query group; autodiff
    sums the repeated gradients back.
    """
    group = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
    return pallas_gpu.mha(
        q,
        k,
        v,
        segment_ids,
        sm_scale=q.shape[-1] ** -0.5,
        causal=True,
        block_sizes=PALLAS_GPU_BLOCKS,
        interpret=interpret,
    )


KernelFn = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class FusedKernel:
    """A fused kernel, the backend whose hardware it targets, and what it accepts."""

    fn: KernelFn
    backend: str
    dtypes: tuple[jnp.dtype, ...]
    seq_multiple: int
    head_dims: Callable[[int], bool]
    head_dims_doc: str


FUSED_KERNELS: dict[str, FusedKernel] = {
    "splash": FusedKernel(
        splash_attention,
        backend="tpu",
        dtypes=(jnp.float32, jnp.bfloat16),
        seq_multiple=SPLASH_LANES,
        # Mosaic lays the head dim along 128 lanes; 64 (half a vreg) and multiples of 128 are the sizes
        # upstream tests and MaxText run.
        head_dims=lambda d: d == 64 or d % 128 == 0,
        head_dims_doc="64 or a multiple of 128",
    ),
    "pallas_gpu": FusedKernel(
        pallas_gpu_attention,
        backend="gpu",
        dtypes=(jnp.float32, jnp.bfloat16, jnp.float16),
        seq_multiple=PALLAS_GPU_BLOCK,
        # The kernel pads the head dim to a power of two; Triton dots need >= 16 and a 128-row tile of
        # more than 256 fp32 columns overflows shared memory.
        head_dims=lambda d: 16 <= d <= 256,
        head_dims_doc="16 to 256",
    ),
}
# What "auto" runs on each backend; a backend not listed gets the reference.
AUTO_KERNEL = {"tpu": "splash", "gpu": "pallas_gpu"}


def mesh_split(mesh: jax.sharding.AbstractMesh) -> tuple[tuple[str, ...], str | None]:
    """(mesh axes the batch is split over, mesh axis the heads are split over) on `mesh`."""
    batch_axes = tuple(a for a in BATCH_MESH_AXES if a in mesh.axis_names)
    return batch_axes, HEADS_MESH_AXIS if HEADS_MESH_AXIS in mesh.axis_names else None


def kernel_unfit_reason(
    name: str, q: jax.Array, k: jax.Array, mesh: jax.sharding.AbstractMesh | None = None
) -> str | None:
    """Why fused kernel `name` cannot run on these q [b, s, h, d] / k [b, s, K, d], or None if it can."""
    kernel = FUSED_KERNELS[name]
    batch, seq, heads, head_dim = q.shape
    if q.dtype not in kernel.dtypes:
        return f"{name} takes {[jnp.dtype(d).name for d in kernel.dtypes]}, not {q.dtype.name}"
    if seq % kernel.seq_multiple:
        return f"{name} needs seq a multiple of {kernel.seq_multiple} (its block size), got seq={seq}"
    if not kernel.head_dims(head_dim):
        return f"{name} takes head_dim {kernel.head_dims_doc}, got head_dim={head_dim}"
    if mesh is not None and not mesh.empty:
        batch_axes, heads_axis = mesh_split(mesh)
        batch_shards = math.prod(mesh.shape[a] for a in batch_axes)
        head_shards = mesh.shape[heads_axis] if heads_axis else 1
        if batch % batch_shards:
            return f"{name} under shard_map needs batch={batch} divisible by {batch_axes} = {batch_shards}"
        if heads % head_shards or k.shape[2] % head_shards:
            return (
                f"{name} under shard_map splits heads over {heads_axis!r} = {head_shards}, which must divide "
                f"both heads={heads} and kv_heads={k.shape[2]}"
            )
    return None


def choose_attention(
    impl: str, q: jax.Array, k: jax.Array, backend: str, mesh: jax.sharding.AbstractMesh | None = None
) -> str:
    """The kernel that runs for `attention_impl=impl`: "xla" or a key of `FUSED_KERNELS`.

    "auto" takes `AUTO_KERNEL[backend]` and falls back to "xla", logging the reason as a warning, when
    there is none or it cannot run these shapes / dtype. An explicitly named kernel that cannot run
    them raises ValueError with the reason.
    """
    if impl == "xla":
        return impl
    if impl == "auto":
        name = AUTO_KERNEL.get(backend)
        if name is None:
            reason = f"no fused kernel for backend {backend!r}"
        else:
            reason = kernel_unfit_reason(name, q, k, mesh)
        if reason is not None:
            logger.warning("attention_impl='auto' falls back to the XLA reference attention: %s", reason)
            return "xla"
        return name
    reason = kernel_unfit_reason(impl, q, k, mesh)
    if reason is not None:
        raise InputError(f"attention_impl={impl!r} cannot run here: {reason}")
    if backend != FUSED_KERNELS[impl].backend:
        logger.warning(
            "attention_impl=%r targets %s but the backend is %s: running in Pallas interpret mode (slow)",
            impl,
            FUSED_KERNELS[impl].backend,
            backend,
        )
    return impl


def run_fused(name: str, q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """Runs fused kernel `name` (interpreted off its backend), per device under the ambient mesh."""
    kernel = FUSED_KERNELS[name]
    interpret = target_backend() != kernel.backend

    def attend(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array) -> jax.Array:
        return kernel.fn(q, k, v, segment_ids, interpret=interpret)

    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return attend(q, k, v, segment_ids)
    batch_axes, heads_axis = mesh_split(mesh)
    heads_spec = PartitionSpec(batch_axes or None, None, heads_axis, None)
    # check_vma off: Pallas calls carry no varying-manual-axes annotations.
    return jax.shard_map(
        attend,
        in_specs=(heads_spec, heads_spec, heads_spec, PartitionSpec(batch_axes or None, None)),
        out_specs=heads_spec,
        check_vma=False,
    )(q, k, v, segment_ids)
