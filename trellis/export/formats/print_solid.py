"""A print-ready solid for the 3D-print destination: one watertight, outward-wound body standing on a flat base.

From z-up placed vertices (the pipeline's frame):

1. **welded**: a UV seam's copies of a point merged (``gltf.welded``);
2. **as it is, where it serves**: the connected part with the largest surface area, its open boundary loops closed
   by our hole filling (``cleanup.holes.fill_holes``), faces turned so that the enclosed volume is positive. It is
   kept when it is one closed body (``print_remesh.is_one_body``: no open or doubled edge, no two parts touching
   at a point) and the parts it drops leave at most ``DROP_OK`` of the surface out of the print (a decoder's inner
   sheet lies inside it and leaves nothing out; a floating crumb does);
3. **else rebuilt**: the whole surface remeshed from cells as one closed body (``print_remesh.remesh_solid``: its
   inside filled, gaps closed, the largest part kept), when that leaves out less of the surface;
4. **a flat base**: everything below the plane z = zmin + ``base_cut`` x height (moved a little off any vertex
   height: ``cut_plane``) is cut away, faces crossing it split with one new vertex per crossed edge exactly on
   it, and the section capped with triangles facing down (``print_cap.section_cap``); where that section is too
   small to stand on (``has_flat_base``), the plane goes up in steps of ``base_cut`` to ``BASE_CUT_MAX``. A part
   the cut leaves apart (it joined the rest only below the plane) is dropped as a floating one.

What was left out is measured, not assumed: ``area_dropped_share`` is the share of the surface's area farther than
a cell from the solid printed.
"""
from __future__ import annotations

import hashlib
import threading

import numpy as np

from ..arrays import drop_unreferenced
from ..cleanup.holes import boundary_cycles, boundary_edges, fill_holes
from ..mesh_graph import components
from .gltf import welded
from .print_cap import section_cap
from .print_remesh import CELLS, is_one_body, merged_close, remesh_solid, uncovered_share, well_spaced

__all__ = ["BASE_CUT", "BASE_CUT_MAX", "PLANE_GAP", "PLANE_REACH", "FLAT_TOL", "FLAT_SHARE", "DROP_OK",
           "REBUILT_FACES", "print_solid", "array_digest", "solid_of", "with_base", "closed_shell", "largest_body",
           "face_of_edge", "has_flat_base", "face_areas", "flat_bottom", "signed_volume", "count_loops",
           "is_watertight", "largest_shell", "cut_plane", "cut_below"]

BASE_CUT = 0.02       # share of the height cut off the bottom: enough to flatten a rounded underside
BASE_CUT_MAX = 0.1    # the most cut off where a smaller cut leaves too small a foot (``has_flat_base``)
PLANE_GAP = 1e-4      # wanted distance, as a share of the height, from the cut plane to any vertex
PLANE_REACH = 0.25    # how far the plane may move for it, as a share of the cut's height
FLAT_TOL = 1e-6       # has_flat_base: "at the minimum z", as a share of the height
FLAT_SHARE = 0.01     # has_flat_base: least base area, as a share of the footprint's bounding rectangle
DROP_OK = 0.01        # the surface the shape as it is may leave out (floating crumbs) before a rebuild is tried
REBUILT_FACES = 20_000     # a rebuilt solid keeps about the input's face count, or this many where that is fewer

_SOLIDS: dict = {}    # the last solid made, by its arguments' digest
_SOLID_MAKING = threading.Lock()


def print_solid(vertices, faces, *, base_cut: float = BASE_CUT, cells: int = CELLS, info: dict | None = None):
    """(vertices float64 [V,3], faces int64 [F,3]) of the print-ready solid of z-up ``vertices`` (module doc).

    ``base_cut`` in [0, 1): the share of the height cut off the bottom (0 keeps the shape whole, with no base
    made); ``cells``: the rebuild's cells along the largest extent. ``info``, when a dict, gets method ("as is" or
    "rebuilt"), parts_dropped, area_dropped_share (the surface left out of the print), holes_filled, watertight,
    bodies, base_area (the cap's area, in the input's units squared), base_z and cut_height (base_z minus the
    lowest point), and for a rebuild cell_size and close_cells.
    """
    if not 0.0 <= base_cut < 1.0:
        raise ValueError(f"base_cut must be in [0, 1), not {base_cut!r}")
    # The STL, the 3MF and the report each ask for the same solid: made once, handed out as copies.
    key = (array_digest(vertices), array_digest(faces), float(base_cut), int(cells))
    with _SOLID_MAKING:                   # a second caller for the same solid (the report's thread) waits for it
        made = _SOLIDS.get(key)
        if made is None:
            made = solid_of(vertices, faces, base_cut, int(cells))
            _SOLIDS.clear()
            _SOLIDS[key] = made
    v, f, done = made
    if info is not None:
        info.update(done)
    return v.copy(), f.copy()


