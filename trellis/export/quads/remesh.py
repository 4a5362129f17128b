"""Quad remeshing through Instant Meshes (``pyinstantmeshes``, BSD-3-Clause): a triangle mesh in, a quad mesh out.

``remesh_quads(vertices, faces, target_faces)`` returns a ``QuadRemesh``: the ``QuadMesh`` (faces ``(F, 4)``, a
triangle's fourth index is -1) and its ``QuadReport`` (``measure``). The target counts faces of the result (quads).
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace

import numpy as np

from .fit import fit_corners
from .measure import QuadReport, edge_counts, measure_quads
from .nearest import NearestTriangles

# Pure-quad mode extracts a quad-dominant mesh and splits every face of it once: about four faces per one asked.
PURE_QUAD_SPLIT = 4
# A second run, its ask scaled by what the first made, when the first missed the target by more than this share.
RETRY_MISS = 0.05
# A target too small for the shape makes the remesher return nothing: the ask grows this much, at most this often.
EMPTY_GROWTH, EMPTY_TRIES = 4, 2
DEFAULT_CREASE_ANGLE = 30.0

# The remesher prints its progress on the process's stdout; one redirection at a time.
_STDOUT_LOCK = threading.Lock()


class QuadTargetError(ValueError):
    """The quad remesh made no faces at the asked target, even when asked for more: the target is too small for the
    shape (the message says what to do)."""


@dataclass(frozen=True)
class QuadMesh:
    """Polygons with at most four corners: ``faces[:, 3] == -1`` marks a triangle."""
    vertices: np.ndarray
    faces: np.ndarray

    @property
    def quad_mask(self) -> np.ndarray:
        return self.faces[:, 3] >= 0

    def polygons(self) -> list[list[int]]:
        return [[int(i) for i in f if i >= 0] for f in self.faces]


@dataclass(frozen=True)
class QuadRemesh:
    mesh: QuadMesh
    report: QuadReport


def _write_obj(path: str, vertices: np.ndarray, faces: np.ndarray) -> None:
    # one format for the whole file: the same text as a line at a time, in under half the time
    with open(path, "w", encoding="ascii") as f:
        f.write(("v %.9g %.9g %.9g\n" * len(vertices)) % tuple(np.ravel(vertices).tolist()))
        f.write(("f %d %d %d\n" * len(faces)) % tuple((np.ravel(faces) + 1).tolist()))


def read_polygon_obj(path: str) -> tuple[np.ndarray, list[list[int]]]:
    """Positions and polygons (0-based) of an OBJ; texture and normal indices are dropped."""
    vertices, polygons = [], []
    with open(path, encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("v "):
                vertices.append([float(t) for t in line.split()[1:4]])
            elif line.startswith("f "):
                polygons.append([int(t.split("/")[0]) - 1 for t in line.split()[1:]])
    return np.asarray(vertices, np.float64).reshape(-1, 3), polygons


def polygons_to_quads(polygons: list[list[int]]) -> np.ndarray:
    """Triangles and quads kept; an n-gon (n > 4) fanned into quads and at most one triangle."""
    out = []
    for poly in polygons:
        if len(poly) < 3:
            continue
        if len(poly) <= 4:
            out.append(poly + [-1] * (4 - len(poly)))
            continue
        first, rest = poly[0], poly[1:]
        while len(rest) >= 3:
            out.append([first, rest[0], rest[1], rest[2]])
            rest = rest[2:]
        if len(rest) == 2:
            out.append([first, rest[0], rest[1], -1])
    return np.asarray(out, np.int64).reshape(-1, 4)


def _run_instant_meshes(vertices, faces, ask: int, crease_angle, boundaries: bool, pure_quad: bool):
    import pyinstantmeshes
    with tempfile.TemporaryDirectory(prefix="trellis_quads_") as tmp:
        src, dst = os.path.join(tmp, "in.obj"), os.path.join(tmp, "out.obj")
        _write_obj(src, vertices, faces)
        with _STDOUT_LOCK:
            sys.stdout.flush()
            saved = os.dup(1)
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, 1)
                pyinstantmeshes.remesh_file(
                    src, dst, target_face_count=int(ask),
                    crease_angle=float(crease_angle) if crease_angle is not None else -1.0,
                    align_to_boundaries=bool(boundaries), pure_quad=bool(pure_quad), deterministic=True)
            finally:
                os.dup2(saved, 1)
                os.close(saved)
                os.close(devnull)
        out_v, polygons = read_polygon_obj(dst)
    return QuadMesh(out_v.astype(np.float32), polygons_to_quads(polygons))


def _cleaner(mesh: QuadMesh, vertices, faces, ask: int, crease_angle, boundaries: bool, pure_quad: bool) -> QuadMesh:
    """``mesh``, or where it has non-manifold edges or holes the source lacks, a run without feature lines when
    that one is cleaner: the feature lines' extraction is what occasionally tears the quad graph."""
    source_holes = edge_counts(faces)[1]
    non_manifold, holes = edge_counts(mesh.faces)
    if crease_angle is None or (non_manifold == 0 and holes <= source_holes):
        return mesh
    other = _run_instant_meshes(vertices, faces, ask, None, boundaries, pure_quad)
    other_non_manifold, other_holes = edge_counts(other.faces)
    if (other_non_manifold, max(other_holes - source_holes, 0)) < (non_manifold, holes - source_holes):
        return other
    return mesh


