"""Spec §15.2: hidden-face removal — an s-t minimum cut on the dual graph separates hidden faces
(inner shells) from well-seen ones (``scipy.sparse.csgraph.maximum_flow``)."""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from ...core.callbacks import StageProgress, check as _check_cancel
from ..arrays import drop_unreferenced, output, report, to_numpy
from ..mesh_graph import components, dual_arcs, edges
from ..rows import row_norm

__all__ = ["DualGraph", "dual_graph", "remove_invisible_faces", "invisible_face_mask", "source_side",
           "source_side_whole_graph", "group_quantile"]


# Min-cut capacities are integers for scipy: every weight of the reference (edge length x 1000,
# terminal links 1 x 1000) is multiplied by this extra factor and rounded. Scaling all
# capacities by one constant does not move the minimum cut, so this only sets the rounding
# step (1/1.024e6 of a length unit) while keeping every arc far below scipy's int32 limit.
_CUT_RESOLUTION = 1024


def group_quantile(values, groups, n_groups, q):
    """Per-group quantile with linear interpolation (numpy's default), NaN for empty groups."""
    order = np.lexsort((values, groups))
    sv, sg = values[order], groups[order]
    count = np.bincount(sg, minlength=n_groups)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    out = np.full(n_groups, np.nan)
    ok = count > 0
    pos = q * (count[ok] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, count[ok] - 1)
    frac = pos - lo
    a, b = sv[start[ok] + lo], sv[start[ok] + hi]
    out[ok] = a + frac * (b - a)
    return out


class DualGraph(NamedTuple):
    """What the cut needs of a mesh before its visibility is known (``dual_graph``): its edges, the pairs of faces
    sharing one, the components they join and each pair's edge length."""
    edge_of_he: np.ndarray      # edge id per half-edge [3F]
    ends: np.ndarray            # edge endpoints [E, 2]
    edge_use: np.ndarray        # faces per edge [E]
    fa: np.ndarray              # face pairs sharing an edge (dual arcs) [A]
    fb: np.ndarray
    fe: np.ndarray              # the edge of each pair [A]
    n_comp: int
    comp: np.ndarray            # component per face [F]
    length: np.ndarray          # the shared edge's length per pair [A]


def dual_graph(vertices, faces) -> DualGraph:
    """The ``DualGraph`` of a mesh: made while its visibility is rendered (the export's clean-up does so in a
    thread), it leaves the cut only the work that needs the visibility."""
    v, f = to_numpy(vertices, faces)
    edge_of_he, ends, edge_use = edges(f, len(v))
    fa, fb, fe = dual_arcs(edge_of_he, len(f))
    n_comp, comp = components(len(f), fa, fb)
    length = row_norm(v[ends[fe, 0]] - v[ends[fe, 1]])
    return DualGraph(edge_of_he, ends, edge_use, fa, fb, fe, n_comp, comp, length)


def remove_invisible_faces(vertices, faces, visibility, max_hole_size: float = 0.04,
                           progress: StageProgress = None, cancel=None, graph: Optional[DualGraph] = None):
    """Cut away hidden parts (inner shells) by an s-t minimum cut on the dual graph (§15.2).

    * Per connected component (faces joined by shared edges), "outer" faces have visibility
      above min(max(q75, 0.25), 0.5), q75 = the component's 75th percentile (linear
      interpolation); "inner" faces have visibility exactly 0. Without inner faces nothing
      changes.
    * Dual graph: faces are nodes; every pair of faces sharing an edge is joined both ways with
      capacity = edge length x 1000; the source links to inner faces and outer faces link to the
      sink with capacity 1 x 1000. For scipy's integer max-flow every capacity is further
      multiplied by 1024 and rounded to the nearest integer (a common factor does not move the
      cut). The source side of the minimum cut is what the source reaches in the residual graph.
    * Each connected piece of the source side is removed only if its median visibility is
      <= 0.25 and every boundary loop its removal would open has area <= ``max_hole_size``,
      with area = 1/2 sum |(a - c) x (b - c)| over the loop's edges (a, b) and c the mean of
      the loop's edge midpoints. A "loop" is a connected set of newly opened edges (edges left
      with exactly one face after the piece is removed); loops are judged per piece.
    * Vertices no longer used are dropped.

    ``graph``: ``dual_graph(vertices, faces)`` made already (the same result).
    """
    v, f = to_numpy(vertices, faces)
    remove = invisible_face_mask(v, f, visibility, max_hole_size, progress=progress,
                                 cancel=cancel, graph=graph)
    return output(*drop_unreferenced(v, f[~remove]))


