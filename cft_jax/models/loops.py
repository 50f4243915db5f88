"""How far the train step's loops unroll: not at all, except while its whole-step cost is estimated.

The compiler's cost model counts a while loop's body once, whatever its trip count, so
`cft_jax.aot.cost` compiles the step again with one loop unrolled by 2 and takes the difference: the
cost of one iteration. The three loops: the scanned decoder layers, the chunks of the
loss, and the gradient-accumulation micro-batches. Training never sets this.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator


@dataclasses.dataclass(frozen=True)
class Unroll:
    """Unroll factor of each loop (1: a plain while loop; a loop's trip count: fully unrolled)."""

    layers: int = 1
    loss_chunks: int = 1
    micro_batches: int = 1


ROLLED = Unroll()
_UNROLL: contextvars.ContextVar[Unroll | None] = contextvars.ContextVar("unroll", default=None)


def unroll() -> Unroll:
    """The unroll factors the loops being traced use."""
    return _UNROLL.get() or ROLLED


@contextlib.contextmanager
def unrolled(factors: Unroll) -> Iterator[None]:
    """Traces the step's loops with these unroll factors (for cost estimation only)."""
    token = _UNROLL.set(factors)
    try:
        yield
    finally:
        _UNROLL.reset(token)
