"""The dense O-Voxel mesh down to the export's face target, fast whatever the decoder made (TRELLIS2_FACTS.md §11,
§12.2, with our own tools):

1. ``cluster``: vertex clustering on a uniform grid (``cluster.cluster_to_faces``), on the mesh's device, to the
   target within TARGET_TOLERANCE: linear time, an error bounded by the cell (about a voxel or two at the usual
   targets), and no stall on open sheets, specks or non-manifold fans, where an edge-collapse decimator stops far
   above the target (its pieces keep their open borders in place, and a random-weight decoder's mesh is mostly
   open border);
   on an input that is closed (but for a few edges), the clusters are then split where they open or fold the surface
   (``refine``: the two sides of a thin wall, folds), the cell rescaled to land on the target again;
2. ``small_holes``: holes up to the perimeter closed, on the reduced mesh (a hole below the cell has closed itself);
3. where the patches took the count past the tolerance, the quadric decimation of the v1 clean-up
   (``cleanup.chain.clean_mesh_for_export`` without its hidden-face removal: the dual grid has no inner sheet) trims
   the filled mesh to the target (a few per cent of its faces: one pass over the whole mesh); a trim that lands
   outside the contract and farther from the target than the mesh before the patches (small closed pieces collapse
   whole: a random-weight decoder's quads, two faces each, closed by two more), or with more open or non-manifold
   edges than it was given, gives way to that mesh;
4. only where the clustering cannot land within CONTRACT_TOLERANCE (a small mesh at a target of a few hundred faces,
   whose count jumps from one cell size to the next), the dense mesh hole-filled and decimated by that quadric
   decimation instead, kept if it lands closer with no more open or non-manifold edges.

Each step's edge topology is recorded (``manifold.edge_counts``: boundary and non-manifold edges), the dense input's
and the result's included, so the report says whether a closed input stayed closed.

The result always has faces: the dense mesh's, clustered or as it is, is the floor every later step is measured
against.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import torch

from ...core.callbacks import StageProgress, check
from ..arrays import output, report
from ..cleanup.chain import clean_mesh_for_export
from .cluster import search_cell
from .manifold import edge_counts, edge_table
from .refine import refine_to_faces
from .small_holes import MAX_HOLE_PERIMETER, fill_small_holes

__all__ = ["TARGET_TOLERANCE", "LOOSE_TOLERANCE", "CONTRACT_TOLERANCE", "QUADRIC_MAX_FACES", "CLOSED_SHARE",
           "Clustered", "cluster_stage", "finish_reduction", "reduce_to_target"]

# The clustering's landing tolerance, inside the export's contract (the target +- CONTRACT_TOLERANCE), and what it
# accepts after a few tries (``cluster.LOOSE_AFTER``) on a mesh whose count jumps between cell sizes.
TARGET_TOLERANCE = 0.03
LOOSE_TOLERANCE = 0.045
CONTRACT_TOLERANCE = 0.05
# Step 4 only for dense meshes up to this many faces (one quadric pass of about a second; a larger mesh's count
# moves in small steps with the cell and lands).
QUADRIC_MAX_FACES = 300_000
# Inputs with at most this share of edges per face open or non-manifold count as closed: their clustering is refined
# where it breaks them (``refine``); a decoder's open sheets are not (refining them would undo the reduction).
CLOSED_SHARE = 1e-3


def _bad(counts: dict) -> int:
    return counts["boundary_edges"] + counts["nonmanifold_edges"]


def _off(faces: int, target: int) -> float:
    return abs(faces - target) / target


class Clustered(NamedTuple):
    """Step 1's result (``cluster_stage``): the dense mesh as given, the clustered (or refined) mesh as CPU tensors
    and the record so far (``reduce_to_target``'s "info")."""
    dense_vertices: torch.Tensor
    dense_faces: torch.Tensor
    vertices: torch.Tensor
    faces: torch.Tensor
    info: dict


def _lapper(info: dict):
    """A clock whose laps add their seconds to ``info["seconds"][name]``."""
    seconds = info.setdefault("seconds", {})
    clock = [time.perf_counter()]

    def lap(name):
        now = time.perf_counter()
        seconds[name] = round(seconds.get(name, 0.0) + now - clock[0], 3)
        clock[0] = now
    return lap


def cluster_stage(vertices: torch.Tensor, faces: torch.Tensor, target: int, voxel_size: float,
                  progress: StageProgress = None, cancel=None, info: dict | None = None) -> Clustered:
    """Step 1 of ``reduce_to_target`` on the mesh's device (the clustering, refined on a closed input), its result
    then copied to the CPU: the later steps are many small passes over a mesh of about ``target`` faces, which on a
    GPU the sampling keeps busy wait for its kernels at each of their syncs."""
    info = {} if info is None else info
    lap = _lapper(info)
    target = int(target)
    dense_v, dense_f = vertices.float(), faces.long()
    v, f = dense_v, dense_f
    dense_table = edge_table(dense_f)               # the refinement's dense edges as well
    topology = info["topology"] = {"input": dense_table.counts()}
    lap("topology")
    if f.shape[0] > target:
        report(progress, "cluster", 0, 1)
        got = search_cell(v, f, target, TARGET_TOLERANCE, voxel_size, cancel=cancel, loose=LOOSE_TOLERANCE)
        f = got.faces
        info["cluster"] = {"cell_voxels": round(got.cell / voxel_size, 3), "tries": got.tries,
                           "faces": int(f.shape[0])}
        topology["cluster"] = edge_counts(f)
        refine = (got.cell > 0 and _bad(topology["cluster"])
                  and _bad(topology["input"]) <= CLOSED_SHARE * dense_f.shape[0])
        if not refine:                  # a refined clustering places its own vertices
            v = got.vertices()
        report(progress, "cluster", 1, 1)
        lap("cluster")
        if refine:
            refined = info["refine"] = {}
            v, f = refine_to_faces(dense_v, dense_f, got.cell, target, TARGET_TOLERANCE, voxel_size / 2,
                                   cancel=cancel, info=refined, edges=dense_table.pairs())
            refined.update(cell_voxels=round(refined.pop("cell") / voxel_size, 3), faces=int(f.shape[0]))
            topology["refine"] = edge_counts(f)
            lap("refine")
    return Clustered(dense_v, dense_f, v.cpu(), f.cpu(), info)


def reduce_to_target(vertices: torch.Tensor, faces: torch.Tensor, target: int, voxel_size: float,
                     max_hole_perimeter: float = MAX_HOLE_PERIMETER, progress: StageProgress = None, cancel=None,
                     info: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(vertices float32 [V,3], faces int64 [F,3], numpy) of the dense mesh (torch, any device) with ``target``
    faces within CONTRACT_TOLERANCE (a mesh with fewer keeps its own), never none; see the module docstring.
    ``voxel_size``: the O-Voxel's, the smallest clustering cell. ``info`` gets "cluster" (cell in voxels, tries, faces), "holes",
    "trim" (step 3's record), "quadric" (step 4's, and whether it was kept), "seconds" per step and "topology":
    ``manifold.edge_counts`` of the dense "input", after "cluster" and "fill_holes", and of the "output"."""
    clustered = cluster_stage(vertices, faces, target, voxel_size, progress, cancel, info)
    return finish_reduction(clustered, target, max_hole_perimeter, progress, cancel)


def finish_reduction(clustered: Clustered, target: int, max_hole_perimeter: float = MAX_HOLE_PERIMETER,
                     progress: StageProgress = None, cancel=None, info: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2-4 of ``reduce_to_target`` after its clustering (``cluster_stage``), on the CPU; ``info``: where the
    record goes on (default: the clustering's own)."""
    if info is None:
        info = clustered.info
    elif info is not clustered.info:
        info.update(clustered.info)
    lap = _lapper(info)
    topology = info["topology"]
    target = int(target)
    dense_n = int(clustered.dense_faces.shape[0])
    v, f = clustered.vertices, clustered.faces
    check(cancel)
    unfilled = v, f
    v, f = fill_small_holes(v, f, max_hole_perimeter, progress, cancel, info.setdefault("holes", {}))
    topology["fill_holes"] = edge_counts(f)
    lap("fill_holes")
    check(cancel)
    counts = None                       # edge_counts(f_np) where known already (a second count is a CPU sort)
    if f.shape[0] > target * (1 + TARGET_TOLERANCE):
        trim = info.setdefault("trim", {})
        v_np, f_np = clean_mesh_for_export(v, f, fill_holes=False, target_faces=target, progress=progress,
                                           cancel=cancel, info=trim)
        off, before = _off(len(f_np), target), _off(int(unfilled[1].shape[0]), target)
        # a trim that opens or folds the surface is no trim (the quadric decimator keeps no link condition)
        kept = len(f_np) > 0 and (off <= CONTRACT_TOLERANCE or off <= before)
        if kept:
            counts = edge_counts(f_np)
            kept = _bad(counts) <= _bad(topology["fill_holes"])
        trim["kept"] = bool(kept)
        if not kept:
            counts = None
            v_np, f_np = output(unfilled[0].numpy(), unfilled[1].numpy())
        lap("trim")
    else:
        v_np, f_np = output(v.numpy(), f.numpy())
        counts = dict(topology["fill_holes"])
    if _off(len(f_np), target) > CONTRACT_TOLERANCE and target < dense_n <= QUADRIC_MAX_FACES:
        check(cancel)
        hv, hf = fill_small_holes(clustered.dense_vertices.cpu(), clustered.dense_faces.cpu(), max_hole_perimeter,
                                  None, cancel)
        qv, qf = clean_mesh_for_export(hv, hf, fill_holes=False, target_faces=target, progress=progress,
                                       cancel=cancel, info=info.setdefault("quadric", {}))
        closer = len(qf) > 0 and _off(len(qf), target) < _off(len(f_np), target)
        if closer:
            q_counts = edge_counts(qf)
            counts = edge_counts(f_np) if counts is None else counts
            closer = _bad(q_counts) <= _bad(counts)
        info["quadric"]["kept"] = bool(closer)
        if closer:
            v_np, f_np, counts = qv, qf, q_counts
        lap("quadric")
    topology["output"] = edge_counts(f_np) if counts is None else counts
    lap("topology")
    return v_np, f_np