def invisible_face_mask(vertices, faces, visibility, max_hole_size: float = 0.04,
                        progress: StageProgress = None, cancel=None,
                        details: Optional[dict] = None, graph: Optional[DualGraph] = None) -> np.ndarray:
    """The faces ``remove_invisible_faces`` removes, as a bool mask [F] (same arguments).

    ``details``, if a dict, receives the counts of inner/outer/source-side faces and, per piece
    of the source side, its size, median visibility, largest opened loop area and the decision.
    """
    v, f = to_numpy(vertices, faces)
    vis = np.asarray(visibility.detach().cpu().numpy() if hasattr(visibility, "detach")
                     else visibility, dtype=np.float64).reshape(-1)
    if len(vis) != len(f):
        raise ValueError(f"visibility has {len(vis)} entries for {len(f)} faces")
    stage, steps = "remove_invisible", 4
    report(progress, stage, 0, steps)
    remove = np.zeros(len(f), dtype=bool)
    inner = vis == 0
    if len(f) == 0 or not inner.any():
        report(progress, stage, steps, steps)
        return remove
    _check_cancel(cancel)
    n_faces = len(f)

    if graph is None:
        graph = dual_graph(v, f)
    elif len(graph.comp) != n_faces or len(graph.edge_of_he) != 3 * n_faces:
        raise ValueError("the dual graph given is not this mesh's")
    edge_of_he, ends, edge_use, fa, fb, fe, n_comp, comp, length = graph
    q75 = group_quantile(vis, comp, n_comp, 0.75)
    threshold = np.minimum(np.maximum(q75, 0.25), 0.5)
    outer = vis > threshold[comp]
    report(progress, stage, 1, steps)
    _check_cancel(cancel)

    # the s-t minimum cut's arcs: edge length x 1000 in integer steps of 1 / _CUT_RESOLUTION
    arc_cap = np.rint(length * 1000.0 * _CUT_RESOLUTION)
    in_source = source_side(n_faces, fa, fb, arc_cap, comp, inner, outer)
    report(progress, stage, 2, steps)
    _check_cancel(cancel)

    if not in_source.any():
        report(progress, stage, steps, steps)
        return remove

    # Pieces = connected parts of the source side. Faces around one edge are pairwise adjacent in
    # the dual graph, so no edge touches two different pieces.
    both = in_source[fa] & in_source[fb]
    _, label_all = components(n_faces, fa[both], fb[both])
    src_faces = np.nonzero(in_source)[0]
    _, piece_of_src = np.unique(label_all[src_faces], return_inverse=True)
    piece = np.full(n_faces, -1, dtype=np.int64)
    piece[src_faces] = piece_of_src
    n_pieces = int(piece_of_src.max()) + 1
    median = group_quantile(vis[src_faces], piece_of_src, n_pieces, 0.5)
    report(progress, stage, 3, steps)
    _check_cancel(cancel)

    # Newly opened edges: some faces in the piece, exactly one face left outside it.
    he_piece = np.repeat(piece, 3)
    in_piece_he = he_piece >= 0
    n_edges = len(ends)
    inside = np.bincount(edge_of_he[in_piece_he], minlength=n_edges)
    edge_piece = np.full(n_edges, -1, dtype=np.int64)
    edge_piece[edge_of_he[in_piece_he]] = he_piece[in_piece_he]
    opened = np.nonzero((inside > 0) & (edge_use - inside == 1))[0]
    max_area = np.zeros(n_pieces)
    if len(opened):
        op_piece = edge_piece[opened]
        a_vert, b_vert = ends[opened, 0], ends[opened, 1]
        # Loops: connected sets of opened edges of one piece (nodes are (piece, vertex) pairs).
        node_key = np.concatenate([op_piece * len(v) + a_vert, op_piece * len(v) + b_vert])
        _, node = np.unique(node_key, return_inverse=True)
        n_nodes = int(node.max()) + 1
        m = len(opened)
        _, node_loop = components(n_nodes, node[:m], node[m:])
        loop = node_loop[node[:m]]
        n_loops = int(loop.max()) + 1
        pa, pb = v[a_vert], v[b_vert]
        mid = (pa + pb) / 2
        cnt = np.bincount(loop, minlength=n_loops).astype(np.float64)
        centre = np.stack([np.bincount(loop, mid[:, i], n_loops) for i in range(3)], -1)
        centre /= cnt[:, None]
        c = centre[loop]
        area_terms = 0.5 * np.linalg.norm(np.cross(pa - c, pb - c), axis=1)
        area = np.bincount(loop, area_terms, n_loops)
        loop_piece = np.zeros(n_loops, dtype=np.int64)
        loop_piece[loop] = op_piece
        np.maximum.at(max_area, loop_piece, area)
    loop_ok = max_area <= max_hole_size
    remove_piece = (median <= 0.25) & loop_ok
    if details is not None:
        details.update(inner=int(inner.sum()), outer=int(outer.sum()),
                       source_side=int(in_source.sum()),
                       piece_size=np.bincount(piece_of_src, minlength=n_pieces),
                       piece_median=median, piece_max_loop_area=max_area,
                       piece_removed=remove_piece)
    remove[src_faces] = remove_piece[piece_of_src]
    report(progress, stage, steps, steps)
    return remove


