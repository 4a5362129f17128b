"""The stable sorting order of int64 keys from numpy's default sort: each key shifted left with its index in the low
bits makes every key distinct, so any sort gives the order a stable sort would, and numpy's default integer sort
(vectorised where the CPU has the instructions) is several times its stable one (timsort) on a mesh's keys. Keys
whose span and index need more than 63 bits take ``np.argsort(kind="stable")``."""
from __future__ import annotations

import numpy as np

__all__ = ["sorted_and_order", "stable_argsort"]


def sorted_and_order(key: np.ndarray, kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(``key`` sorted, the stable order that sorts it: ``np.argsort(key, kind="stable")``) of an int64 array.
    ``kind``: numpy's sort for the packed keys (the same result with any; "stable" is faster on long sorted runs)."""
    k = np.asarray(key, dtype=np.int64).reshape(-1)
    n = len(k)
    if n == 0:
        return k.copy(), np.zeros(0, dtype=np.int64)
    lo, hi = int(k.min()), int(k.max())
    bits = max((n - 1).bit_length(), 1)
    if (hi - lo).bit_length() + bits > 63:
        order = np.argsort(k, kind="stable")
        return k[order], order
    packed = k - np.int64(lo)
    packed <<= np.int64(bits)
    packed |= np.arange(n, dtype=np.int64)
    packed.sort(kind=kind)                          # distinct values: the stable order whatever the algorithm
    order = packed & np.int64((1 << bits) - 1)
    packed >>= np.int64(bits)
    packed += np.int64(lo)
    return packed, order


def stable_argsort(key: np.ndarray) -> np.ndarray:
    """``np.argsort(key, kind="stable")`` of an int64 array (see the module docstring)."""
    return sorted_and_order(key)[1]
