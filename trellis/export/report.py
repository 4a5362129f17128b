"""What an export's files hold, for the person who ships them (``describe_export``: the job folder's export.json and
the app's report under the result), and whether they meet a destination's limits (``check_limits`` with
``DESTINATION_LIMITS``)."""
from __future__ import annotations

import os

import numpy as np

from .placement import bounds, place

__all__ = ["DESTINATION_LIMITS", "describe_export", "check_limits", "is_watertight", "print_shape_facts",
           "placed_shape_facts"]

# What each destination's files must meet (the destinations' own published limits where they have them: Shopify's
# 3D models take at most 15 MB; 100 k triangles is the e-commerce and 3D Commerce guidance for a web GLB).
DESTINATION_LIMITS = {
    "web": {"max_triangles": 100_000, "max_bytes": {"glb": 15_000_000}},
    "game": {"normal_map": True, "faces_within": 0.05},
    "print": {"watertight": True, "shells": 1, "flat_base": True, "faces_within": 0.05},
}


def is_watertight(vertices, faces, solid: bool = False) -> bool:
    """Every edge of the shape as the STL / 3MF are written (UV seams welded; ``solid``: the print-ready shell)
    has exactly two faces, consistently oriented (trimesh's test)."""
    return print_shape_facts(vertices, faces, solid)["watertight"]


def print_shape_facts(vertices, faces, solid: bool = False) -> dict:
    """{watertight, shells, flat_base} of the shape the STL / 3MF are written with (``print3d.print_mesh``); with
    ``solid`` also what making it print-ready did ({parts_dropped, holes_filled} under "print_repair")."""
    from .formats.print3d import print_mesh
    from .formats.print_solid import has_flat_base
    done = {}
    shape = print_mesh(vertices, faces, solid=solid, info=done)
    repair = {"print_repair": {k: done[k] for k in ("parts_dropped", "area_dropped_share", "holes_filled")
                               if k in done}} if solid else {}
    if not len(shape.faces):
        return {"watertight": False, "shells": 0, "flat_base": False, **repair}
    return {"watertight": bool(shape.is_watertight),
            "shells": shell_count(shape.faces),
            "flat_base": bool(has_flat_base(shape.vertices, shape.faces)), **repair}


def placed_shape_facts(textured, height: float | None = None, pivot: str | None = None,
                       print_ready: bool = False) -> dict:
    """``print_shape_facts`` of ``textured`` placed as ``describe_export`` places it (the same arguments)."""
    return print_shape_facts(place(textured.vertices, height, pivot, "m"), textured.faces, solid=print_ready)


def shell_count(faces) -> int:
    """Separate bodies of a mesh: its faces joined through shared vertices (two parts touching at one point print as
    one body, as ``print_solid`` keeps them)."""
    from .mesh_graph import components

    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    used, index = np.unique(f, return_inverse=True)
    index = index.reshape(-1, 3)
    return int(components(len(used), np.concatenate([index[:, 0], index[:, 1]]),
                          np.concatenate([index[:, 1], index[:, 2]]))[0])


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
                    target_faces: int | None = None, limits: dict | None = None, texture_format: str = "png",
                    geometry_only: bool = False, draco: bool = False, print_ready: bool = False,
                    lods: list | None = None, destination: str | None = None, facts: dict | None = None) -> dict:
    """``files``: {format: path} written from ``textured`` (a ``TexturedMesh``) with ``height`` / ``pivot`` and the
    other options named here (as ``formats.write`` took them). Triangles, vertices, the texture, the size in metres
    (width x, depth y, height z of the z-up object) and where its base is, the print shape's facts (watertight,
    shells, flat base), each file's bytes; ``lods``: [(share, TexturedMesh, path)] of the levels of detail; with
    ``limits`` (or a ``destination`` of ``DESTINATION_LIMITS``) also ``check_limits``' verdict. ``facts``: the print
    shape's facts for these arguments (``placed_shape_facts``) when the caller made them already, e.g. beside the
    files."""
    placed = place(textured.vertices, height, pivot, "m")
    lo, hi = bounds(placed)
    size = hi - lo
    texture = np.asarray(textured.texture)
    textured_files = not geometry_only and any(kind in files for kind in ("glb", "obj", "usdz"))
    out = {
        "destination": destination,
        "triangles": int(len(textured.faces)),
        "vertices": int(len(textured.vertices)),
        "target_faces": None if target_faces is None else int(target_faces),
        "texture": ({"size": [int(texture.shape[1]), int(texture.shape[0])], "format": texture_format,
                     "normal_map": textured.normal_texture is not None and "glb" in files}
                    if textured_files else None),
        "draco": bool(draco and "glb" in files),
        "size_m": {"width": round(float(size[0]), 6), "depth": round(float(size[1]), 6),
                   "height": round(float(size[2]), 6)},
        "base_m": round(float(lo[2]), 6),
        "print_ready": bool(print_ready),
        **(print_shape_facts(placed, textured.faces, solid=print_ready) if facts is None else facts),
        "files": {kind: {"name": os.path.basename(path), "bytes": file_bytes(kind, path)}
                  for kind, path in files.items()},
    }
    if lods:
        # a level stops above its target where every UV chart keeps its corners (trellis.export.lods)
        out["lods"] = [{"share": float(share), "target": int(lod.info.get("target", round(share * len(textured.faces)))),
                        "triangles": int(len(lod.faces)), "file": os.path.basename(path),
                        "bytes": os.path.getsize(path)} for share, lod, path in lods]
    if limits is None and destination is not None:
        limits = DESTINATION_LIMITS.get(destination)
    if limits:
        out["limits"] = check_limits(out, limits)
    return out


def check_limits(report: dict, limits: dict) -> dict:
    """{"met": bool, "reasons": [...], "limits": limits} of a report against ``limits``: ``max_triangles``,
    ``max_bytes`` ({format: bytes}), ``watertight`` (True: must be), ``shells`` (at most), ``flat_base`` (True: must
    have one), ``normal_map`` (True: the GLB must carry one), ``faces_within`` (a share: the triangles within it of
    the target, when one was set)."""
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
    shells = limits.get("shells")
    if shells is not None and report.get("shells", 0) > shells:
        reasons.append(f"{report['shells']} separate shells, more than {shells}")
    if limits.get("flat_base") and not report.get("flat_base"):
        reasons.append("no flat base to stand on")
    if limits.get("normal_map") and not (report.get("texture") or {}).get("normal_map"):
        reasons.append("the GLB has no normal map")
    share, target = limits.get("faces_within"), report.get("target_faces")
    if share is not None and target and abs(report["triangles"] - target) > share * target:
        reasons.append(f"{report['triangles']} triangles, not within {share:.0%} of the target {target}")
    return {"met": not reasons, "reasons": reasons, "limits": limits}
