"""What an export's files hold, for the person who ships them (``describe_export``: the job folder's export.json and
the app's report under the result), and whether they meet a destination's limits (``check_limits`` with
``DESTINATION_LIMITS``)."""
from __future__ import annotations

import os

import numpy as np

from ..core.callbacks import check
from .lod_targets import LOD_TOLERANCE, LodRefusal
from .placement import bounds, place

__all__ = ["DESTINATION_LIMITS", "describe_export", "check_limits", "print_shape_facts",
           "placed_shape_facts", "mesh_numbers", "shell_count", "file_bytes", "lod_entries", "PRINT_KINDS"]

# What each destination's files must meet (the destinations' own published limits where they have them: Shopify's
# 3D models take at most 15 MB; 100 k triangles is the e-commerce and 3D Commerce guidance for a web GLB). A print
# must be one closed body wound outward on a flat base, its repair leaving out at most 5 % of the surface; a game's
# levels of detail must each be within LOD_TOLERANCE of their targets.
DESTINATION_LIMITS = {
    "web": {"max_triangles": 100_000, "max_bytes": {"glb": 15_000_000}},
    "game": {"normal_map": True, "faces_within": 0.05, "lods_within": LOD_TOLERANCE},
    "print": {"watertight": True, "outward": True, "shells": 1, "flat_base": True, "max_surface_removed": 0.05,
              "faces_within": 0.05},
}


PRINT_KINDS = ("stl", "3mf")     # the files written from the print shape (``formats.print3d``)

# What export.json says of a print repair (``print_solid``'s info): how, and how much of the surface it left out.
REPAIR_KEYS = ("method", "parts_dropped", "area_dropped_share", "holes_filled", "cell_size")


def print_shape_facts(vertices, faces, solid: bool = False, cancel=None) -> dict:
    """{watertight, outward, shells, flat_base, print_file} of the shape the STL / 3MF are written with
    (``print3d.print_mesh``; "print_file": its triangles, vertices, size_m and base_m, as ``describe_export`` gives
    them, of these z-up ``vertices`` in metres); with ``solid`` also what making it print-ready did ({method,
    parts_dropped, area_dropped_share (the share of the surface left out of the print), holes_filled, cell_size of a
    rebuild} under "print_repair"). ``cancel()`` returning True raises ``Cancelled`` between the passes (each a
    second's work for a million faces on a CPU)."""
    from .formats.print3d import print_mesh
    from .formats.print_solid import has_flat_base
    done = {}
    check(cancel)
    shape = print_mesh(vertices, faces, solid=solid, info=done)
    repair = {"print_repair": {k: done[k] for k in REPAIR_KEYS if k in done}} if solid else {}
    if not len(shape.faces):
        return {"watertight": False, "outward": False, "shells": 0, "flat_base": False, **repair}
    check(cancel)
    watertight = bool(shape.is_watertight)
    check(cancel)
    outward = watertight and bool(shape.is_winding_consistent) and float(shape.volume) > 0
    check(cancel)
    shells = shell_count(shape.faces)
    check(cancel)
    flat_base = bool(has_flat_base(shape.vertices, shape.faces))
    return {"watertight": watertight, "outward": outward, "shells": shells, "flat_base": flat_base,
            "print_file": mesh_numbers(shape.vertices, shape.faces), **repair}


def mesh_numbers(vertices, faces) -> dict:
    """export.json's numbers of a mesh of z-up ``vertices`` in metres: triangles, vertices, size_m (width x, depth
    y, height z) and base_m (its lowest z)."""
    lo, hi = bounds(np.asarray(vertices))
    size = hi - lo
    return {"triangles": int(len(faces)), "vertices": int(len(vertices)),
            "size_m": {"width": round(float(size[0]), 6), "depth": round(float(size[1]), 6),
                       "height": round(float(size[2]), 6)},
            "base_m": round(float(lo[2]), 6)}


def placed_shape_facts(textured, height: float | None = None, pivot: str | None = None,
                       print_ready: bool = False, cancel=None) -> dict:
    """``print_shape_facts`` of ``textured`` placed as ``describe_export`` places it (the same arguments); a
    print-ready shape is the very solid the STL and 3MF are written from (``formats.write``: made, then placed), and
    "print_file" the numbers of those files."""
    if not print_ready:
        return print_shape_facts(place(textured.vertices, height, pivot, "m"), textured.faces, cancel=cancel)
    from .formats.print_solid import print_solid
    done = {}
    v, f = print_solid(textured.vertices, textured.faces, info=done)
    return {**print_shape_facts(place(v, height, pivot, "m"), f, cancel=cancel),
            "print_repair": {k: done[k] for k in REPAIR_KEYS if k in done}}


