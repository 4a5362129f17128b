"""Low-discrepancy sequences used for Gaussian offsets (§7.2) and camera placement (§14.3)."""
from __future__ import annotations

import numpy as np

__all__ = ["radical_inverse", "hammersley_3d"]


def radical_inverse(i: int, base: int) -> float:
    """Digit-reversed fraction of i in `base` (float64)."""
    inv, f = 0.0, 1.0 / base
    while i > 0:
        inv += f * (i % base)
        i //= base
        f /= base
    return inv


def hammersley_3d(n: int) -> np.ndarray:
    """[n, 3] points (i/n, phi_2(i), phi_3(i)) in float64."""
    return np.array([[i / n, radical_inverse(i, 2), radical_inverse(i, 3)] for i in range(n)], dtype=np.float64)
