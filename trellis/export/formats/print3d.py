"""The 3D-print formats, geometry only, written through trimesh: binary STL and 3MF.

* **STL** carries no unit and no axis: its numbers are whatever the caller placed (``placement.place``), in
  metres unless ``units="mm"`` (slicers read STL as millimetres, so a print preset asks for ``"mm"``).
* **3MF** names its unit in the model's ``unit`` attribute, so a reader gets the right size either way: we
  write ``"meter"`` or ``"millimeter"`` to match ``units`` (trimesh writes ``"millimeter"`` always, so the
  attribute is set after it). Its build volume is z up (3MF core specification), hence z up by default.

Both get the shape welded (a UV seam's copies of a point merged): 3MF indexes its vertices, and a slicer
reads a seam left open as a hole in a mesh that is in fact closed. STL repeats each corner anyway. The print-ready
option (``formats.write(print_ready=True)``) makes the shape one closed body with a flat base first
(``print_solid``), before it is placed: the base then lands at the pivot and the height is the one asked for.
"""
from __future__ import annotations

import io
import os
import zipfile

import numpy as np

from ..placement import turn_to
from .gltf import welded

__all__ = ["THREEMF_UNIT", "MODEL_PART", "print_mesh", "file_checked", "write_stl", "write_3mf", "with_unit"]

THREEMF_UNIT = {"m": "meter", "mm": "millimeter"}     # our units -> the 3MF core specification's names
MODEL_PART = "3D/3dmodel.model"       # where trimesh (and the specification's examples) put the model part


def print_mesh(vertices, faces, up: str = "z", solid: bool = False, info: dict | None = None):
    """A ``trimesh.Trimesh`` of the welded shape from z-up placed ``vertices``, turned to ``up``; ``solid``: made
    one closed body with a flat base first (``print_solid.print_solid``, which fills ``info``)."""
    import trimesh
    if solid:
        from .print_solid import print_solid
        v, f = print_solid(vertices, faces, info=info)
    else:
        v, f = welded(vertices, faces)
    return trimesh.Trimesh(vertices=turn_to(v, up), faces=f, process=False)


def file_checked(mesh, solid: bool):
    """``mesh``; for a print ``solid``, checked first as a reader of its file sees it (float32 points, equal ones
    merged): no two of its vertices merge and no face is without area (``print_remesh.well_spaced`` keeps them
    apart), else a ValueError, so that no such file is written."""
    if solid:
        import trimesh
        points = np.asarray(mesh.vertices, dtype=np.float32)
        seen = trimesh.Trimesh(vertices=points.astype(np.float64), faces=mesh.faces, process=False)
        if len(np.unique(points, axis=0)) != len(points) or not seen.nondegenerate_faces().all():
            raise ValueError("the print solid does not keep its faces in the file's precision (float32)")
    return mesh


def write_stl(path, vertices, faces, up: str = "z", solid: bool = False) -> str:
    """Write ``path`` as binary STL from z-up placed ``vertices`` turned to ``up`` (``solid``: a print solid,
    ``file_checked``); returns the path."""
    path = os.fspath(path)
    data = file_checked(print_mesh(vertices, faces, up), solid).export(file_type="stl")
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def write_3mf(path, vertices, faces, up: str = "z", units: str = "m", solid: bool = False) -> str:
    """Write ``path`` as 3MF from z-up placed ``vertices`` (already in ``units``) turned to ``up`` (``solid``: as
    ``write_stl``); returns it."""
    if units not in THREEMF_UNIT:
        raise ValueError(f"unknown units {units!r} (use one of {tuple(THREEMF_UNIT)})")
    path = os.fspath(path)
    data = with_unit(file_checked(print_mesh(vertices, faces, up), solid).export(file_type="3mf"),
                     THREEMF_UNIT[units])
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def with_unit(package: bytes, unit: str) -> bytes:
    """The 3MF ``package`` with its model's ``unit`` attribute set to ``unit``; every other part as it was."""
    from lxml import etree
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(package)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == MODEL_PART:
                root = etree.fromstring(data)
                root.set("unit", unit)
                data = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
            dst.writestr(item, data, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()

