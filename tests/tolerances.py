"""Tolerances from the arithmetic: how far apart two computations of the same value may land.

Two evaluations of one real-valued function that differ only in rounding (a sum reduced in another
order on a mesh, a chunked vs a dense softmax, a fused kernel vs the reference, another library)
differ by a few units of `eps(dtype) * scale` per rounding on the way, where `scale` is the largest
magnitude the tensor holds. For a sum of n terms reordered the classical bound is about
`n * eps * sum|terms|` (worst case), `sqrt(n) * eps * ...` typically; where the terms cancel, the
result's own max is a smaller scale than `sum|terms|`, which is why the counts below are generous.

So every comparison states `ulps`: how many `eps * max|desired|` it allows, and the call says where
that number comes from. This holds on any CPU (XLA picks other vector widths and reduction trees on
another ISA, which is exactly a reordering), while a real bug (a wrong mask, a lost micro-batch, a
misplaced shard) moves values by a large fraction of their scale, i.e. by 10^4 ulps or more.
"""

from __future__ import annotations

import numpy as np

FP32_EPS = float(np.finfo(np.float32).eps)  # 2^-23
BF16_EPS = 2.0**-7  # bfloat16 keeps 8 significant bits


def scale_atol(desired, ulps: float, eps: float = FP32_EPS) -> float:
    """`ulps * eps * max|desired|`: the absolute tolerance for a value of `desired`'s scale."""
    desired = np.asarray(desired, dtype=np.float64)
    scale = float(np.abs(desired).max()) if desired.size else 0.0
    return ulps * eps * scale


def assert_close_to_scale(actual, desired, *, ulps: float, eps: float = FP32_EPS, err_msg: str = "") -> None:
    """|actual - desired| <= ulps * eps * max|desired| everywhere (see the module docstring)."""
    actual = np.asarray(actual, dtype=np.float64)
    desired = np.asarray(desired, dtype=np.float64)
    atol = scale_atol(desired, ulps, eps)
    observed = float(np.abs(actual - desired).max()) if desired.size else 0.0
    seen = observed / atol * ulps if atol else float("inf") if observed else 0.0
    message = (
        f"{err_msg} (allowed {ulps} ulps of the scale, {atol:.3g}; the largest difference is {seen:.3g} ulps)"
    )
    np.testing.assert_allclose(actual, desired, rtol=0, atol=atol, err_msg=message.strip())