def shell_count(faces) -> int:
    """Separate bodies of a mesh: its faces joined across shared edges (two parts touching at one point are two
    bodies to a slicer, as ``print_solid`` treats them)."""
    from .formats.print_solid import face_of_edge
    from .mesh_graph import components, edges

    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        return 0
    he = edges(f, int(f.max()) + 1)[0].reshape(-1, 3)
    return int(components(len(f), np.repeat(np.arange(len(f)), 3), face_of_edge(he))[0])


def file_bytes(kind: str, path: str) -> int:
    """A file's size; an OBJ's with the material, texture and the material's maps written beside it."""
    from .formats.gltf import SUFFIX
    from .formats.material_maps import OBJ_MAP_TAGS

    total = os.path.getsize(path)
    if kind == "obj":
        stem = os.path.splitext(path)[0]
        for name in {stem + tag + suffix for tag in ("", *OBJ_MAP_TAGS) for suffix in (".mtl", *SUFFIX.values())}:
            if os.path.isfile(name):
                total += os.path.getsize(name)
    return total


def describe_export(textured, files: dict, *, height: float | None = None, pivot: str | None = None,
                    target_faces: int | None = None, limits: dict | None = None, texture_format: str = "png",
                    geometry_only: bool = False, draco: bool = False, print_ready: bool = False,
                    lods: list | None = None, destination: str | None = None, facts: dict | None = None,
                    lods_refused: list | None = None, cancel=None) -> dict:
    """``files``: {format: path} written from ``textured`` (a ``TexturedMesh``) with ``height`` / ``pivot`` and the
    other options named here (as ``formats.write`` took them). Triangles, vertices, the texture, the size in metres
    (width x, depth y, height z of the z-up object) and where its base is, the print shape's facts (watertight,
    shells, flat base), each file's bytes; ``lods``: [(share, TexturedMesh, path)] of the levels of detail made,
    ``lods_refused``: the ``lod_targets.LodRefusal`` of those refused; with ``limits`` (or a ``destination`` of
    ``DESTINATION_LIMITS``) also ``check_limits``' verdict. ``facts``: the print
    shape's facts for these arguments (``placed_shape_facts``) when the caller made them already, e.g. beside the
    files. The triangles, vertices and size are those of the files: of the print solid where every mesh file is an
    STL or 3MF made print-ready, else of ``textured``; each STL / 3MF entry names its own triangles. A quad mesh
    (``quads.bake``) adds "quads": its ``QuadReport`` (quad share, faces made vs asked, non-manifold and boundary
    edges, holes, distance to the source) with "textured_quads", the quads its textured files keep."""
    texture = np.asarray(textured.texture)
    textured_files = not geometry_only and any(kind in files for kind in ("glb", "obj", "usdz"))
    shape = placed_shape_facts(textured, height, pivot, print_ready, cancel) if facts is None else facts
    mesh = mesh_numbers(place(textured.vertices, height, pivot, "m"), textured.faces)
    printed = shape.get("print_file") or mesh
    if print_ready and files and set(files) <= set(PRINT_KINDS):
        mesh = printed              # the files written are the print solid's: the numbers are theirs
    out = {
        "destination": destination,
        "triangles": mesh["triangles"],
        "vertices": mesh["vertices"],
        "target_faces": None if target_faces is None else int(target_faces),
        "texture": ({"size": [int(texture.shape[1]), int(texture.shape[0])], "format": texture_format,
                     "normal_map": textured.normal_texture is not None and "glb" in files}
                    if textured_files else None),
        "draco": bool(draco and "glb" in files),
        "size_m": mesh["size_m"],
        "base_m": mesh["base_m"],
        "print_ready": bool(print_ready),
        **{k: v for k, v in shape.items() if k != "print_file"},
        "files": {kind: {"name": os.path.basename(path), "bytes": file_bytes(kind, path),
                         **({"triangles": printed["triangles"]} if kind in PRINT_KINDS else {})}
                  for kind, path in files.items()},
    }
    info = getattr(textured, "info", None) or {}
    if "quads" in info:        # the quad remesh's own measure: quad share, faces made vs asked, edges, holes
        kept = {"textured_quads": info["textured_quads"]} if "textured_quads" in info else {}
        out["quads"] = {**info["quads"], **kept}
    if lods or lods_refused:
        out["lods"] = lod_entries(lods or [], lods_refused or [], len(textured.faces))
    if limits is None and destination is not None:
        limits = DESTINATION_LIMITS.get(destination)
    if limits:
        out["limits"] = check_limits(out, limits)
    return out


def lod_entries(lods: list, refused: list, full_faces: int) -> list:
    """export.json's "lods": one entry per level, numbered 1, 2 ... from the largest share (model_lod1.glb ...):
    share, target and triangles with the file of a level made; share, target, floor and why of a level refused (its
    triangles None)."""
    made = [{"share": float(share), "target": int(lod.info.get("target", round(share * full_faces))),
             "triangles": int(len(lod.faces)), "file": os.path.basename(path), "bytes": os.path.getsize(path)}
            for share, lod, path in lods]
    out = made + [{"share": float(r.share), "target": int(r.target), "triangles": None, "floor": int(r.floor)}
                  for r in refused]
    out.sort(key=lambda entry: -entry["share"])
    for level, entry in enumerate(out, start=1):
        entry["level"] = level
        if entry["triangles"] is None:
            entry["refused"] = LodRefusal(entry["share"], entry["target"], entry["floor"]).describe(level)
    return out


