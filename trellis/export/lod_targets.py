"""When a level of detail meets its target, and the error that says which levels did not (``lods.lod_meshes``).

A level is made by edge collapses that keep every UV chart's corners, every separate piece, and the surface's
normals within bounds (``lods``): what keeps its silhouette and its texture. Where no such collapse is left above a
level's target (a mesh of many small pieces, or of many small charts), that level is refused, not written with
more faces than asked: ``LodTargetError`` names each refused level, its target and the fewest faces reached (its
floor), and carries the levels that were made.
"""
from __future__ import annotations

from typing import NamedTuple

__all__ = ["LOD_TOLERANCE", "LodRefusal", "LodTargetError", "meets_target"]

LOD_TOLERANCE = 0.10      # a level may have this share more or fewer faces than its target


def meets_target(faces: int, target: int, tolerance: float = LOD_TOLERANCE) -> bool:
    """Whether a level of ``faces`` faces is within ``tolerance`` of its ``target``."""
    return abs(int(faces) - int(target)) <= tolerance * int(target)


class LodRefusal(NamedTuple):
    """A level not made: its share of the full mesh's faces, its target and the fewest faces that keep the
    silhouette (where the decimation stopped)."""
    share: float
    target: int
    floor: int

    def describe(self, level: int | None = None) -> str:
        name = f"LOD{level}" if level is not None else f"the {self.share:g} level of detail"
        return (f"{name}: its target of {self.target} triangles is below the {self.floor} that keep the silhouette "
                f"(every piece and every texture chart's corners); not made")

    def to_dict(self) -> dict:
        return {"share": self.share, "target": self.target, "floor": self.floor}


class LodTargetError(ValueError):
    """Some levels of detail cannot reach their targets: ``refused`` [LodRefusal], ``made`` (one entry per share
    asked for, in that order: the ``TexturedMesh``, or None for a refused level)."""

    def __init__(self, made: list, refused: list, shares: list):
        self.made, self.refused = made, list(refused)
        levels = {share: k for k, share in enumerate(sorted(set(shares), reverse=True), start=1)}
        by_floor: dict = {}
        for r in self.refused:
            by_floor.setdefault(r.floor, []).append(r)
        said = []
        for floor, group in by_floor.items():
            if len(group) == 1:
                said.append(group[0].describe(levels.get(group[0].share)))
                continue
            names = [f"LOD{levels[r.share]}" if r.share in levels else f"{r.share:g}" for r in group]
            said.append(f"{', '.join(names[:-1])} and {names[-1]}: their targets of "
                        f"{', '.join(str(r.target) for r in group[:-1])} and {group[-1].target} triangles are below "
                        f"the {floor} that keep the silhouette (every piece and every texture chart's corners); "
                        f"not made")
        super().__init__("; ".join(said))