def source_side(n_faces, fa, fb, arc_cap, comp, inner, outer) -> np.ndarray:
    """Bool per face: on the source side of the minimum cut (what the source reaches in the residual graph of a
    maximum flow: the same set for every maximum flow) of the dual graph with arcs fa <-> fb of capacity
    ``arc_cap``, the source linked to ``inner`` faces and ``outer`` faces to the sink (capacity 1000 x _CUT_RESOLUTION).
    Components (``comp``) carry flow only where they hold faces of both kinds, so the flow is solved on those
    alone; elsewhere the source side is what the inner faces reach through arcs of non-zero capacity."""
    in_source = np.zeros(n_faces, dtype=bool)
    n_comp = int(comp.max()) + 1 if n_faces else 0
    mixed = (np.bincount(comp, inner, n_comp) > 0) & (np.bincount(comp, outer, n_comp) > 0)
    lone = ~mixed[comp]
    if lone.any():
        keep = (arc_cap > 0) & lone[fa]
        _, reach = components(n_faces, fa[keep], fb[keep])
        seeded = np.bincount(reach, inner & lone, n_faces) > 0
        in_source |= lone & seeded[reach]
    sel = ~lone
    if sel.any():
        in_source |= _flow_source_side(sel, fa, fb, arc_cap, inner, outer)
    return in_source


def source_side_whole_graph(n_faces, fa, fb, arc_cap, inner, outer) -> np.ndarray:
    """``source_side`` solved as one flow over every face: the plain form, for tests and benchmarks."""
    return _flow_source_side(np.ones(n_faces, dtype=bool), fa, fb, arc_cap, inner, outer)


def _flow_source_side(sel, fa, fb, arc_cap, inner, outer) -> np.ndarray:
    """Bool per face: the source side of the maximum flow over the faces ``sel`` (whole components)."""
    ids = np.nonzero(sel)[0]
    n = len(ids)
    local = np.full(len(sel), -1, dtype=np.int64)
    local[ids] = np.arange(n)
    arcs = sel[fa]                                   # both faces of an arc lie in one component
    a, b, cap_ab = local[fa[arcs]], local[fb[arcs]], arc_cap[arcs]
    source, sink = n, n + 1                          # nodes: the faces kept, renumbered, then the terminals
    terminal = 1000 * _CUT_RESOLUTION
    inner_idx = local[np.nonzero(inner & sel)[0]]
    outer_idx = local[np.nonzero(outer & sel)[0]]
    rows = np.concatenate([a, b, np.full(len(inner_idx), source), outer_idx])
    cols = np.concatenate([b, a, inner_idx, np.full(len(outer_idx), sink)])
    cap = np.concatenate([cap_ab, cap_ab, np.full(len(inner_idx) + len(outer_idx), terminal)])
    graph = sp.csr_array((cap, (rows, cols)), shape=(n + 2, n + 2))
    if graph.data.size and graph.data.max() >= 2 ** 30:  # residuals reach 2x capacity (int32)
        raise ValueError("mesh too large for the integer min-cut (edges longer than ~1000 units)")
    graph = sp.csr_array((graph.data.astype(np.int32), graph.indices, graph.indptr), shape=graph.shape)
    graph.sort_indices()
    flow = maximum_flow(graph, source, sink).flow
    residual = sp.csr_array(graph.astype(np.int64) - flow.astype(np.int64))
    residual.data = np.where(residual.data > 0, 1, 0).astype(np.int8)
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, source, directed=True, return_predecessors=False)
    out = np.zeros(len(sel), dtype=bool)
    out[ids[reached[reached < n]]] = True
    return out