def array_digest(a) -> str:
    """A digest of an array's shape, type and values (numpy or torch)."""
    a = np.ascontiguousarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a)
    return f"{a.shape}{a.dtype}" + hashlib.blake2b(a.view(np.uint8).reshape(-1), digest_size=16).hexdigest()


def solid_of(vertices, faces, base_cut: float, cells: int):
    """(vertices, faces, info) of ``print_solid``, made."""
    v, f = welded(vertices, faces)
    if len(f) == 0:
        raise ValueError("cannot make a solid of a mesh without faces")
    done = {"method": "as is"}
    sv, sf, done["parts_dropped"], done["holes_filled"] = closed_shell(v, f)
    sv, sf = merged_close(sv, sf)
    whole = is_one_body(sv, sf) and well_spaced(sv, sf)
    done["area_dropped_share"] = uncovered_share(sv, sf, v, f, cells) if done["parts_dropped"] else 0.0
    rebuilt = None

    def rebuild():
        info = {"method": "rebuilt", "holes_filled": 0}
        rv, rf = remesh_solid(v, f, cells, target_faces=max(len(f), REBUILT_FACES), info=info)
        return rv, rf, info

    if not whole or done["area_dropped_share"] > DROP_OK:
        rebuilt = rebuild()
        if not whole or rebuilt[2]["area_dropped_share"] < done["area_dropped_share"] - DROP_OK:
            sv, sf, done = rebuilt
    made = with_base(sv, sf, done, base_cut)
    if made is None and done["method"] == "as is":       # the cut left no sound body: the rebuilt one instead
        made = with_base(*(rebuilt or rebuild()), base_cut)
    if made is None:
        raise ValueError("could not make one closed body of this shape to print (its cut base left it open or "
                         "with faces too thin for the file)")
    return made


def with_base(v, f, done: dict, base_cut: float):
    """(vertices, faces, info) of the closed shell (``v``, ``f``) cut flat at its base (step 4 of the module doc),
    ``done`` completed with the solid's facts; None where the result is not one closed body whose vertices and
    faces keep ``print_remesh.SEPARATION`` apart."""
    done = dict(done)
    zmin, zmax = float(v[:, 2].min()), float(v[:, 2].max())
    height = zmax - zmin
    if base_cut > 0 and height > 0:
        # Higher, up to BASE_CUT_MAX, where the section is too small a foot to stand on (a narrow underside);
        # where none is large enough, the lowest cut; only cuts that leave a sound body count.
        tried = []
        for cut in [base_cut] + [c for c in np.arange(2, 6) * base_cut if c <= max(BASE_CUT_MAX, base_cut)]:
            z = cut_plane(v[:, 2], zmin + cut * height, PLANE_GAP * height, PLANE_REACH * base_cut * height)
            made = (z, *largest_body(*cut_below(v, f, z)))
            if not (is_one_body(made[1], made[2]) and well_spaced(made[1], made[2])):
                continue
            tried.append(made)
            if has_flat_base(made[1], made[2]):
                break
        else:
            if not tried:
                return None
            tried.append(tried[0])
        base_z, v, f, n_cap, cut_off, share = tried[-1]
        if cut_off:
            done["parts_dropped"] += cut_off
            done["area_dropped_share"] += (1.0 - done["area_dropped_share"]) * share
        base_area = float(face_areas(v, f[len(f) - n_cap:]).sum())
    else:
        base_z = zmin
        base_area = float(face_areas(v, f)[flat_bottom(v, f, FLAT_TOL * height)].sum())
        if not (is_one_body(v, f) and well_spaced(v, f)):
            return None
    done.update(watertight=is_watertight(v, f), bodies=1, base_area=base_area, base_z=float(base_z),
                cut_height=float(base_z - zmin))
    return v, f, done


