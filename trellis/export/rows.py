"""Reductions along a short axis (a triangle's 3 corners, a point's 2 or 3 coordinates, an edge's 2 ends) as
elementwise operations on its slices: the same values bit for bit, and much faster than numpy's own reduction,
which walks a short axis element by element (docs/benchmarks/export.md#short-axis-reductions).

``row_*`` reduce a short axis of an [N, k, ...] array (axis 1 unless told), ``column_*`` axis 0 of an [N, k] one.
Minimum, maximum, all and any are exact in any order. ``row_sum`` (and ``row_norm``) add left to right from 0.0,
which is numpy's own order below eight terms (it sums pairwise from eight on, so longer axes go to numpy).
"""
from __future__ import annotations

import numpy as np

__all__ = ["PAIRWISE_FROM", "row_min", "row_max", "row_all", "row_any", "row_sum", "row_norm", "column_min",
           "column_max", "block_any"]

PAIRWISE_FROM = 8       # numpy's sums of this many terms and more are pairwise, not left to right


def _slices(a, axis: int):
    a = np.asarray(a)
    if a.ndim < 2 or not -a.ndim <= axis < a.ndim or a.shape[axis] == 0:
        raise ValueError(f"a reduction along axis {axis} needs at least two axes and a non-empty one, not {a.shape}")
    return [a[(slice(None),) * (axis % a.ndim) + (j,)] for j in range(a.shape[axis])]


def _fold(op, a, axis: int = 1):
    parts = _slices(a, axis)
    out = op(parts[0], parts[1]) if len(parts) > 1 else parts[0].copy()
    for p in parts[2:]:
        op(out, p, out=out)
    return out


def row_min(a, axis: int = 1) -> np.ndarray:
    """``a.min(axis)``."""
    return _fold(np.minimum, a, axis)


def row_max(a, axis: int = 1) -> np.ndarray:
    """``a.max(axis)``."""
    return _fold(np.maximum, a, axis)


def row_all(a, axis: int = 1) -> np.ndarray:
    """``a.all(axis)`` of a bool array."""
    return _fold(np.logical_and, a, axis)


def row_any(a, axis: int = 1) -> np.ndarray:
    """``a.any(axis)`` of a bool array."""
    return _fold(np.logical_or, a, axis)


def row_sum(a, axis: int = 1) -> np.ndarray:
    """``a.sum(axis)`` of a float array, bit for bit."""
    a = np.asarray(a)
    parts = _slices(a, axis)
    if len(parts) >= PAIRWISE_FROM:
        return a.sum(axis)
    out = parts[0] + a.dtype.type(0)         # numpy starts from +0.0: a first -0.0 becomes 0.0
    for p in parts[1:]:
        np.add(out, p, out=out)
    return out


def row_norm(a, axis: int = 1) -> np.ndarray:
    """``np.linalg.norm(a, axis=axis)`` of a real float array, bit for bit."""
    a = np.asarray(a)
    return np.sqrt(row_sum(a * a, axis))


def column_min(a) -> np.ndarray:
    """``a.min(0)`` of an [N, k] array."""
    return np.ascontiguousarray(np.asarray(a).T).min(1)


def column_max(a) -> np.ndarray:
    """``a.max(0)`` of an [N, k] array."""
    return np.ascontiguousarray(np.asarray(a).T).max(1)


def block_any(a, b: int) -> np.ndarray:
    """``a.reshape(R, b, C, b).any(axis=(1, 3))`` of a bool [R*b, C*b] array: whether each b x b block holds a set
    element, as ORs of its rows and then of its columns."""
    a = np.asarray(a, bool)
    if b < 1 or a.ndim != 2 or a.shape[0] % b or a.shape[1] % b:
        raise ValueError(f"a [{a.shape}] array is not made of {b} x {b} blocks")
    rows, cols = a.shape[0] // b, a.shape[1] // b
    by_rows = _fold(np.logical_or, a.reshape(rows, b, cols * b))                # [R, C*b]
    return _fold(np.logical_or, by_rows.reshape(rows, cols, b), 2)
