"""UV unwrapping for texture baking (spec §15.3), bounded in time: ``unwrap_uv`` chooses the method.

* "geometric" (``geometric``): our charts cut along the geometry, flattened by LSCM and packed by the bitmap
  packer. ``auto`` tries it first on meshes it was measured on (``AUTO_GEOMETRIC_MAX_*``): there it uses more of the
  texture than xatlas, without single-triangle charts, in about the same time.
* "xatlas" (``xatlas``): xatlas in a child process, the mesh cut into pieces, killed past its budget; on a large
  mesh whose one atlas would run past the budget, in groups of pieces, several children at once (``xatlas_groups``).
* "grouped" (``grouped``): charts of faces facing one way, projected flat, packed on a skyline, no per-face Python:
  its time grows with the faces, it needs no budget; the fallback when the others fail or run out of time (half or
  more of the texture in use where the single-face charts of "charts" used a few per cent).
* "charts" (``axis_charts``): charts projected onto the axis planes and shelf-packed; only when asked for.

UV convention (everything in this package, as in OBJ and trimesh): u to the right, v UP, the texel of
(u, v) in a ``texture_size``-square image stored top row first is column u·S, row (1 − v)·S.
The measurements behind the choice: docs/benchmarks/export.md#uv-unwrap.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from ...core.callbacks import Cancelled, StepProgress, check
from ..arrays import to_numpy
from ..options import DEFAULT_TEXTURE_SIZE
from . import axis_charts, geometric, xatlas, xatlas_groups
from .grouped import grouped_layout
from . import in_child as in_child_module
from .stats import faces_with_texel, texel_use

__all__ = ["AUTO_GEOMETRIC_MAX_FACES", "AUTO_GEOMETRIC_MAX_CHARTS", "LOW_TEXEL_USE", "GROUPED_MIN_FACES_WITH_TEXEL",
           "xatlas_route", "unwrap_uv"]


# Below this share of faces holding a texel centre, the grouped layout is compared with the axis charts and the one
# giving more faces their own texels is kept.
GROUPED_MIN_FACES_WITH_TEXEL = 0.9
# "auto" tries the geometric layout before xatlas on meshes of up to this many faces: the sizes it was measured
# against xatlas on; larger ones keep xatlas until measured.
AUTO_GEOMETRIC_MAX_FACES = 40_000
# ... and with at most this many charts once flattened: each chart costs a packing placement, and a noisy mesh
# falls apart into hundreds of small charts where xatlas is much faster.
AUTO_GEOMETRIC_MAX_CHARTS = 300
# Texel use (share of the texture's texels inside a chart) under which a layout is reported as wasteful: less than
# half of the texture carries the surface.
LOW_TEXEL_USE = 0.5


def xatlas_route(num_faces: int, budget: float) -> Optional[str]:
    """How "auto" runs xatlas on ``num_faces`` faces within ``budget`` seconds: "whole" (one atlas; skipped, None,
    when estimated past two budgets), or "groups" (``xatlas_groups``) on a mesh of at least ``GROUP_MIN_FACES`` faces
    whose one atlas is estimated past the budget (the groups' time is predictable: skipped once estimated past one
    budget)."""
    whole = xatlas.xatlas_time_estimate(num_faces)
    if num_faces >= xatlas_groups.GROUP_MIN_FACES and whole > budget:
        return "groups" if xatlas_groups.group_time_estimate(num_faces) <= budget else None
    return "whole" if whole <= 2 * budget else None


def _is_cancel(e: BaseException) -> bool:
    return isinstance(e, Cancelled)


def unwrap_uv(vertices, faces, time_budget_s: float = 10.0, progress: StepProgress = None, cancel=None,
              *, texture_size: int = DEFAULT_TEXTURE_SIZE, padding: int = 2, method: str = "auto",
              verbose: bool = False, info: Optional[dict] = None, in_child: bool = False):
    """Parametrise a triangle mesh into the unit square.

    vertices [V,3], faces [F,3] (numpy or torch). Returns (vertices [V',3] float32, faces [F,3]
    int64, uvs [V',2] float32, vmapping [V'] int64): vertices are duplicated along chart seams and
    vmapping gives the input vertex of each output vertex; faces keep their order, UVs wind as they do
    (``winding``).

    method "auto": first "geometric" within ``time_budget_s`` (checked between its steps; on meshes of up to
    ``AUTO_GEOMETRIC_MAX_FACES`` faces; skipped when its estimate exceeds the budget; a budget of 0 goes at once to
    "grouped"; left for xatlas once it has more than ``AUTO_GEOMETRIC_MAX_CHARTS`` charts); past its budget,
    "grouped"; then (or at once, on larger meshes) xatlas within ``time_budget_s`` (skipped at once when its estimated
    time exceeds two budgets; in groups on a mesh of at least ``xatlas_groups.GROUP_MIN_FACES`` faces estimated
    past one budget, skipped when the groups' estimate exceeds it), else the "grouped" layout; "geometric" and
    "xatlas" (no fallback, errors raise; xatlas's budget still applies and raises TimeoutError); "grouped"; "charts".
    ``padding`` = margin between charts in texels of a ``texture_size`` texture.
    ``progress(done, total)`` is called with total 100; ``cancel()`` returning True raises ``Cancelled`` (the xatlas
    child is killed). If ``info`` is a dict, it receives "method" ("geometric", "xatlas", "grouped" or "charts"),
    "seconds", "texel_use" (``stats.texel_use`` at ``texture_size``; computed after "seconds")
    (and from the geometric layout its "phases" and "packings", ``geometric.geometric_layout``; from xatlas in groups
    "xatlas_groups", ``xatlas_groups.group_layout``'s record; from the grouped layout "grouped", its record).
    ``in_child``: the geometric layout runs in a warm child process (``in_child.layout_in_child``: the same result),
    so that work this process does meanwhile (GPU renders) and the layout do not share the GIL.
    """
    info = {} if info is None else info
    out = _unwrap(vertices, faces, time_budget_s, progress, cancel, texture_size, padding, method, verbose, info,
                  in_child)
    info["texel_use"] = round(texel_use(out[1], out[2], texture_size), 4)
    return out


def _unwrap(vertices, faces, time_budget_s, progress, cancel, texture_size, padding, method, verbose, info, in_child):
    start = time.monotonic()
    v, f = to_numpy(vertices, faces, np.float32)
    if method not in ("auto", "geometric", "xatlas", "charts", "grouped"):
        raise ValueError(f"unknown unwrap method {method!r}")
    check(cancel)
    budget = float(time_budget_s)
    # (skipped in "auto" when its estimate exceeds the budget: then xatlas in pieces, faster on
    # large meshes, gets the budget)
    if method == "geometric" or (method == "auto" and budget > 0
                                 and len(f) <= AUTO_GEOMETRIC_MAX_FACES
                                 and geometric.geometric_time_estimate(len(f)) <= budget):
        try:
            layout = in_child_module.layout_in_child if in_child else geometric.geometric_layout
            out = layout(v, f, texture_size=texture_size, padding=padding, progress=progress,
                         cancel=cancel, time_budget_s=budget if budget > 0 else None,
                         max_charts=AUTO_GEOMETRIC_MAX_CHARTS if method == "auto" else None, info=info)
            info.update(method="geometric", seconds=time.monotonic() - start)
            return out
        except Exception as e:  # any failure falls back (Cancelled does not)
            if method == "geometric" or _is_cancel(e):
                raise
            if isinstance(e, TimeoutError):
                method = "grouped"      # the budget is spent: the layout without a budget, not xatlas as well
            if verbose:
                print(f"[unwrap_uv] geometric charts failed ({e}); using the "
                      f"{'grouped layout' if method == 'grouped' else 'xatlas'}")
    if method in ("auto", "xatlas") and len(f) > 0:
        budget = float(time_budget_s)
        route = xatlas_route(len(f), budget) if method == "auto" else "whole"
        grouped, too_slow = route == "groups", route is None
        if budget > 0 and not too_slow:
            try:
                if grouped:
                    groups: dict = {}
                    out = xatlas_groups.group_layout(v, f, budget, texture_size, padding, progress, cancel,
                                                     info=groups)
                    info["xatlas_groups"] = groups
                else:
                    out = xatlas.xatlas_layout(v, f, budget, texture_size, padding, progress, cancel)
                info.update(method="xatlas", seconds=time.monotonic() - start)
                return out
            except Exception as e:  # any xatlas failure falls back (Cancelled does not)
                if method == "xatlas" or _is_cancel(e):
                    raise
                if verbose:
                    print(f"[unwrap_uv] xatlas failed ({e}); using the grouped layout")
        elif method == "xatlas":
            raise TimeoutError(f"xatlas estimated at {xatlas.xatlas_time_estimate(len(f)):.1f} s, budget {budget} s")
        elif verbose:
            print(f"[unwrap_uv] xatlas skipped (budget {budget} s, {len(f)} faces); using the grouped layout")
    if method != "charts":
        record: dict = {}
        out = grouped_layout(v, f, texture_size=texture_size, padding=padding, progress=progress,
                             cancel=cancel, info=record)
        share = record["faces_with_texel"] = faces_with_texel(out[1], out[2], texture_size)
        if method == "grouped" or share >= GROUPED_MIN_FACES_WITH_TEXEL:
            info.update(method="grouped", seconds=time.monotonic() - start, grouped=record)
            return out
        # A surface that shatters into single faces (a noisy one): the axis charts give more faces a texel there.
        charts = axis_charts.chart_layout(v, f, texture_size=texture_size, padding=padding, cancel=cancel)
        record["charts_faces_with_texel"] = faces_with_texel(charts[1], charts[2], texture_size)
        if record["charts_faces_with_texel"] <= share:
            info.update(method="grouped", seconds=time.monotonic() - start, grouped=record)
            return out
        info.update(method="charts", seconds=time.monotonic() - start, grouped=record)
        if progress is not None:
            progress(100, 100)
        return charts
    out = axis_charts.chart_layout(v, f, texture_size=texture_size, padding=padding, cancel=cancel)
    info.update(method="charts", seconds=time.monotonic() - start)
    if progress is not None:
        progress(100, 100)
    return out