def closed_shell(v, f):
    """(vertices, faces, parts dropped, holes filled) of the welded shape's largest part, its holes closed and its
    faces wound outward (the shape as it is, step 2 of the module doc)."""
    v, f, parts_dropped, _ = largest_shell(v, f)
    holes_filled = count_loops(f, len(v))
    if holes_filled:
        filled_v, f = fill_holes(v, f, max_hole_edges=len(v))
        # fill_holes hands back float32 positions; ours come first, unchanged, so they stay float64.
        v = np.concatenate([v, np.asarray(filled_v[len(v):], dtype=np.float64)])
        holes_filled -= count_loops(f, len(v))
    if signed_volume(v, f) < 0:
        f = f[:, ::-1].copy()
    return v, f, parts_dropped, holes_filled


def largest_body(v, f, n_cap: int):
    """(vertices, faces, cap faces among the last, bodies dropped, their share of the area above the cut) of the
    body of the cut solid (faces joined across edges) with the largest volume: a cut through a part that joined
    the others only below it leaves that part apart, to be dropped as a floating one is."""
    from ..mesh_graph import edges

    he = edges(f, len(v))[0].reshape(-1, 3)
    count, label = components(len(f), np.repeat(np.arange(len(f)), 3), face_of_edge(he))
    if count == 1:
        return v, f, n_cap, 0, 0.0
    vol = np.bincount(label, np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])), minlength=count)
    keep = label == int(np.argmax(vol))
    side = np.arange(len(f)) < len(f) - n_cap
    area = face_areas(v, f)
    share = float(area[side & ~keep].sum() / area[side].sum())
    out_v, out_f = drop_unreferenced(v, f[keep])
    return out_v, out_f, int(np.count_nonzero(keep & ~side)), count - 1, share


def face_of_edge(he):
    """[3F] for each half-edge (of ``edges``' ids [F,3]), one face that uses its edge: faces linked through it."""
    first = np.full(int(he.max()) + 1, -1, dtype=np.int64)
    first[he.reshape(-1)[::-1]] = np.repeat(np.arange(len(he)), 3)[::-1]
    return first[he.reshape(-1)]


def has_flat_base(vertices, faces, tol: float = FLAT_TOL, min_share: float = FLAT_SHARE) -> bool:
    """Whether the shape stands on a flat base: faces at the lowest z (within ``tol`` x its height) that face
    down, with an area above ``min_share`` of its footprint (the x-y bounding rectangle)."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        return False
    low, high = v.min(0), v.max(0)
    base = face_areas(v, f)[flat_bottom(v, f, tol * (high[2] - low[2]))].sum()
    footprint = (high[0] - low[0]) * (high[1] - low[1])
    return bool(base > 0 and base > min_share * footprint)


# ------------------------------------------------------------------------------------------ the shell

def face_areas(v, f):
    """Area of each face [F]."""
    return 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)


def flat_bottom(v, f, band):
    """Faces [F] bool: all three corners within ``band`` of the lowest z, facing down."""
    z = v[:, 2]
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    down = n[:, 2] < -(1.0 - 1e-6) * np.linalg.norm(n, axis=1)
    return (z[f] <= z.min() + band).all(1) & down


def signed_volume(v, f) -> float:
    """Volume enclosed by the faces, positive when they wind outward (divergence theorem)."""
    return float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0)


def count_loops(f, n_vertices) -> int:
    """Number of closed boundary loops of the faces."""
    bnd = boundary_edges(f, n_vertices)
    if len(bnd) == 0:
        return 0
    cycle = boundary_cycles(bnd, n_vertices)[1]
    return len(np.unique(cycle[cycle >= 0]))


def is_watertight(v, f) -> bool:
    """trimesh's verdict: every edge used by exactly two faces, wound consistently."""
    import trimesh
    mesh = trimesh.Trimesh(vertices=v, faces=f, process=False)
    return bool(mesh.is_watertight and mesh.is_winding_consistent)


def largest_shell(v, f):
    """(vertices, faces, parts dropped, their share of the area) of the connected part (faces sharing a
    vertex) with the largest surface area."""
    n_parts, label = components(len(v), np.concatenate([f[:, 0], f[:, 1]]), np.concatenate([f[:, 1], f[:, 2]]))
    face_label = label[f[:, 0]]
    area = np.bincount(face_label, face_areas(v, f), minlength=n_parts)
    used = np.unique(face_label)
    keep = int(used[np.argmax(area[used])])
    total = float(area.sum())
    share = float((total - area[keep]) / total) if total > 0 else 0.0
    v, f = drop_unreferenced(v, f[face_label == keep])
    return v, f, len(used) - 1, share


