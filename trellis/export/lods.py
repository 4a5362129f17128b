"""Levels of detail that share the export's texture: ``lod_meshes(textured, shares)``.

A game engine swaps LOD1, LOD2 ... for the full mesh at a distance, all with the same material, so every LOD must
keep the full mesh's UV layout. This is edge-collapse decimation (Garland & Heckbert's quadric error metric on
positions) run after the UV layout, by half-edge collapses: the survivor of a collapse keeps its exact position and
UV, so every LOD vertex is a vertex of the full mesh, (position, uv) pair included, and no UV is ever interpolated.

The UV seams stay closed. The mesh is seen welded (one vertex per position) with, per face corner, the UV copy it
uses; an edge is a seam when its two faces use different copies at one of its ends, and an open-boundary edge
counts as one. A vertex on no seam edge (one copy) may collapse onto any neighbour; a vertex on exactly two seam
edges may only slide along one of them onto its other end, each copy onto the copy of its side; every other vertex
(seam corners, where seams meet or end, and vertices of non-manifold edges) stays. Seam and boundary edges add
the plane quadrics of Garland & Heckbert's border constraint, so the seams keep their course.

A collapse is refused when it would break the link condition (the edge's ends may share only the one or two
vertices opposite it), turn a face's normal by more than ``acos(MIN_NORMAL_DOT)`` or turn it away from the full
mesh's vertex normals at its corners (small turns add up), flip a UV triangle, make a face of no area or a needle
(quality below ``MIN_QUALITY``), duplicate a face, or leave a UV copy without faces (a chart would lose a corner).
The LODs are made one after the other from the same run (LOD2 is a coarsening of LOD1). Where no legal collapse is
left (every chart keeps its corners) above a LOD's target, that LOD is refused (``lod_targets.LodTargetError``).
"""
from __future__ import annotations

import heapq
import time

import numpy as np

from ..core.callbacks import check
from .lod_targets import LodRefusal, LodTargetError, meets_target
from .tangents import corner_sums
from .textured import TexturedMesh

__all__ = ["MIN_NORMAL_DOT", "MIN_QUALITY", "SEAM_WEIGHT", "SeamDecimator", "lod_meshes"]

# Weight of a seam or boundary edge's constraint planes, times the edge's squared length (a face's plane counts its
# area); measured on the tests' shapes, 4 and 16 kept the seams straighter but the surface further off at 6 %.
SEAM_WEIGHT = 1.0
# A collapse may turn a face's normal by at most acos(0.2) = 78 degrees.
MIN_NORMAL_DOT = 0.2
# Triangle quality (2 sqrt(3) |cross| / sum of squared edges: 1 for an equilateral one) a collapse may not go below.
MIN_QUALITY = 0.2
# The cancel callback is asked once per this many heap pops.
CANCEL_EVERY = 256
# Faces of less than this share of the squared bounding-box diagonal count as of no area.
AREA_EPS = 1e-12


def lod_meshes(textured: TexturedMesh, shares=(0.25, 0.0625), cancel=None) -> list:
    """One ``TexturedMesh`` per share of ``textured``'s faces, in the order given (each share in (0, 1]).

    Every LOD uses ``textured``'s texture and normal map objects and its UV layout (each LOD vertex is a vertex of
    ``textured``, position and UV exactly); its ``info`` holds "lod" (the share), "target" (the face count asked
    for), "faces" (reached: within ``LOD_TOLERANCE`` of the target), "source_faces" and "seconds" (this LOD's share
    of the work), plus the source's "normal_map" entry (the crease angle its map was baked for). Each level is made
    from the one above (one decimation, on the pieces welded where they share a position); where no legal collapse
    is left above a level's target, that level and those below it are refused: ``LodTargetError`` (``lod_targets``)
    says which, with the levels made.
    ``cancel`` (``core.callbacks.check``) is asked per LOD and every ``CANCEL_EVERY`` steps; ``Cancelled`` ends the
    call.
    """
    shares = [float(s) for s in shares]
    if any(not 0.0 < s <= 1.0 for s in shares):
        raise ValueError(f"every LOD share must be in (0, 1], got {shares}")
    check(cancel)
    vertices = np.asarray(textured.vertices, dtype=np.float32).reshape(-1, 3)
    faces = np.asarray(textured.faces, dtype=np.int64).reshape(-1, 3)
    uvs = np.asarray(textured.uvs, dtype=np.float32).reshape(-1, 2)
    started = time.perf_counter()
    decimator = SeamDecimator(vertices, faces, uvs)
    done, refused = {}, []
    for share in sorted(set(shares), reverse=True):
        check(cancel)
        target = min(len(faces), max(1, round(share * len(faces))))
        if refused:                 # below a level out of reach: the decimation stopped already
            refused.append(LodRefusal(share, target, refused[-1].floor))
            continue
        decimator.run(target, cancel)
        keep, f = decimator.result()
        if not meets_target(len(f), target):
            refused.append(LodRefusal(share, target, len(f)))
            continue
        now = time.perf_counter()
        info = {"lod": share, "target": target, "faces": len(f), "source_faces": len(faces),
                "seconds": round(now - started, 4)}
        started = now
        if "normal_map" in textured.info:
            info["normal_map"] = dict(textured.info["normal_map"])
        lod = TexturedMesh(np.ascontiguousarray(vertices[keep]), f, np.ascontiguousarray(uvs[keep]),
                           textured.texture, info, textured.normal_texture)
        done[share] = lod.share_texture(textured) if textured.texture is not None else lod     # geometry only: none
    if refused:
        raise LodTargetError([done.get(s) for s in shares], refused, shares)
    return [done[s] for s in shares]


