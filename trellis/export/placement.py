"""Where an exported object sits in its file: its size, its origin and its up axis.

The export works in the TRELLIS world frame: z up, the object inside the unit cube around the origin, no
unit. A file gets the object

* **height** ``H`` (metres): scaled uniformly so that its vertical extent (the z extent of its bounding box)
  is exactly ``H``; ``None`` leaves the size as it is (one model unit per metre);
* **pivot**: ``"center"`` puts the centre of the bounding box at the origin, ``"bottom"`` the centre of the
  box's bottom face (the object stands on the ground plane, base at height 0); ``None`` keeps the origin;
* **units**: ``"m"`` or ``"mm"``, for files whose numbers carry no unit of their own (STL, OBJ; 3MF names
  its unit); the coordinates are multiplied by 1 or 1000;
* **up**: ``"z"`` keeps the pipeline's axes, ``"y"`` turns them so that y is up: (x, y, z) -> (x, z, -y)
  (``core.axes.Z_UP_TO_Y_UP``, a rotation, so face winding and handedness are kept).

All in float64; the scale and the anchor are computed from the bounding box so that the results are exact up
to one rounding of each coordinate (the base lands on 0 exactly).
"""
from __future__ import annotations

import numpy as np

from ..core.axes import Z_UP_TO_Y_UP

__all__ = ["PIVOTS", "UP_AXES", "UNITS", "placement", "place", "turn_to", "bounds"]

PIVOTS = ("center", "bottom")
UP_AXES = ("y", "z")
UNITS = {"m": 1.0, "mm": 1000.0}        # file units -> numbers per metre


def bounds(vertices) -> tuple[np.ndarray, np.ndarray]:
    """(min corner, max corner) of the axis-aligned bounding box of ``vertices`` [V, 3], float64."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    if len(v) == 0:
        raise ValueError("cannot place an empty mesh (no vertices)")
    return v.min(axis=0), v.max(axis=0)


def placement(vertices, height: float | None = None, pivot: str | None = None) -> tuple[float, np.ndarray]:
    """(scale, anchor) that place z-up ``vertices`` as ``(vertices - anchor) * scale`` (see the module doc)."""
    if pivot is not None and pivot not in PIVOTS:
        raise ValueError(f"unknown pivot {pivot!r} (use one of {PIVOTS} or None)")
    low, high = bounds(vertices)
    scale = 1.0
    if height is not None:
        height = float(height)
        if not np.isfinite(height) or height <= 0:
            raise ValueError(f"height must be a positive number of metres, not {height!r}")
        extent = high[2] - low[2]
        if extent <= 0:
            raise ValueError("the mesh is flat (no vertical extent): it cannot be scaled to a height")
        scale = height / extent
    anchor = np.zeros(3)
    if pivot is not None:
        anchor = (low + high) / 2
        if pivot == "bottom":
            anchor[2] = low[2]
    return scale, anchor


def place(vertices, height: float | None = None, pivot: str | None = None, units: str = "m",
          up: str = "z") -> np.ndarray:
    """``vertices`` [V, 3] (z up) placed for a file: scaled to ``height`` metres, moved to ``pivot``, in
    ``units`` and turned to ``up``; float64 [V, 3]."""
    if units not in UNITS:
        raise ValueError(f"unknown units {units!r} (use one of {tuple(UNITS)})")
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    scale, anchor = placement(v, height, pivot)
    # Moved before scaled: the lowest vertex of a "bottom" pivot becomes (low - low) * scale, exactly 0.
    return turn_to((v - anchor) * (scale * UNITS[units]), up)


def turn_to(points, up: str) -> np.ndarray:
    """Z-up ``points`` (positions or normals) [N, 3] in the axes of a file whose up axis is ``up``."""
    if up not in UP_AXES:
        raise ValueError(f"unknown up axis {up!r} (use one of {UP_AXES})")
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return p @ Z_UP_TO_Y_UP if up == "y" else p.copy()
