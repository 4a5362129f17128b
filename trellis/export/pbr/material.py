"""What a PBR export's material adds to the base colour texture, for the GLB writer (``assemble.make_glb_mesh``'s
``pbr``): glTF ``pbrMetallicRoughness`` with a metallic-roughness texture (metallicFactor and roughnessFactor 1,
TRELLIS2_FACTS.md §12.6), the baked alpha with its honest ``alpha_mode`` (``alpha_mode``), double-sided faces."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["ALPHA_MODES", "PbrMaps", "pbr_maps"]

ALPHA_MODES = ("OPAQUE", "MASK", "BLEND")


class PbrMaps(NamedTuple):
    """``metallic_roughness`` uint8 [S,S,3] (R unused, G roughness, B metallic); ``alpha`` uint8 [S,S] (the base
    colour's A, written unless ``alpha_mode`` is OPAQUE); ``alpha_cutoff`` for MASK; ``double_sided``;
    ``tangents``: float32 [V',4] TANGENT (z up) of the normals' split the normal map was baked in, written as they
    are where a file has that very split (``assemble.make_glb_mesh``), or None."""
    metallic_roughness: np.ndarray
    alpha: np.ndarray | None
    alpha_mode: str = "OPAQUE"
    alpha_cutoff: float | None = None
    double_sided: bool = True
    tangents: np.ndarray | None = None

    @property
    def writes_alpha(self) -> bool:
        """Whether the base colour texture carries the alpha channel (MASK and BLEND)."""
        return self.alpha_mode != "OPAQUE" and self.alpha is not None


def pbr_maps(metallic_roughness, alpha=None, alpha_mode: str = "OPAQUE", alpha_cutoff: float | None = None,
             double_sided: bool = True, tangents=None) -> PbrMaps:
    """``PbrMaps`` with its arguments checked (shapes, dtypes, the mode)."""
    mr = np.asarray(metallic_roughness)
    if mr.dtype != np.uint8 or mr.ndim != 3 or mr.shape[2] != 3:
        raise ValueError(f"metallic_roughness must be uint8 [S,S,3], got {mr.dtype} {mr.shape}")
    if alpha_mode not in ALPHA_MODES:
        raise ValueError(f"alpha_mode must be one of {ALPHA_MODES}, got {alpha_mode!r}")
    a = None if alpha is None else np.asarray(alpha)
    if a is not None and (a.dtype != np.uint8 or a.ndim != 2):
        raise ValueError(f"alpha must be uint8 [S,S], got {a.dtype} {a.shape}")
    if alpha_mode != "OPAQUE" and a is None:
        raise ValueError(f"alpha_mode {alpha_mode} needs the alpha image")
    if alpha_mode == "MASK" and alpha_cutoff is None:
        alpha_cutoff = 0.5
    t = None if tangents is None else np.asarray(tangents, np.float32)
    if t is not None and (t.ndim != 2 or t.shape[1] != 4):
        raise ValueError(f"tangents must be [V,4], got {t.shape}")
    return PbrMaps(mr, a, alpha_mode, None if alpha_mode != "MASK" else float(alpha_cutoff), bool(double_sided), t)