def weld_ids(vertices: np.ndarray, uvs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions float64 [n,3], welded id of each vertex [V], the first vertex with its position and UV [V]):
    equal positions share one id (-0.0 == 0.0), and copies that agree on the UV too are one corner, not a seam."""
    p, welded = np.unique(vertices.astype(np.float64) + 0.0, axis=0, return_inverse=True)
    welded = welded.reshape(-1)
    key = np.concatenate([welded[:, None].astype(np.float64), uvs.astype(np.float64)], 1)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    return p, welded, first[inverse.reshape(-1)]


def plane_quadrics(normals: np.ndarray, points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[k,10] upper triangles of w * [n; d][n; d]^T for the planes n.x + d = 0 (n unit) through ``points``."""
    d = -np.einsum("ij,ij->i", normals, points)
    a, b, c = normals.T
    q = np.stack([a * a, a * b, a * c, a * d, b * b, b * c, b * d, c * c, c * d, d * d], 1)
    return q * weights[:, None]


def quadric_cost(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The quadrics ``q`` [k,10] at points ``p`` [k,3] (the summed squared distances to their planes)."""
    x, y, z = p.T
    return ((q[:, 0] * x + 2 * (q[:, 1] * y + q[:, 2] * z + q[:, 3])) * x
            + (q[:, 4] * y + 2 * (q[:, 5] * z + q[:, 6])) * y + (q[:, 7] * z + 2 * q[:, 8]) * z + q[:, 9])


def edge_table(fw: np.ndarray, fs: np.ndarray):
    """The undirected welded edges: (ends [E,2], seam [E] bool, non-manifold [E] bool, face of each half-edge
    [3F], edge of each half-edge [3F]). A seam edge has one face, or two using different UV copies at one of its
    ends; a non-manifold edge has more than two faces (and counts as no seam: its vertices stay anyway)."""
    if len(fw) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros((0, 2), dtype=np.int64), empty.astype(bool), empty.astype(bool), empty, empty
    a, b = fw.reshape(-1), fw[:, [1, 2, 0]].reshape(-1)
    sa, sb = fs.reshape(-1), fs[:, [1, 2, 0]].reshape(-1)
    low, high = np.minimum(a, b), np.maximum(a, b)
    swap = a > b
    copy_low, copy_high = np.where(swap, sb, sa), np.where(swap, sa, sb)
    key = low * (int(fw.max()) + 1) + high
    _, first, edge, count = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
    edge = edge.reshape(-1)
    ends = np.stack([low[first], high[first]], 1)
    # Each half-edge against its edge's first one: any difference in the copies makes the edge a seam.
    differs = (copy_low != copy_low[first][edge]) | (copy_high != copy_high[first][edge])
    seam = (count == 1) | (np.bincount(edge, weights=differs, minlength=len(count)) > 0)
    face = np.repeat(np.arange(len(fw), dtype=np.int64), 3)
    return ends, seam & (count <= 2), count > 2, face, edge


def vertex_kinds(fw: np.ndarray, n: int, ends, seam, nonmanifold) -> np.ndarray:
    """[n] per welded vertex: 0 on no seam edge, 1 on exactly two (inside a seam path or an open boundary), -1 for
    a vertex that stays (seam corners and ends, vertices of non-manifold edges or of several fans)."""
    seams_at = np.bincount(ends[seam].reshape(-1), minlength=n)
    locked = several_fans(fw, n) | ((seams_at != 0) & (seams_at != 2))
    locked[ends[nonmanifold].reshape(-1)] = True
    return np.where(locked, -1, np.minimum(seams_at, 1))


def vertex_normals(p: np.ndarray, fw: np.ndarray) -> np.ndarray:
    """[n,3] unit area-weighted normals of the welded vertices (zero where a vertex has no area around it)."""
    cross = np.cross(p[fw[:, 1]] - p[fw[:, 0]], p[fw[:, 2]] - p[fw[:, 0]])
    n = corner_sums(fw, cross, None, len(p))
    return n / np.maximum(np.linalg.norm(n, axis=1), 1e-300)[:, None]


def several_fans(fw: np.ndarray, n: int) -> np.ndarray:
    """[n] bool: vertices whose faces form more than one fan around them (two cones touching at a point), which a
    collapse would fuse; found as the components of the face corners linked across their shared edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(fw) == 0:
        return np.zeros(n, dtype=bool)
    corner = np.arange(3 * len(fw)).reshape(-1, 3)
    a, b = fw.reshape(-1), fw[:, [1, 2, 0]].reshape(-1)
    ca, cb = corner.reshape(-1), corner[:, [1, 2, 0]].reshape(-1)
    key = np.minimum(a, b) * (int(fw.max()) + 1) + np.maximum(a, b)
    order = np.argsort(key, kind="stable")
    k = key[order]
    pair = np.nonzero(k[1:] == k[:-1])[0]
    h1, h2 = order[pair], order[pair + 1]
    # Link each end's corner in one face with the same vertex's corner in the other.
    same = a[h1] == a[h2]
    src = np.concatenate([ca[h1], cb[h1]])
    dst = np.concatenate([np.where(same, ca[h2], cb[h2]), np.where(same, cb[h2], ca[h2])])
    graph = coo_matrix((np.ones(len(src)), (src, dst)), shape=(3 * len(fw), 3 * len(fw)))
    _, label = connected_components(graph, directed=False)
    fans = np.unique(np.stack([fw.reshape(-1), label], 1), axis=0)[:, 0]
    return np.bincount(fans, minlength=n) > 1


class SeamDecimator:
    """Half-edge collapses on a UV-split mesh, seams kept; ``run(target)`` goes on from where the last run ended."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray):
        p, welded, corner = weld_ids(vertices, uvs)
        centre = (p.min(0) + p.max(0)) / 2 if len(p) else np.zeros(3)
        p = p - centre                                     # quadrics are better conditioned about the origin
        fs = corner[faces]                                 # the faces on their UV copies ...
        fw = welded[fs]                                    # ... and on the welded vertices
        keep = (fw[:, 0] != fw[:, 1]) & (fw[:, 1] != fw[:, 2]) & (fw[:, 2] != fw[:, 0])
        fs, fw = fs[keep], fw[keep]
        diag2 = float(np.sum((p.max(0) - p.min(0)) ** 2)) if len(p) else 1.0
        self.area_eps2 = (AREA_EPS * diag2) ** 2
        table = edge_table(fw, fs)
        # Collapses keep the seams' graph (a path loses inner vertices, corners stay), so the kinds hold throughout.
        kind = vertex_kinds(fw, len(p), *table[:3])
        q = self.initial_quadrics(p, fw, table)
        self.N = vertex_normals(p, fw).tolist()
        self.faces_left = len(fw)
        self.P = [tuple(x) for x in p.tolist()]
        self.UV = [tuple(x) for x in uvs.astype(np.float64).tolist()]
        self.Q = q.tolist()
        self.E = quadric_cost(q, p).tolist()
        self.fw = fw.tolist()
        self.fs = fs.tolist()
        self.face_alive = [True] * len(fw)
        self.version = [0] * len(p)
        self.kind = kind.tolist()
        self.copy_faces = np.bincount(fs.reshape(-1), minlength=len(vertices)).tolist()
        self.vf = [set() for _ in range(len(p))]
        for i, tri in enumerate(self.fw):
            for w in tri:
                self.vf[w].add(i)
        self.blocked = {}                 # u -> the v of collapses u -> v refused for their geometry, to retry
        self.heap = self.initial_heap(p, q, table, kind)

    @staticmethod
    def initial_quadrics(p, fw, table) -> np.ndarray:
        """Per welded vertex: its faces' planes weighted by area, plus the seam and boundary constraint planes."""
        a, b, c = p[fw[:, 0]], p[fw[:, 1]], p[fw[:, 2]]
        cross = np.cross(b - a, c - a)
        twice_area = np.linalg.norm(cross, axis=1)
        normal = cross / np.maximum(twice_area, 1e-300)[:, None]
        face_q = plane_quadrics(normal, a, twice_area / 2)
        q = corner_sums(fw, face_q, None, len(p))
        ends, seam, _, face, edge = table
        side = seam[edge]
        # Per seam side: the plane through the edge, perpendicular to that side's face.
        e0, e1 = ends[edge[side], 0], ends[edge[side], 1]
        along = p[e1] - p[e0]
        length2 = np.sum(along * along, axis=1)
        perp = np.cross(along, normal[face[side]])
        norm = np.linalg.norm(perp, axis=1)
        ok = norm > 1e-300
        seam_q = plane_quadrics(perp[ok] / norm[ok, None], p[e0[ok]], SEAM_WEIGHT * length2[ok])
        for ends_k in (e0[ok], e1[ok]):
            np.add.at(q, ends_k, seam_q)
        return q

    @staticmethod
    def initial_heap(p, q, table, kind) -> list:
        """Every directed edge a vertex may collapse along by the seam rules, with its cost."""
        ends, seam = table[:2]
        u = np.concatenate([ends[:, 0], ends[:, 1]])
        v = np.concatenate([ends[:, 1], ends[:, 0]])
        on_seam = np.concatenate([seam, seam])
        free = ((kind[u] == 0) & ~on_seam) | ((kind[u] == 1) & on_seam)
        u, v = u[free], v[free]
        cost = quadric_cost(q[u], p[v]) + quadric_cost(q[v], p[v])
        zeros = [0] * len(u)
        heap = list(zip(cost.tolist(), u.tolist(), v.tolist(), zeros, zeros))
        heapq.heapify(heap)
        return heap

    @staticmethod
    def at(q, p) -> float:
        """One quadric (a list of 10) at one point: ``quadric_cost`` without numpy's per-call overhead."""
        x, y, z = p
        return ((q[0] * x + 2 * (q[1] * y + q[2] * z + q[3])) * x + (q[4] * y + 2 * (q[5] * z + q[6])) * y
                + (q[7] * z + 2 * q[8]) * z + q[9])

    def push(self, u: int, v: int) -> None:
        """The collapse u -> v onto the heap, costing u's and v's planes at v, where it leaves them."""
        cost = self.at(self.Q[u], self.P[v]) + self.E[v]
        heapq.heappush(self.heap, (cost, u, v, self.version[u], self.version[v]))

    def run(self, target: int, cancel=None) -> None:
        """Collapse the cheapest legal edges until at most ``target`` faces are left or none is legal."""
        heap, version = self.heap, self.version
        pops = collapses = 0
        progress_at_refill = None
        while self.faces_left > target:
            if not heap:
                # Collapses refused earlier may have become legal since; try them all once more.
                if not self.blocked or progress_at_refill == collapses:
                    break
                progress_at_refill = collapses
                blocked, self.blocked = self.blocked, {}
                for u, targets in blocked.items():
                    for v in targets:
                        if version[u] >= 0 and version[v] >= 0:
                            self.push(u, v)
                continue
            pops += 1
            if pops % CANCEL_EVERY == 0:
                check(cancel)
            _, u, v, eu, ev = heapq.heappop(heap)
            if version[u] != eu or version[v] != ev:
                continue
            plan = self.plan(u, v)
            if plan is None:
                continue
            if plan is False:
                self.blocked.setdefault(u, set()).add(v)
                continue
            self.collapse(u, v, *plan)
            collapses += 1

    def fan(self, u: int):
        """(edges: neighbour -> [(copy of u, copy of neighbour)] per face on the edge, copies of u used)."""
        edges = {}
        copies = set()
        fw, fs = self.fw, self.fs
        for f in self.vf[u]:
            a, b, c = fw[f]
            sa, sb, sc = fs[f]
            if a == u:
                cu, w1, c1, w2, c2 = sa, b, sb, c, sc
            elif b == u:
                cu, w1, c1, w2, c2 = sb, c, sc, a, sa
            else:
                cu, w1, c1, w2, c2 = sc, a, sa, b, sb
            copies.add(cu)
            edges.setdefault(w1, []).append((cu, c1))
            edges.setdefault(w2, []).append((cu, c2))
        return edges, copies

    def plan(self, u: int, v: int):
        """(faces removed, copy map) of the collapse u -> v; None when the seam rules forbid it for good (until
        u's neighbourhood changes), False when its geometry forbids it now."""
        if self.kind[u] < 0:
            return None
        edges, copies = self.fan(u)
        on_edge = edges.get(v)
        if on_edge is None:
            return None
        seams = []
        for w, pairs in edges.items():
            if len(pairs) > 2:
                return None
            if len(pairs) == 1 or pairs[0] != pairs[1]:
                seams.append(w)
        if seams and not (len(seams) == 2 and v in seams and len(edges[seams[0]]) == len(edges[seams[1]])):
            return None
        # Each side's copy of u goes to that side's copy of v (one pair off the seams, one per side along them).
        copy_map = dict(on_edge)
        if (seams and len(copy_map) != len(on_edge)) or not copies <= copy_map.keys():
            return None
        vf_u, vf_v, fw = self.vf[u], self.vf[v], self.fw
        removed = vf_u & vf_v
        if len(removed) != len(on_edge):
            return False
        opposite = {w for f in removed for w in fw[f]} - {u, v}
        common = edges.keys() & {w for f in vf_v for w in fw[f]}
        common.discard(v)
        if common != opposite:
            return False
        if not self.corners_keep_faces(removed, vf_u - removed, copy_map, u):
            return False
        if not self.shapes_hold(u, v, vf_u - removed, copy_map, opposite, vf_v - removed):
            return False
        return removed, copy_map

    def corners_keep_faces(self, removed, moved, copy_map, u) -> bool:
        """Whether every UV copy the collapse touches keeps at least one face (no chart loses a corner)."""
        change = {}
        for f in removed:
            for w, c in zip(self.fw[f], self.fs[f]):
                if w != u:
                    change[c] = change.get(c, 0) - 1
        for f in moved:
            c = copy_map[self.fs[f][self.fw[f].index(u)]]
            change[c] = change.get(c, 0) + 1
        return all(self.copy_faces[c] + d > 0 for c, d in change.items())

    def shapes_hold(self, u, v, moved, copy_map, opposite, faces_v) -> bool:
        """Whether the faces moving from u to v keep their orientation in 3-D and in UV, an area and a shape, still
        face the way the full mesh does at their corners, and do not land on a face v already has."""
        P, UV, N, fw, fs = self.P, self.UV, self.N, self.fw, self.fs
        pu, pv, nu, nv = P[u], P[v], N[u], N[v]
        for f in moved:
            tri, cs = fw[f], fs[f]
            k = tri.index(u)
            a, b = tri[(k + 1) % 3], tri[(k + 2) % 3]
            pa, pb = P[a], P[b]
            ax, ay, az = pa[0] - pb[0], pa[1] - pb[1], pa[2] - pb[2]
            # Normals as (u - b) x (a - b), the face's own winding, with the edge a-b that stays in both.
            ux, uy, uz = pu[0] - pb[0], pu[1] - pb[1], pu[2] - pb[2]
            vx, vy, vz = pv[0] - pb[0], pv[1] - pb[1], pv[2] - pb[2]
            n0x, n0y, n0z = uy * az - uz * ay, uz * ax - ux * az, ux * ay - uy * ax
            n1x, n1y, n1z = vy * az - vz * ay, vz * ax - vx * az, vx * ay - vy * ax
            len1 = n1x * n1x + n1y * n1y + n1z * n1z
            if len1 <= self.area_eps2:
                return False
            len0 = n0x * n0x + n0y * n0y + n0z * n0z
            dot = n0x * n1x + n0y * n1y + n0z * n1z
            if len0 > self.area_eps2 and (dot <= 0 or dot * dot < MIN_NORMAL_DOT ** 2 * len0 * len1):
                return False
            ab2 = ax * ax + ay * ay + az * az
            s0 = ab2 + ux * ux + uy * uy + uz * uz + (ax - ux) ** 2 + (ay - uy) ** 2 + (az - uz) ** 2
            s1 = ab2 + vx * vx + vy * vy + vz * vz + (ax - vx) ** 2 + (ay - vy) ** 2 + (az - vz) ** 2
            # A needle's normal is noise: refuse one below MIN_QUALITY unless the face was no better before.
            if 12.0 * len1 < MIN_QUALITY ** 2 * s1 * s1 and len1 * s0 * s0 < len0 * s1 * s1:
                return False
            # Small turns add up: the face may not turn away from the full mesh's normals at its corners (vertices
            # never move, so those stay a fixed reference), or no further than it already was.
            na, nb = N[a], N[b]
            new = min(n1x * na[0] + n1y * na[1] + n1z * na[2], n1x * nb[0] + n1y * nb[1] + n1z * nb[2],
                      n1x * nv[0] + n1y * nv[1] + n1z * nv[2])
            if new < 0.0:
                old = min(n0x * na[0] + n0y * na[1] + n0z * na[2], n0x * nb[0] + n0y * nb[1] + n0z * nb[2],
                          n0x * nu[0] + n0y * nu[1] + n0z * nu[2], 0.0)
                if new * new * len0 > old * old * len1:
                    return False
            ta, tb = UV[cs[(k + 1) % 3]], UV[cs[(k + 2) % 3]]
            tu, tv = UV[cs[k]], UV[copy_map[cs[k]]]
            eu, ev = ta[0] - tb[0], ta[1] - tb[1]
            s0 = eu * (tu[1] - tb[1]) - ev * (tu[0] - tb[0])
            s1 = eu * (tv[1] - tb[1]) - ev * (tv[0] - tb[0])
            if s0 != 0.0 and (s0 * s1 <= 0.0):
                return False
            if (len(opposite) == 2 and a in opposite and b in opposite
                    and any(a in fw[g] and b in fw[g] for g in faces_v)):
                return False
        return True

    def collapse(self, u: int, v: int, removed, copy_map) -> None:
        """Move u's faces onto v (each corner onto its side's copy), drop the edge's faces, merge the quadrics."""
        fw, fs, vf, copy_faces = self.fw, self.fs, self.vf, self.copy_faces
        for f in removed:
            self.face_alive[f] = False
            for w, c in zip(fw[f], fs[f]):
                copy_faces[c] -= 1
                if w != u:
                    vf[w].discard(f)
        vf_v = vf[v]
        for f in vf[u] - removed:
            tri, cs = fw[f], fs[f]
            k = tri.index(u)
            tri[k] = v
            copy_faces[cs[k]] -= 1
            cs[k] = copy_map[cs[k]]
            copy_faces[cs[k]] += 1
            vf_v.add(f)
        vf[u] = set()
        self.faces_left -= len(removed)
        self.version[u] = -1
        self.version[v] += 1
        self.Q[v] = [a + b for a, b in zip(self.Q[v], self.Q[u])]
        self.E[v] = self.at(self.Q[v], self.P[v])
        ring = {w for f in vf_v for w in fw[f]}
        ring.discard(v)
        blocked, kind = self.blocked, self.kind
        blocked.pop(v, None)
        kv = kind[v]
        for w in ring:
            kw = kind[w]
            # Only what the seam rules allow: off-seam vertices anywhere, seam vertices along seams.
            if kw == 0 or (kw > 0 and kv != 0):
                self.push(w, v)
            if kv == 0 or (kv > 0 and kw != 0):
                self.push(v, w)
            for x in blocked.pop(w, ()):
                if x != v and self.version[x] >= 0:
                    self.push(w, x)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(the kept input vertices [V'] in order, faces [F',3] int64 on them) of the faces left."""
        f = np.asarray([t for t, alive in zip(self.fs, self.face_alive) if alive], dtype=np.int64).reshape(-1, 3)
        keep, f = np.unique(f, return_inverse=True)
        return keep, f.reshape(-1, 3).astype(np.int64)