def check_limits(report: dict, limits: dict) -> dict:
    """{"met": bool, "checks": [...], "reasons": [...], "limits": limits} of a report against ``limits``: one check
    per limit (per file, per level of detail), {"limit", "wanted", "value", "met", "text"}, the text saying the
    numbers; "reasons": the texts of the checks missed. Limits: ``max_triangles``, ``max_bytes`` ({format:
    bytes}), ``watertight`` / ``outward`` / ``flat_base`` (True: must be, must have one), ``shells`` (at most),
    ``normal_map`` (True: the GLB must carry one), ``faces_within`` (a share: the triangles within it of the target,
    when one was set), ``max_surface_removed`` (a share: of the surface the print repair may leave out),
    ``lods_within`` (a share: each level of detail's triangles within it of its target; a refused level misses)."""
    checks = []

    def add(name, wanted, value, met, text):
        checks.append({"limit": name, "wanted": wanted, "value": value, "met": bool(met), "text": text})

    most = limits.get("max_triangles")
    if most is not None:
        n = report["triangles"]
        add("max_triangles", most, n, n <= most, f"{n} triangles, " + (f"at most {most}" if n <= most else
                                                                      f"over the limit of {most}"))
    for kind, cap in (limits.get("max_bytes") or {}).items():
        entry = report["files"].get(kind)
        if entry is not None:
            fits = entry["bytes"] <= cap
            add(f"max_bytes.{kind}", cap, entry["bytes"], fits, f"{entry['name']} is {entry['bytes'] / 1e6:.1f} MB, "
                + (f"at most {cap / 1e6:.0f} MB" if fits else f"over {cap / 1e6:.0f} MB"))
    if limits.get("watertight"):
        ok = bool(report["watertight"])
        add("watertight", True, ok, ok, "watertight" if ok else
            "the mesh is not watertight (open edges or edges of more than two faces)")
    if limits.get("outward"):
        ok = bool(report.get("outward"))
        add("outward", True, ok, ok, "faces wound outward (a positive volume)" if ok else
            "the faces are not wound outward around a positive volume")
    shells = limits.get("shells")
    if shells is not None:
        n = int(report.get("shells", 0))
        add("shells", shells, n, 0 < n <= shells, f"{n} bod{'y' if n == 1 else 'ies'}, " +
            (f"at most {shells}" if 0 < n <= shells else f"more than {shells}" if n else "no body at all"))
    if limits.get("flat_base"):
        ok = bool(report.get("flat_base"))
        add("flat_base", True, ok, ok, "stands on a flat base" if ok else "no flat base to stand on")
    cap = limits.get("max_surface_removed")
    if cap is not None:
        repair = report.get("print_repair") or {}
        removed = float(repair.get("area_dropped_share", 0.0))
        how = " by a rebuild" if repair.get("method") == "rebuilt" else ""
        parts = int(repair.get("parts_dropped", 0))
        add("max_surface_removed", cap, round(removed, 4), removed <= cap,
            f"the print repair{how} removed {removed:.1%} of the surface ({parts} part{'' if parts == 1 else 's'} "
            "dropped), " + (f"at most {cap:.0%}" if removed <= cap else f"more than {cap:.0%}"))
    if limits.get("normal_map"):
        ok = bool((report.get("texture") or {}).get("normal_map"))
        add("normal_map", True, ok, ok, "the GLB has a normal map" if ok else "the GLB has no normal map")
    share, target = limits.get("faces_within"), report.get("target_faces")
    if share is not None:
        n = report["triangles"]
        if not target:
            add("faces_within", share, n, True, f"{n} triangles (no face target set)")
        else:
            ok = abs(n - target) <= share * target
            add("faces_within", share, n, ok, f"{n} triangles, " + ("within" if ok else "not within")
                + f" {share:.0%} of the target {target}")
    share = limits.get("lods_within")
    if share is not None:
        for lod in report.get("lods") or []:
            name = f"LOD{lod['level']}"
            if lod["triangles"] is None:
                add(f"lods_within.{name}", share, None, False, lod["refused"])
                continue
            ok = abs(lod["triangles"] - lod["target"]) <= share * lod["target"]
            add(f"lods_within.{name}", share, lod["triangles"], ok, f"{name}: {lod['triangles']} triangles, "
                + ("within" if ok else "not within") + f" {share:.0%} of its target {lod['target']}")
    reasons = [c["text"] for c in checks if not c["met"]]
    return {"met": not reasons, "checks": checks, "reasons": reasons, "limits": limits}