def remesh_quads(vertices, faces, target_faces: int, *, crease_angle: float | None = DEFAULT_CREASE_ANGLE,
                 boundaries: bool = True, pure_quad: bool = True, fit: bool = True,
                 hausdorff_samples: int = 20000) -> QuadRemesh:
    """Remesh a triangle mesh to about ``target_faces`` quads (all quads with ``pure_quad``, else quad-dominant).

    ``crease_angle``: edges sharper than this (degrees) are kept as feature lines; None ignores features.
    ``boundaries``: the quad field follows open boundaries, which stay where they are. A result torn where the
    source is not (non-manifold edges, new holes) is made again without feature lines when that is cleaner.
    """
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    target = int(target_faces)
    if target < 1 or len(faces) == 0:
        raise ValueError(f"remesh_quads needs a positive target and a non-empty mesh (target {target}, "
                         f"{len(faces)} faces)")
    start = time.perf_counter()
    split = PURE_QUAD_SPLIT if pure_quad else 1
    ask = max(1, round(target / split))
    mesh = _run_instant_meshes(vertices, faces, ask, crease_angle, boundaries, pure_quad)
    made = len(mesh.faces)
    for _ in range(EMPTY_TRIES):
        if made:
            break
        ask *= EMPTY_GROWTH                 # too few quads for the shape: the report says how far it landed
        mesh = _run_instant_meshes(vertices, faces, ask, crease_angle, boundaries, pure_quad)
        made = len(mesh.faces)
    if not made:
        raise QuadTargetError(f"the quad remesh made no faces for {target} quads on this shape, even when asked for "
                              f"{ask * split}: ask for more faces (Target triangles counts quads), or choose "
                              "Triangles")
    if abs(made - target) > RETRY_MISS * target:
        # The remesher's own count is approximate: scale the ask once by how far it landed.
        second = _run_instant_meshes(vertices, faces, max(1, round(ask * target / made)), crease_angle,
                                     boundaries, pure_quad)
        if len(second.faces) and abs(len(second.faces) - target) < abs(made - target):
            mesh = second
    mesh = _cleaner(mesh, vertices, faces, ask, crease_angle, boundaries, pure_quad)
    stages = {"remesh": time.perf_counter() - start}
    # the source's search, built once for the snap, the fit and the measure
    source = NearestTriangles(vertices, faces)
    # pure-quad mode's split puts new corners on chords of the surface: set every corner back onto it
    snapped = source.closest(mesh.vertices.astype(np.float64))[0]
    stages["snap"] = time.perf_counter() - start - sum(stages.values())
    if fit:
        snapped = fit_corners(snapped, mesh.faces, vertices, faces, source=source)
        stages["fit"] = time.perf_counter() - start - sum(stages.values())
    mesh = QuadMesh(snapped.astype(np.float32), mesh.faces)
    seconds = time.perf_counter() - start
    report = measure_quads(mesh.vertices, mesh.faces, vertices, faces, target, seconds=seconds,
                           samples=hausdorff_samples, source=source)
    stages["measure"] = time.perf_counter() - start - seconds
    return QuadRemesh(mesh, replace(report, stage_seconds=stages))