# ------------------------------------------------------------------------------------------ the cut

def cut_plane(z, target: float, gap: float, reach: float) -> float:
    """The height nearest ``target``, within ``reach`` of it, at least ``gap`` from every vertex height ``z`` (the
    rim's new vertices then keep apart from the old ones in a float32 STL and in a slicer's merge); where no such
    height is in reach, the one in reach farthest from every vertex. Never on a vertex height."""
    zs = np.unique(z)
    lo, hi = zs[:-1], zs[1:]
    nearest = np.clip(target, lo + gap, hi - gap)
    ok = (hi - lo >= 2 * gap) & (np.abs(nearest - target) <= reach)
    if ok.any():
        cand = nearest[ok]
        return float(cand[np.argmin(np.abs(cand - target))])
    meets = (hi > target - reach) & (lo < target + reach)
    lo, hi = lo[meets], hi[meets]
    cand = np.clip((lo + hi) / 2, target - reach, target + reach)
    clear = np.minimum(cand - lo, hi - cand)
    best = np.nonzero(clear == clear.max())[0]
    return float(cand[best[np.argmin(np.abs(cand[best] - target))]])


def cut_below(v, f, z0: float):
    """(vertices, faces, number of cap faces: the last ones) of the closed shell cut at z = ``z0`` (no vertex
    on it): the part above kept, crossing faces split, the section capped facing down."""
    below = v[:, 2] < z0
    n_below = below[f].sum(1)
    roll = np.arange(3)
    one = f[n_below == 1]
    one = one[np.arange(len(one))[:, None], (np.argmax(below[one], 1)[:, None] + roll) % 3]    # a below
    two = f[n_below == 2]
    two = two[np.arange(len(two))[:, None], (np.argmin(below[two], 1)[:, None] + roll) % 3]    # a above
    # One new vertex per crossed edge, computed from its lower-numbered end so both faces get the same point.
    ends = np.concatenate([one[:, [0, 1]], one[:, [2, 0]], two[:, [0, 1]], two[:, [2, 0]]])
    key = ends.min(1) * np.int64(len(v)) + ends.max(1)
    uniq, inv = np.unique(key, return_inverse=True)
    u, w = uniq // len(v), uniq % len(v)
    t = (z0 - v[u, 2]) / (v[w, 2] - v[u, 2])
    points = v[u] + t[:, None] * (v[w] - v[u])
    points[:, 2] = z0                                   # exactly on the plane: the cap is flat
    ids = len(v) + inv
    n1 = len(one)
    p1, q1 = ids[:n1], ids[n1:2 * n1]                    # on a-b and c-a of the faces with one corner below
    p2, q2 = ids[2 * n1:2 * n1 + len(two)], ids[2 * n1 + len(two):]
    allv = np.concatenate([v, points])
    b, c = one[:, 1], one[:, 2]
    # The kept quad p, b, c, q split along its shorter diagonal.
    short = (np.linalg.norm(allv[p1] - allv[c], axis=1) <= np.linalg.norm(allv[b] - allv[q1], axis=1))[:, None]
    quad = np.concatenate([np.where(short, np.stack([p1, b, c], 1), np.stack([p1, b, q1], 1)),
                           np.where(short, np.stack([p1, c, q1], 1), np.stack([b, c, q1], 1))])
    kept = np.concatenate([f[n_below == 0], quad, np.stack([two[:, 0], p2, q2], 1)])
    # Rim edges run q -> p (one below) and p -> q (two below) in the kept faces; the cap runs them backwards.
    cap_edges = np.concatenate([np.stack([p1, q1], 1), np.stack([q2, p2], 1)]) - len(v)
    flat = np.stack([points[:, 0], -points[:, 1]], 1)    # mirrored: a cap outline turns counter-clockwise
    cap = section_cap(flat, cap_edges) + len(v)
    out_v, out_f = drop_unreferenced(allv, np.concatenate([kept, cap]).astype(np.int64))
    return out_v, out_f, len(cap)
