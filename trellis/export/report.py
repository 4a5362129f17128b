"""What an export's files hold, for the person who ships them (``describe_export``: the job folder's export.json and
the app's report under the result), and whether they meet a destination's limits (``check_limits``)."""
from __future__ import annotations

import os

import numpy as np

from .placement import bounds, place

__all__ = ["describe_export", "check_limits", "is_watertight"]


def is_watertight(vertices, faces) -> bool:
    """Every edge of the shape (UV seams welded, as the STL / 3MF are written) has exactly two faces, consistently
    oriented (trimesh's test)."""
    from .formats.print3d import print_mesh
    shape = print_mesh(vertices, faces)
    return bool(len(shape.faces)) and bool(shape.is_watertight)


def file_bytes(kind: str, path: str) -> int:
    """A file's size; an OBJ's with the material and texture written beside it."""
    from .formats.gltf import SUFFIX

    total = os.path.getsize(path)
    if kind == "obj":
        stem = os.path.splitext(path)[0]
        for suffix in (".mtl", *SUFFIX.values()):
            if os.path.isfile(stem + suffix):
                total += os.path.getsize(stem + suffix)
    return total


def describe_export(textured, files: dict, *, height: float | None = None, pivot: str | None = None,
                    target_faces: int | None = None, limits: dict | None = None) -> dict:
    """``files``: {format: path} written from ``textured`` (a ``TexturedMesh``) with ``height`` / ``pivot``.
    Triangles, vertices, the texture, the size in metres (width x, depth y, height z of the z-up object) and
    where its base is, watertight or not, each file's bytes; with ``limits`` also ``check_limits``' verdict."""
    placed = place(textured.vertices, height, pivot, "m")
    lo, hi = bounds(placed)
    size = hi - lo
    texture = np.asarray(textured.texture)
    out = {
        "triangles": int(len(textured.faces)),
        "vertices": int(len(textured.vertices)),
        "target_faces": None if target_faces is None else int(target_faces),
        "texture": {"size": [int(texture.shape[1]), int(texture.shape[0])],
                    "normal_map": textured.normal_texture is not None},
        "size_m": {"width": round(float(size[0]), 6), "depth": round(float(size[1]), 6),
                   "height": round(float(size[2]), 6)},
        "base_m": round(float(lo[2]), 6),
        "watertight": is_watertight(textured.vertices, textured.faces),
        "files": {kind: {"name": os.path.basename(path), "bytes": file_bytes(kind, path)}
                  for kind, path in files.items()},
    }
    if limits:
        out["limits"] = check_limits(out, limits)
    return out


def check_limits(report: dict, limits: dict) -> dict:
    """{"met": bool, "reasons": [...]} of a report against ``limits``: ``max_triangles``, ``max_bytes``
    ({format: bytes}), ``watertight`` (True: must be), ``faces_within`` (a share: the triangles within it of the
    target)."""
    reasons = []
    most = limits.get("max_triangles")
    if most is not None and report["triangles"] > most:
        reasons.append(f"{report['triangles']} triangles, over the limit of {most}")
    for kind, cap in (limits.get("max_bytes") or {}).items():
        entry = report["files"].get(kind)
        if entry is not None and entry["bytes"] > cap:
            reasons.append(f"{entry['name']} is {entry['bytes'] / 1e6:.1f} MB, over {cap / 1e6:.0f} MB")
    if limits.get("watertight") and not report["watertight"]:
        reasons.append("the mesh is not watertight (open edges or edges of more than two faces)")
    share, target = limits.get("faces_within"), report.get("target_faces")
    if share is not None and target and abs(report["triangles"] - target) > share * target:
        reasons.append(f"{report['triangles']} triangles, not within {share:.0%} of the target {target}")
    return {"met": not reasons, "reasons": reasons}
