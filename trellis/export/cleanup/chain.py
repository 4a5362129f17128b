"""Mesh clean-up before the GLB export (spec §15.1-§15.2), with permissive tools only: ``clean_mesh_for_export``.

1. ``decimate.simplify_mesh``: quadric decimation (fast-simplification, MIT), to BUDGET_HEADROOM x the face
   budget (at least VISIBILITY_MIN_FACES).
2. ``visibility.face_visibility``: in how many orbit views each face owns a pixel (our rasteriser, many
   views per call).
3. ``hidden_faces.remove_invisible_faces``: an s-t minimum cut on the dual graph separates hidden faces
   (inner shells) from well-seen ones (the dual graph itself, ``hidden_faces.dual_graph``, is made in a thread
   while step 2 renders).
4. ``holes.fill_holes``: small boundary loops closed by the triangulation of their own vertices.
5. ``decimate.simplify_mesh`` again, down to the face budget (the faces in the file; ``down_to_budget``: more
   passes where the decimator stops short).

Everything here is our own code; the reference's igraph (GPL) and pymeshfix (AGPL) are not used.
Arrays are numpy float32 vertices [V,3] and int64 faces [F,3]; torch tensors are accepted too.
``progress(stage, i, n)`` is called as work advances and ``cancel`` (a callable returning True to
stop) is checked between steps.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from ...core.callbacks import StageProgress
from ..arrays import output, report
from ...core.concurrency import thread_pool
from .decimate import BackgroundSimplify, simplify_mesh
from .hidden_faces import dual_graph, remove_invisible_faces
from .holes import fill_holes as close_holes
from .visibility import face_visibility, visibility_settings

__all__ = ["BUDGET_HEADROOM", "VISIBILITY_MIN_FACES", "MORE_PASSES", "BUDGET_TOLERANCE", "face_budget", "first_reduction",
           "clean_mesh_for_export", "simplify_failed", "too_few", "refit", "down_to_budget"]

# The faces asked for are faces in the file: a decoder's mesh has an inner sheet (about half its faces) that
# the hidden-face removal deletes, so the chain first decimates to this many times the budget.
BUDGET_HEADROOM = 2.5
# ... and to no fewer faces than this before the hidden-face removal: the two sheets are a voxel or two apart, and a
# mesh decimated much further has its inner sheet poking through the outer one, seen and kept (then the decimator
# cannot take both sheets down to a small budget).
VISIBILITY_MIN_FACES = 40_000
# The decimator stops short of its target on some meshes (collapses it refuses on one pass become possible on the
# next): the last decimation is run again, at most this many more times, while the mesh is over the budget by
# more than BUDGET_TOLERANCE and a pass still removes faces.
MORE_PASSES = 3
BUDGET_TOLERANCE = 0.02


def face_budget(n_faces: int, simplify: float = 0.95, target_faces: Optional[int] = None) -> int:
    """Faces the exported mesh gets: ``target_faces`` if given, else ``(1 - simplify)`` of ``n_faces``
    (never more than ``n_faces``, at least 1)."""
    if target_faces is not None:
        if int(target_faces) < 1:
            raise ValueError(f"target_faces must be at least 1 (got {target_faces})")
        return min(int(n_faces), int(target_faces))
    if not 0 <= simplify < 1:
        raise ValueError(f"simplify must be in [0, 1) (got {simplify}); 0.95 keeps 5 % of the faces")
    return max(1, min(int(n_faces), int(round(n_faces * (1.0 - simplify)))))


def first_reduction(n_faces: int, simplify: float = 0.95, fill_holes: bool = True,
                    target_faces: Optional[int] = None) -> float:
    """The fraction of ``n_faces`` the chain's first decimation removes (what a ``BackgroundSimplify``
    started for this export must be given): down to the budget, or with hidden-face removal
    (``fill_holes``) down to BUDGET_HEADROOM times the budget, and not below VISIBILITY_MIN_FACES. 0: no
    decimation."""
    if n_faces == 0:
        return 0.0
    keep = face_budget(n_faces, simplify, target_faces)
    if fill_holes:
        keep = max(keep * BUDGET_HEADROOM, min(n_faces, VISIBILITY_MIN_FACES))
    return max(0.0, 1.0 - keep / n_faces)


def clean_mesh_for_export(vertices, faces, simplify: float = 0.95, fill_holes: bool = True,
                          fill_holes_max_size: float = 0.04, device=None,
                          progress: StageProgress = None, cancel=None, simplified: Optional["BackgroundSimplify"] = None,
                          info: Optional[dict] = None, while_waiting: Optional[Callable[[], None]] = None,
                          target_faces: Optional[int] = None, **visibility_kwargs):
    """Spec §15.1-§15.2 with the face budget kept: the result has ``face_budget(faces, simplify,
    target_faces)`` faces (``simplify`` 0.95: 5 % of the input's faces; ``target_faces``: that many),
    within the decimator's rounding. Without ``fill_holes``: one decimation to the budget. With it:
    decimation to BUDGET_HEADROOM x the budget (``first_reduction``), visibility, invisible-face
    removal (holes up to ``fill_holes_max_size``), hole filling of loops with at most
    int(250 * sqrt(kept fraction)) edges (the reference's rule, for the faces kept by the first
    decimation), then decimation of what is left down to the budget. ``visibility_kwargs`` go to
    ``face_visibility`` (num_views, resolution, radius, fov, near, far, pixel_budget); the
    defaults are the reference's 1000 views at 1024^2, ``num_views=FAST_VISIBILITY_VIEWS`` is the
    4x cheaper opt-in preset (visibility module: what it changes). ``simplified``: a
    ``BackgroundSimplify`` of these vertices/faces with ``first_reduction(...)`` started earlier,
    whose result is used instead of decimating here (the same arrays). ``while_waiting``: called
    over and over while the decimation's child processes run (``simplify_mesh``). ``info``, if a dict,
    receives the face counts after each step, the budget, the visibility views / resolution used,
    the seconds of each step (``info["seconds"]``: simplify, i.e. the wait for ``simplified``,
    visibility, remove_invisible, fill_holes, final_simplify) and, with ``simplified`` in child processes, its
    ``decimation_timeline`` ((seconds, event) from the children's start).
    """
    import time

    record = info if info is not None else {}
    seconds = record.setdefault("seconds", {})
    clock = [time.perf_counter()]

    def lap(name):
        now = time.perf_counter()
        seconds[name] = round(now - clock[0], 3)
        clock[0] = now

    shape = tuple(getattr(faces, "shape", np.shape(faces)))   # torch (any device) or numpy
    n_faces = shape[0] if len(shape) == 2 else int(np.prod(shape)) // 3
    budget = face_budget(n_faces, simplify, target_faces)
    reduction = first_reduction(n_faces, simplify, fill_holes, target_faces)
    record["budget_faces"] = budget
    if simplified is not None:
        if abs(simplified.reduction - reduction) > 1e-12 or simplified.n_faces != n_faces:
            raise ValueError("`simplified` was started for another mesh or another reduction "
                             "(start it with cleanup.first_reduction(...))")
        v, f = simplified.result(progress=progress, cancel=cancel, while_waiting=while_waiting)
        if simplified.decimation is not None:          # where the children's time went (benchmarks)
            record["decimation_timeline"] = [list(e) for e in simplified.decimation.timeline]
    else:
        v, f = simplify_mesh(vertices, faces, reduction, progress=progress, cancel=cancel, while_waiting=while_waiting)
    lap("simplify")
    record["simplified_faces"] = int(len(f))
    if fill_holes:
        if visibility_kwargs.get("num_views") is None or visibility_kwargs.get("resolution") is None:
            views, res = visibility_settings(v, f, device, radius=visibility_kwargs.get("radius", 2.0),
                                             fov=visibility_kwargs.get("fov", 40.0))
            chosen = {"num_views": views, "resolution": res}
            visibility_kwargs = {**visibility_kwargs, **{k: chosen[k] for k in chosen
                                                         if visibility_kwargs.get(k) is None}}
        record["visibility"] = {"views": int(visibility_kwargs["num_views"]),
                                "resolution": int(visibility_kwargs["resolution"])}
        # the cut's mesh-only work (edges, face pairs, components) in a thread while the views are rendered
        pool = thread_pool(1, "trellis-dual-graph")
        try:
            graph = pool.submit(dual_graph, v, f)
            vis = face_visibility(v, f, device=device, progress=progress, cancel=cancel,
                                  **visibility_kwargs)
            lap("visibility")
            v, f = remove_invisible_faces(v, f, vis, max_hole_size=fill_holes_max_size,
                                          progress=progress, cancel=cancel, graph=graph.result())
        finally:                # a cancel (or an error) does not wait for the graph: its thread ends by itself
            pool.shutdown(wait=False)
        lap("remove_invisible")
        record["visible_faces"] = int(len(f))
        max_edges = int(250 * math.sqrt(1 - reduction))
        v, f = close_holes(v, f, max_edges, progress=progress, cancel=cancel)
        lap("fill_holes")
        report(progress, "final_simplify", 0, 1)
        before = (v, f)
        v, f = down_to_budget(v, f, budget, cancel, record, passes=1 + MORE_PASSES)
        v, f = refit(before, (v, f), budget, cancel, record)
        report(progress, "final_simplify", 1, 1)
        lap("final_simplify")
    elif simplify_failed(len(f), budget):          # the one decimation stopped short of the budget
        v, f = down_to_budget(v, f, budget, cancel, record, passes=MORE_PASSES)
        lap("final_simplify")
    elif too_few(len(f), budget):
        v, f = refit((vertices, faces), (v, f), budget, cancel, record)
        lap("final_simplify")
    record["faces"] = int(len(f))
    return output(v, f)


def simplify_failed(faces: int, budget: int) -> bool:
    """Whether ``faces`` is over ``budget`` by more than BUDGET_TOLERANCE."""
    return faces > budget * (1.0 + BUDGET_TOLERANCE)


def too_few(faces: int, budget: int) -> bool:
    """Whether ``faces`` is under ``budget`` by more than BUDGET_TOLERANCE."""
    return faces < budget * (1.0 - BUDGET_TOLERANCE)


def refit(source, result, budget: int, cancel, record: dict, tries: int = 4):
    """``result`` of decimating ``source`` (vertices, faces) to ``budget`` came out under it by more than the
    tolerance (faces that collapsed onto each other, as a thin double sheet's do, are cancelled after the
    decimation): decimate ``source`` again, its target scaled by how far the last one landed, until one lands within
    the tolerance or after ``tries``; the closest to the budget of all wins. The tries go to ``record["decimation_refits"]``."""
    best = result
    got, target = len(result[1]), budget
    made = 0
    n_source = len(source[1])
    if not too_few(got, budget):
        return result
    while made < tries and (too_few(len(best[1]), budget) or simplify_failed(len(best[1]), budget)) and got > 0:
        target = min(n_source, max(1, int(round(target * budget / got))))
        v, f = simplify_mesh(source[0], source[1], 1.0 - target / n_source, cancel=cancel)
        made, got = made + 1, len(f)
        if abs(got - budget) < abs(len(best[1]) - budget):
            best = (v, f)
    if made:
        record["decimation_refits"] = made
    return best


def down_to_budget(v, f, budget: int, cancel, record: dict, passes: int):
    """Decimate (``v``, ``f``) to ``budget`` faces, in up to ``passes`` passes while it is over by more than
    BUDGET_TOLERANCE and a pass still removes faces; the passes made go to ``record["decimation_passes"]``."""
    made = 0
    # the first pass whenever over the budget (as before the extra passes), the others only past the tolerance
    while made < passes and (len(f) > budget if made == 0 else simplify_failed(len(f), budget)):
        before = len(f)
        v, f = simplify_mesh(v, f, 1.0 - budget / len(f), cancel=cancel)
        made += 1
        if len(f) >= before:
            break
    if made:
        record["decimation_passes"] = record.get("decimation_passes", 0) + made
    return v, f
