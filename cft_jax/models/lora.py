"""LoRA: low-rank adapters on the decoder's projections, the only parameters a LoRA run trains.

A targeted `Projection` computing `y = x W` also computes `y += (alpha / rank) * dropout(x) A B` with
A [in..., rank] and B [rank, out...] (PEFT's `lora_A` / `lora_B`, B starting at zero so the adapted
model starts as the base). The adapters are `LoRAParam`s, a subclass of `nnx.Param`:
`nnx.split(model, LoRAParam, ...)` separates them from the frozen base, so the train step takes
gradients of, and the optimizer and checkpoints hold, the adapters alone.

Targets are the seven projections by name (`PROJECTIONS`), chosen by fnmatch patterns ("q_proj",
"*_proj", "[qkvo]_proj"). The adapters stay float32 whatever the base's dtype: they are small, and
their AdamW updates need the precision.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math

import jax
import jax.numpy as jnp
from flax import nnx

from cft_jax.errors import InputError
from cft_jax.models.config import ModelConfig

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
PROJECTIONS = ATTENTION_PROJECTIONS + MLP_PROJECTIONS
ADAPTER_DTYPE = jnp.float32
RANK_AXIS = "lora_rank"


class LoRAParam(nnx.Param):
    """A trainable adapter weight; every other `nnx.Param` of a LoRA model is frozen."""


@dataclasses.dataclass(frozen=True)
class LoRASpec:
    """Which projections get adapters, and their rank, scale (alpha / rank) and input dropout."""

    rank: int
    alpha: float
    dropout: float = 0.0
    targets: tuple[str, ...] = ("*_proj",)

    def __post_init__(self) -> None:
        for pattern in self.targets:
            if not fnmatch.filter(PROJECTIONS, pattern):
                raise InputError(
                    f"lora.targets: {pattern!r} matches none of the projections {list(PROJECTIONS)}; "
                    "use their names or patterns over them, e.g. ('q_proj', 'v_proj') or ('*_proj',)"
                )
        if self.rank <= 0:
            raise InputError(f"lora.rank={self.rank}: must be > 0 for a LoRA model")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def modules(self) -> tuple[str, ...]:
        """The targeted projection names, in `PROJECTIONS` order."""
        return tuple(p for p in PROJECTIONS if any(fnmatch.fnmatch(p, t) for t in self.targets))


def adapter_for(spec: LoRASpec | None, projection: str) -> LoRASpec | None:
    """`spec` if it targets the projection named `projection` (e.g. "q_proj"), else None."""
    return spec if spec is not None and projection in spec.modules() else None


def einsum_equations(equation: str) -> tuple[str, str, int]:
    """A projection's einsum `x,kernel->y` -> (x @ A equation, (x A) @ B equation, input dims of the kernel).

    "btd,dhk->bthk" gives ("btd,dr->btr", "btr,rhk->bthk", 1): A contracts what the kernel contracts,
    B produces what the kernel produces.
    """
    inputs, out = equation.split("->")
    x, kernel = inputs.split(",")
    contracted = "".join(c for c in kernel if c in x)
    produced = "".join(c for c in kernel if c in out)
    batch = "".join(c for c in x if c not in kernel)
    r = next(c for c in "rzyxw" if c not in equation)
    return f"{x},{contracted}{r}->{batch}{r}", f"{batch}{r},{r}{produced}->{out}", len(contracted)


def lora_param_count(config: ModelConfig, spec: LoRASpec) -> int:
    """Trainable parameters of `spec`'s adapters: rank * (in + out) per targeted projection and layer."""
    hidden, intermediate = config.hidden_size, config.intermediate_size
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    sizes = {
        "q_proj": hidden + q,
        "k_proj": hidden + kv,
        "v_proj": hidden + kv,
        "o_proj": q + hidden,
        "gate_proj": hidden + intermediate,
        "up_proj": hidden + intermediate,
        "down_proj": intermediate + hidden,
    }
    return config.num_layers * spec.rank * sum(sizes[m] for m in spec.modules())


def init_lora_a(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype) -> jax.Array:
    """PEFT's (and torch Linear's) default: Kaiming-uniform with a = sqrt(5), i.e. U(+-1/sqrt(fan_in))."""
    fan_in = math.prod(shape[:-1])
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)
