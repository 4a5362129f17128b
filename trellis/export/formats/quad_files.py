"""A quad mesh's files: its quads given back where the format has them.

A mesh from the quad remesher (``quads.triangulate_quads``) holds its quads as its first ``quad_pairs`` pairs of
triangles. The OBJ writes each such pair that still shares its diagonal as one ``f a b c d``; the GLB (glTF has
no quads) keeps the pairs and says so in its mesh's ``extras`` (``quads.GLTF_EXTRAS_KEY``: the count of leading
triangle pairs that are quads); the USDZ gets ``faceVertexCounts`` of 4 (``usdz.define_stage``).
"""
from __future__ import annotations

import json
import os
import struct

import numpy as np

from ..quads.triangulate import GLTF_EXTRAS_KEY, corner_keys, merge_pairs

__all__ = ["glb_with_quad_extras", "obj_with_quads"]

GLB_MAGIC, JSON_CHUNK = 0x46546C67, 0x4E4F534A


def obj_with_quads(path, quad_pairs: int) -> str:
    """Rewrite the ``f`` lines of the OBJ at ``path`` (one triangle a line, in face order) with its leading pairs
    as quads where they share an edge (the same positions and UVs); returns the path."""
    path = os.fspath(path)
    with open(path, encoding="ascii") as fh:
        lines = fh.read().split("\n")
    face_rows = [i for i, line in enumerate(lines) if line.startswith("f ")]
    if not face_rows or quad_pairs <= 0:
        return path
    corners = [lines[i].split()[1:] for i in face_rows]
    # The writer gives a corner's v, vt and vn one index: the token stands for that vertex.
    token_of = {int(t.split("/")[0]) - 1: t for row in corners for t in row}
    tris = np.asarray([[int(t.split("/")[0]) - 1 for t in row] for row in corners], np.int64)
    positions = [line.split()[1:4] for line in lines if line.startswith("v ")]
    uvs = [line.split()[1:3] for line in lines if line.startswith("vt ")]
    arrays = [np.asarray(positions, np.float64)] + ([np.asarray(uvs, np.float64)] if len(uvs) == len(positions) else [])
    # copies of a corner made for its normals alone (a crease) still close a quad; those of a UV seam do not
    sizes, flat = merge_pairs(tris, quad_pairs, corner_keys(*arrays))
    out, start = [], 0
    for size in sizes.tolist():
        out.append("f " + " ".join(token_of[i] for i in flat[start:start + size].tolist()))
        start += size
    first, last = face_rows[0], face_rows[-1]
    kept = lines[:first] + [line for line in lines[first:last + 1] if not line.startswith("f ")] + lines[last + 1:]
    # the faces go back where the first one was (the writer puts them after the usemtl line)
    at = first
    kept[at:at] = out
    with open(path, "w", encoding="ascii") as fh:
        fh.write("\n".join(kept))
    return path


def glb_with_quad_extras(path, quad_pairs: int) -> str:
    """Add ``{GLTF_EXTRAS_KEY: quad_pairs}`` to the ``extras`` of every mesh of the GLB at ``path``."""
    path = os.fspath(path)
    with open(path, "rb") as fh:
        data = fh.read()
    magic, version, _ = struct.unpack_from("<III", data, 0)
    length, kind = struct.unpack_from("<II", data, 12)
    if magic != GLB_MAGIC or kind != JSON_CHUNK:
        raise ValueError(f"{path} is not a binary glTF with a JSON chunk first")
    doc = json.loads(data[20:20 + length].decode("utf-8"))
    for mesh in doc.get("meshes", []):
        mesh.setdefault("extras", {})[GLTF_EXTRAS_KEY] = int(quad_pairs)
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)              # chunks are 4-byte aligned; JSON pads with spaces
    rest = data[20 + length:]
    out = struct.pack("<III", GLB_MAGIC, version, 12 + 8 + len(text) + len(rest))
    out += struct.pack("<II", len(text), JSON_CHUNK) + text + rest
    with open(path, "wb") as fh:
        fh.write(out)
    return path
