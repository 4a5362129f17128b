"""Mesh clean-up before GLB export (spec §15.1-§15.2), with permissive tools only.

The chain used by ``to_glb`` is ``clean_mesh_for_export``:

1. ``simplify_mesh``: quadric decimation (fast-simplification, MIT) removing a fraction of faces.
2. ``face_visibility``: in how many of a set of orbit views each face owns at least one pixel,
   using our own rasteriser (``trellis.renderers.mesh_render.rasterize``). Many views are
   rasterised in one call, as tiles of one large image (an "atlas"), so that a GPU gets big
   kernels instead of thousands of small ones.
3. ``remove_invisible_faces``: an s-t minimum cut on the dual graph separates hidden faces
   (inner shells) from well-seen ones; ``scipy.sparse.csgraph.maximum_flow`` solves it.
4. ``fill_holes``: boundary loops up to a number of edges are closed by a fan around the loop's
   centroid, wound consistently with the faces around the hole.

Everything here is our own code; the reference's igraph (GPL) and pymeshfix (AGPL) are not used.

Arrays are numpy float32 vertices [V,3] and int64 faces [F,3]; torch tensors are accepted too.
``progress(stage, i, n)`` is called as work advances and ``cancel`` (a callable returning True to
stop) is checked between steps through ``trellis.utils.cancel.check``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from .common import Progress, _output
from .hidden_faces import remove_invisible_faces
from .holes import fill_holes as _fill_holes
from .simplify import BackgroundSimplify, simplify_mesh
from .visibility import face_visibility, visibility_settings


def clean_mesh_for_export(vertices, faces, simplify: float = 0.95, fill_holes: bool = True,
                          fill_holes_max_size: float = 0.04, device=None,
                          progress: Progress = None, cancel=None, simplified: Optional["BackgroundSimplify"] = None,
                          info: Optional[dict] = None, while_waiting: Optional[Callable[[], None]] = None,
                          **visibility_kwargs):
    """Spec §15.1-§15.2 in the reference's order: simplify, then (if ``fill_holes``) visibility,
    invisible-face removal (holes up to ``fill_holes_max_size``) and hole filling of loops with
    at most int(250 * sqrt(1 - simplify)) edges. ``visibility_kwargs`` go to
    ``face_visibility`` (num_views, resolution, radius, fov, near, far, pixel_budget); the
    defaults are the reference's 1000 views at 1024^2, ``num_views=FAST_VISIBILITY_VIEWS`` is the
    4x cheaper opt-in preset (module docstring: what it changes). ``simplified``: a
    ``BackgroundSimplify`` of these vertices/faces with the same ``simplify`` started earlier, whose
    result is used instead of simplifying here (the same arrays). ``while_waiting``: called
    over and over while the decimation's child processes run (``simplify_mesh``). ``info``, if a dict, receives the
    face counts after each step, the visibility views / resolution used and the seconds of each step
    (``info["seconds"]``: simplify, i.e. the wait for ``simplified``, visibility, remove_invisible,
    fill_holes).
    """
    import time

    record = info if info is not None else {}
    seconds = record.setdefault("seconds", {})
    clock = [time.perf_counter()]

    def lap(name):
        now = time.perf_counter()
        seconds[name] = round(now - clock[0], 3)
        clock[0] = now

    if simplified is not None:
        shape = tuple(getattr(faces, "shape", np.shape(faces)))   # torch (any device) or numpy
        n_faces = shape[0] if len(shape) == 2 else int(np.prod(shape)) // 3
        if simplified.reduction != float(simplify) or len(simplified.faces) != n_faces:
            raise ValueError("`simplified` was started for another mesh or another simplify value")
        v, f = simplified.result(progress=progress, cancel=cancel)
    else:
        v, f = simplify_mesh(vertices, faces, simplify, progress=progress, cancel=cancel, while_waiting=while_waiting)
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
        vis = face_visibility(v, f, device=device, progress=progress, cancel=cancel,
                              **visibility_kwargs)
        lap("visibility")
        v, f = remove_invisible_faces(v, f, vis, max_hole_size=fill_holes_max_size,
                                      progress=progress, cancel=cancel)
        lap("remove_invisible")
        record["visible_faces"] = int(len(f))
        max_edges = int(250 * math.sqrt(1 - max(simplify, 0.0)))
        v, f = _fill_holes(v, f, max_edges, progress=progress, cancel=cancel)
        lap("fill_holes")
    record["faces"] = int(len(f))
    return _output(v, f)
