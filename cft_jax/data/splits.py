"""Splitting records by a key (the question they are about), deterministically and whatever the file order.

Keys are ordered by a content hash (`stable_id(salt, key)`); the first `round(n * fraction)` of them
(at least one) go to the first named split, the next ones to the second, and so on, the rest to
`rest`. Every record of a key lands in that key's split, so no question is in two splits. The demo's
train / validation / test files and the pipeline's `data.val_fraction` both split this way.
"""

from __future__ import annotations

from collections.abc import Iterable

from cft_jax.schema import stable_id


def split_by_key(keys: Iterable[str], fractions: dict[str, float], *, rest: str, salt: str) -> dict[str, str]:
    """{key: the split it goes to}, for the distinct `keys`; `fractions` in the order they are filled."""
    ordered = sorted(set(keys), key=lambda k: stable_id(salt, k))
    split_of: dict[str, str] = {}
    start = 0
    for name, fraction in fractions.items():
        count = max(1, round(len(ordered) * fraction))
        split_of.update((key, name) for key in ordered[start : start + count])
        start += count
    split_of.update((key, rest) for key in ordered[start:])
    return split_of
