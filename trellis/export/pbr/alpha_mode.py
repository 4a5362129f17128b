"""The glTF alpha mode a baked alpha channel honestly needs (the reference writes OPAQUE whatever it baked,
TRELLIS2_FACTS.md §12.6, §15.9):

* **OPAQUE** when the texels the charts cover have alpha of at least ``OPAQUE_FROM`` (250 / 255: the decoder's
  attributes hover just under 1 on opaque objects, and a viewer shows no difference), all but a stray
  ``OPAQUE_STRAY_SHARE`` of them (noise, not a see-through part);
* **MASK** (cut-out at ``MASK_CUTOFF``) when the see-through part is nearly binary: at most ``MASK_PARTIAL_SHARE``
  of the non-opaque texels are partly transparent (alpha within 10-90 %). Trilinear sampling blurs an attribute
  edge over a voxel or two, which leaves such a thin band; cut-outs render without the sorting and depth-writing
  problems of blending in every engine;
* **BLEND** otherwise (glass, smoke, soft edges).
"""
from __future__ import annotations

import numpy as np

__all__ = ["OPAQUE_FROM", "OPAQUE_STRAY_SHARE", "MASK_CUTOFF", "MASK_PARTIAL_SHARE", "choose_alpha_mode"]

OPAQUE_FROM = 250
OPAQUE_STRAY_SHARE = 1e-3
MASK_CUTOFF = 0.5
MASK_PARTIAL_SHARE = 0.25
_PARTIAL = (26, 229)            # alpha between 10 % and 90 %


def choose_alpha_mode(alpha, covered=None) -> tuple[str, float | None, dict]:
    """(mode, alphaCutoff or None, facts) of a uint8 alpha image [S,S] over the ``covered`` texels (bool [S,S];
    all when None). facts: "min" alpha, "transparent_share" (texels under OPAQUE_FROM) and "partial_share" (of
    those, the ones partly transparent)."""
    a = np.asarray(alpha)
    if a.dtype != np.uint8:
        raise ValueError(f"alpha must be a uint8 image, got {a.dtype}")
    a = a[np.asarray(covered, dtype=bool)] if covered is not None else a.reshape(-1)
    if a.size == 0:
        return "OPAQUE", None, {"min": 255, "transparent_share": 0.0, "partial_share": 0.0}
    low = a < OPAQUE_FROM
    n_low = int(low.sum())
    partial = int(((a >= _PARTIAL[0]) & (a <= _PARTIAL[1])).sum())
    facts = {"min": int(a.min()), "transparent_share": n_low / a.size,
             "partial_share": partial / n_low if n_low else 0.0}
    if n_low <= OPAQUE_STRAY_SHARE * a.size:
        return "OPAQUE", None, facts
    if facts["partial_share"] <= MASK_PARTIAL_SHARE:
        return "MASK", MASK_CUTOFF, facts
    return "BLEND", None, facts
