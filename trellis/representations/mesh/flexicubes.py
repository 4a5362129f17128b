"""Sparse FlexiCubes mesh extraction (inference path), TRELLIS_FACTS.md §8 steps 1-10.

The result is identical to the dense reference procedure of §8 (same vertex order, faces and face
order) but only touches the grid vertices / cubes around the given voxels, so memory scales with
the number of voxels instead of res^3.

Notation used below:
  vertex key  = flat index of a grid vertex (i,j,k) in the (res+1)^3 vertex grid
  cube key    = flat index n of a cube (i,j,k) in the res^3 cube grid (also used for voxels)
  both flatten as (i*D + j)*D + k with x = i slowest.
"""
import json
from pathlib import Path
from typing import Dict

import torch

from ...core.module_cancel import check_active
from .mesh_extract_result import MeshExtractResult

__all__ = ["extract_mesh", "load_tables", "block_sizes_for"]

_TABLE_FILE = Path(__file__).with_name("flexicubes_tables.json")
# Surface cubes whose edge entries are made at once in step 8 (and whose quads step 9 finds at once): the
# smallest block. A block holds ~6 entries per cube at ~350 bytes each with colour while it is processed:
# 1 << 16 cubes -> ~130 MiB (1 << 18 held ~500 MiB on a 1.3 M-voxel res-256 grid of random features, the
# extraction's peak then; no slower on CPU).
CUBE_BLOCK = 1 << 16
# Quads / faces handled at once when the faces and their normals are written (step 9, the result): the
# smallest block.
FACE_BLOCK = 1 << 18
# On a CUDA device the blocks grow with the memory this process can still get (``_block_sizes``): each
# block costs ~50 kernel launches and a few host syncs, so at the smallest blocks the extraction is
# launch-bound (docs/benchmarks/kernels.md#flexicubes). Bytes one block costs above the rest of the
# extraction, per surface cube (steps 8-9) and per quad (faces and normals), measured with the CPU dispatch
# tracker on a noisy res-256 field and rounded up; the share of the free memory one block may take, and the
# most it takes whatever is free (a low-VRAM run on a large card stays near its small peak).
CUBE_BLOCK_BYTES = 1024
FACE_BLOCK_BYTES = 64
BLOCK_MEMORY_SHARE = 0.25
BLOCK_MEMORY_MAX = 1 << 30
# Largest dense lookup grid (cells) of steps 1-6: the touched-vertex and candidate-cube sets and the
# vertex key -> row map are found on a dense (res+1)^3 / res^3 grid (int32: 68 MiB at res 256) instead
# of by sorting [N,8] keys; above this (res > 321) the sort-and-search path gives the same result.
GRID_CELLS = 1 << 25
_TABLE_KEYS = ("dmc_table", "num_vd_table", "check_table", "cube_corners", "cube_edges",
               "edge_dir_table", "quad_split_1", "quad_split_2")
_raw_tables = None
_device_tables: Dict[torch.device, Dict[str, torch.Tensor]] = {}


def load_tables(device="cpu") -> Dict[str, torch.Tensor]:
    """FlexiCubes tables (int64 tensors) on `device`; the JSON is read once, each device cached once.

    Besides the raw tables it holds tables derived from them:
      edge_owner [256,12,2]: for each case the (dual-vertex slot, edge id) pairs of dmc_table in table
                 order (slot-major), padded with -1;
      edge_slot  [256,12]: the slot owning each edge in each case, -1 for none;
      quad_d [3,4,3], quad_e [3,4], quad_first [3], quad_rank [3]: for the grid edge along each axis
                 that starts at a cube's corner 0, the offsets d of the 4 cubes around it (the cube is
                 c - d, in ascending cube key order, so the cube itself is last), the edge's local id in
                 each of them, the cube's corner that is the edge's first endpoint (table order) and the
                 edge's axis rank of step 9.
    """
    global _raw_tables
    device = torch.device(device)
    if device not in _device_tables:
        if _raw_tables is None:
            with open(_TABLE_FILE) as f:
                raw = json.load(f)
            t = {k: torch.tensor(raw[k], dtype=torch.long) for k in _TABLE_KEYS}
            owner = torch.full((256, 12, 2), -1, dtype=torch.long)
            slot_of = torch.full((256, 12), -1, dtype=torch.long)
            for case in range(256):  # 256 x <=28 entries, done once
                pairs = [(j, e) for j in range(4) for e in raw["dmc_table"][case][j] if e >= 0]
                if pairs:
                    owner[case, :len(pairs)] = torch.tensor(pairs)
                for j, e in pairs:
                    slot_of[case, e] = j
            t["edge_owner"], t["edge_slot"] = owner, slot_of
            t.update(_quad_tables(raw))
            _raw_tables = t
        _device_tables[device] = {k: v.to(device) for k, v in _raw_tables.items()}
    return _device_tables[device]


def _quad_tables(raw) -> Dict[str, torch.Tensor]:
    corners, pairs = raw["cube_corners"], [raw["cube_edges"][2 * e:2 * e + 2] for e in range(12)]
    rank_of_dir = (2, 0, 1)

    def local_edge(low, axis):  # the cube edge from corner offset `low` one step along `axis`
        for e, (a, b) in enumerate(pairs):
            lo = [min(u, v) for u, v in zip(corners[a], corners[b])]
            if lo == list(low) and corners[a][axis] != corners[b][axis]:
                return e
        raise ValueError("incomplete cube_edges table")

    quad_d, quad_e, quad_first, quad_rank = [], [], [], []
    for axis in range(3):
        ds = [d for d in ((i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)) if d[axis] == 0]
        ds.sort(reverse=True)                       # c - d ascending in key: d descending (x slowest)
        es = [local_edge(d, axis) for d in ds]
        first = raw["cube_edges"][2 * es[-1]]
        # step 9 names a grid edge by its first endpoint in table order: the same grid vertex in the 4 cubes
        for d, e in zip(ds, es):
            if [c - o for c, o in zip(corners[raw["cube_edges"][2 * e]], d)] != corners[first]:
                raise ValueError("cube_edges orients a grid edge differently in neighbouring cubes")
        quad_d.append(ds)
        quad_e.append(es)
        quad_first.append(first)
        quad_rank.append(rank_of_dir[raw["edge_dir_table"][es[-1]]])
    return {"quad_d": torch.tensor(quad_d), "quad_e": torch.tensor(quad_e),
            "quad_first": torch.tensor(quad_first), "quad_rank": torch.tensor(quad_rank)}


def _flat(ijk: torch.Tensor, dim: int) -> torch.Tensor:
    return (ijk[..., 0] * dim + ijk[..., 1]) * dim + ijk[..., 2]


def _unflat(key: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.stack((key // (dim * dim), (key // dim) % dim, key % dim), dim=-1)


def _in_grid(ijk: torch.Tensor, res: int) -> torch.Tensor:
    return ((ijk >= 0) & (ijk < res)).all(-1)


def _lookup(sorted_keys: torch.Tensor, query: torch.Tensor):
    """Position of each query key in a sorted unique key tensor and whether it is present."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(query), torch.zeros_like(query, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, query).clamp_max_(sorted_keys.numel() - 1)
    return pos, sorted_keys[pos] == query


def _empty(device, use_color: bool, res: int) -> MeshExtractResult:
    return MeshExtractResult(torch.zeros(0, 3, device=device),
                             torch.zeros(0, 3, dtype=torch.long, device=device),
                             torch.zeros(0, 6, device=device) if use_color else None, res=res)


def _block_sizes(device: torch.device):
    """(cube block, face block) for an extraction on ``device``: the smallest blocks on a CPU; on CUDA
    ``block_sizes_for`` the memory this process can still get (under any VRAM budget or cap, plus what the
    caching allocator holds unused). The result does not depend on the block sizes."""
    from ...core.device import obtainable_device_memory
    return (CUBE_BLOCK, FACE_BLOCK) if device.type != "cuda" else block_sizes_for(obtainable_device_memory(device))


def block_sizes_for(room_bytes: int | None) -> tuple:
    """(cube block, face block) as large as BLOCK_MEMORY_SHARE of `room_bytes` allows, at most BLOCK_MEMORY_MAX."""
    budget = min(int(BLOCK_MEMORY_SHARE * (room_bytes or 0)), BLOCK_MEMORY_MAX)
    return max(CUBE_BLOCK, budget // CUBE_BLOCK_BYTES), max(FACE_BLOCK, budget // FACE_BLOCK_BYTES)


def _dense_ok(cells: int) -> bool:
    return cells <= GRID_CELLS


def _touched_vertices(vkey0: torch.Tensor, corner_key: torch.Tensor, R1: int):
    """Sorted keys of the grid vertices touched by the voxels' corners, each key's row lookup and count.

    Returns (vert_keys [U], row_of(keys) -> int64 rows (U where untouched), counts [U]): what
    torch.unique(return_inverse, return_counts) gives for the [N,8] corner keys, without the [N,8]
    key tensor and the sort's buffers (a dense (res+1)^3 int32 grid where it fits the budget)."""
    device = vkey0.device
    if _dense_ok(R1 ** 3):
        touched = torch.zeros(R1 ** 3, dtype=torch.bool, device=device)
        for ck in corner_key.tolist():
            touched[vkey0 + ck] = True
        vert_keys = touched.nonzero().squeeze(1)                            # ascending
        del touched
        U = vert_keys.numel()
        grid = torch.full((R1 ** 3,), U, dtype=torch.int32, device=device)
        grid[vert_keys] = torch.arange(U, dtype=torch.int32, device=device)

        def row_of(keys):
            return grid[keys].long()
    else:
        vert_keys = torch.unique(vkey0[:, None] + corner_key)
        U = vert_keys.numel()

        def row_of(keys):
            pos, found = _lookup(vert_keys, keys)
            return torch.where(found, pos, U)
    counts = torch.zeros(U, dtype=torch.long, device=device)
    ones = torch.ones(vkey0.numel(), dtype=torch.long, device=device)
    for ck in corner_key.tolist():
        counts.index_add_(0, row_of(vkey0 + ck), ones)
    return vert_keys, row_of, counts


def _cube_index(cube_keys: torch.Tensor, res: int):
    """Lookup of the position of cube keys in the sorted unique `cube_keys`: (position, found); on a
    dense res^3 int32 grid where it fits GRID_CELLS, else by binary search."""
    if not _dense_ok(res ** 3):
        return lambda keys: _lookup(cube_keys, keys)
    grid = torch.full((res ** 3,), -1, dtype=torch.int32, device=cube_keys.device)
    grid[cube_keys] = torch.arange(cube_keys.numel(), dtype=torch.int32, device=cube_keys.device)

    def index_of(keys):
        pos = grid[keys]
        found = pos >= 0
        return pos.clamp_min_(0).long(), found
    return index_of


def _candidate_cubes(inside_v: torch.Tensor, corners: torch.Tensor, res: int) -> torch.Tensor:
    """Sorted unique keys of the in-grid cubes having an inside vertex as a corner."""
    if _dense_ok(res ** 3):
        mark = torch.zeros(res ** 3, dtype=torch.bool, device=inside_v.device)
        for o in corners:
            c = inside_v - o
            mark[_flat(c[_in_grid(c, res)], res)] = True
        return mark.nonzero().squeeze(1)
    cand = []
    for o in corners:  # the 8 cubes having the vertex as a corner
        c = inside_v - o
        cand.append(_flat(c[_in_grid(c, res)], res))
    return torch.unique(torch.cat(cand))


@torch.no_grad()
def extract_mesh(coords: torch.Tensor, feats: torch.Tensor, res: int,
                 use_color: bool = True) -> MeshExtractResult:
    """FlexiCubes extraction of one batch item.

    coords: int [N,3] voxel coordinates (x,y,z) in [0,res), unique.
    feats:  float [N,101] (use_color) or [N,53]: sdf 0-7, deform 8-31, weights 32-52, colour 53-100
            (per-voxel layout of TRELLIS_FACTS.md §7.4, corners x fastest).

    Memory: besides `feats` and the result, the largest temporaries are a few [N] / [S] (surface cubes)
    index arrays, the dense lookup grids ((res+1)^3 int32, 68 MiB at res 256, see GRID_CELLS), one
    block of step 8 and step 9's quads ([F/2,4] int32 and a key each); nothing of size [N,8] or [S,21]
    is built, nothing per (cube, edge) entry outlives its block, and the int64 faces and the [F,3,3] face
    normals are written block by block into the result. On a noisy field (many surface cubes, ~6 faces
    per voxel) the result itself, normals included, is then most of the peak. On CUDA the blocks grow
    with the free memory (``_block_sizes``: at most a quarter of it, at most BLOCK_MEMORY_MAX): fewer
    kernel launches and host syncs where memory allows, the smallest blocks under a tight cap.
    """
    device = feats.device
    n_feat = 101 if use_color else 53
    if feats.dim() != 2 or feats.shape[1] != n_feat or coords.shape != (feats.shape[0], 3):
        raise ValueError(f"expected coords [N,3] and feats [N,{n_feat}], got "
                         f"{tuple(coords.shape)} and {tuple(feats.shape)}")
    if feats.shape[0] == 0:
        return _empty(device, use_color, res)
    tab = load_tables(device)
    corners, edges = tab["cube_corners"], tab["cube_edges"]
    cube_block, face_block = _block_sizes(device)
    coords = coords.to(device=device, dtype=torch.long)
    if feats.dtype != torch.float32:
        feats = feats.float()
    N, R1 = feats.shape[0], res + 1

    # -- steps 1-3: merge the per-voxel corner values onto the touched grid vertices (true mean).
    # Row U of `vattr` is the default for untouched vertices: sdf +1, deform 0, colour logits 0.
    # Columns: sdf, deform xyz, colour logits x6.
    corner_key = _flat(corners, R1)           # flat() is linear: key(v + o) = key(v) + key(o)
    vkey0 = _flat(coords, R1)                                               # [N] corner 0
    vert_keys, row_of, cnt = _touched_vertices(vkey0, corner_key, R1)
    U = vert_keys.numel()
    vattr = feats.new_zeros(U + 1, 10 if use_color else 4)
    for k in range(8):  # one add per corner slot: keeps memory at [N,10]; indices unique per k
        part = [feats[:, k:k + 1] - 1.0 / res, feats[:, 8 + 3 * k:11 + 3 * k]]
        if use_color:
            part.append(feats[:, 53 + 6 * k:59 + 6 * k])
        vattr.index_add_(0, row_of(vkey0 + corner_key[k]), torch.cat(part, 1))
        del part
    del vkey0
    vattr[:U] /= cnt[:, None].float()
    del cnt
    vattr[U, 0] = 1.0
    vsdf = vattr[:, 0]

    check_active()          # each step below is a pass over a 256^3 grid's touched vertices: seconds on a CPU
    # -- step 5: cubes. A surface cube needs an inside corner and untouched vertices are outside,
    # so the only candidates are the in-grid cubes around inside (touched) vertices. This includes
    # the boundary cubes that share a corner with a voxel without being one.
    cube_keys = _candidate_cubes(_unflat(vert_keys[vsdf[:U] < 0], R1), corners, res)   # ascending n
    del vert_keys
    # rows of vattr of each cube's 8 corners and (step 6) case id = sum_k inside(k) * 2^k (strict
    # sdf < 0), one corner at a time: no [C,8] int64 temporaries.
    cube_vkey = _flat(_unflat(cube_keys, res), R1)
    rows = torch.empty(cube_keys.numel(), 8, dtype=torch.int32, device=device)
    case = torch.zeros(cube_keys.numel(), dtype=torch.long, device=device)
    for k in range(8):
        r = row_of(cube_vkey + corner_key[k])
        rows[:, k] = r
        case |= (vsdf[r] < 0).long() << k
        del r
    del cube_vkey, row_of                      # the dense vertex grid goes with row_of
    surf = (case > 0) & (case < 255)
    cube_keys, rows, case = cube_keys[surf], rows[surf], case[surf]
    del surf
    S = cube_keys.numel()
    if S == 0:
        return _empty(device, use_color, res)
    # step 9's quad orientation: whether each cube's corner k is outside (sdf > 0; 0 is neither), as bit
    # k, for the corners where step 9's edges start
    outside = torch.zeros(S, dtype=torch.uint8, device=device)
    for k in tab["quad_first"].unique().tolist():
        outside |= (vsdf[rows[:, k].long()] > 0).to(torch.uint8) << k

    check_active()
    # -- step 7: ambiguity (C16/C19), decided on the original cases of both cubes simultaneously.
    # A neighbour that is not a surface cube (incl. one not in `cube_keys`) never triggers.
    amb = (tab["check_table"][case, 0] == 1).nonzero().squeeze(1)
    chk = tab["check_table"][case[amb]]                                     # [A,5]
    nb = _unflat(cube_keys[amb], res) + chk[:, 1:4]
    nb_ok = _in_grid(nb, res)
    nb_pos, nb_found = _lookup(cube_keys, _flat(nb, res))
    flip = nb_ok & nb_found & (tab["check_table"][case[nb_pos], 0] == 1)
    case[amb[flip]] = chk[flip, 4]
    del amb, chk, nb, nb_ok, nb_pos, nb_found, flip

    # -- step 5 (weights): the cube's own voxel weights, 0 for cubes that are not voxels: here only
    # the voxel row of each surface cube (-1: none); the weights are read block by block in step 8.
    vox_keys, vox_order = torch.sort(_flat(coords, res))
    wpos, wfound = _lookup(vox_keys, cube_keys)
    del vox_keys
    wrow = torch.where(wfound, vox_order[wpos], -1).int()
    del vox_order, wpos, wfound, coords

    # -- step 8: dual vertices. Output order: cubes grouped by dual-vertex count (stable, so
    # ascending n inside a group), then table slot. first_vd = id of each cube's slot 0.
    nvd = tab["num_vd_table"][case]
    by_count = torch.argsort(nvd, stable=True)
    first_vd = torch.empty_like(nvd)
    first_vd[by_count] = torch.cumsum(nvd[by_count], 0) - nvd[by_count]
    del by_count
    V = int(nvd.sum())
    del nvd

    # One entry per (cube, owned surface edge): cube-major, then dmc table order. Made and consumed in
    # blocks of cube_block cubes (the same entries in the same order, summed in the same order), so the
    # per-entry tensors (a dozen [M] / [M,3] arrays, ~4 entries per cube) and the cubes' weights never
    # exist for the whole mesh at once; nothing per entry outlives its block (step 9 finds the quads
    # from the cubes). Positions and colours have their own sums, divided in place into the result.
    pos_sum = vattr.new_zeros(V, 3)
    col_sum = vattr.new_zeros(V, 6) if use_color else None
    wsum = vattr.new_zeros(V)
    vgamma = vattr.new_empty(V)
    step = (1 - 1e-8) / (2 * res)
    for s0 in range(0, S, cube_block):
        check_active()
        s1 = min(s0 + cube_block, S)
        # the block's weights: [B,21], rows of non-voxel cubes 0 (beta = alpha = 1, gamma = 0.5)
        wr = wrow[s0:s1]
        has = (wr >= 0).nonzero().squeeze(1)
        w = feats.new_zeros(s1 - s0, 21)
        w[has] = feats[wr[has].long(), 32:53]
        beta = 0.99 * torch.tanh(w[:, :12]) + 1.0
        alpha = 0.99 * torch.tanh(w[:, 12:20]) + 1.0
        gamma = 0.99 * torch.sigmoid(w[:, 20]) + 0.005
        del w, wr, has
        owner = tab["edge_owner"][case[s0:s1]]                              # [B,12,2]
        lc, pt = (owner[:, :, 0] >= 0).nonzero(as_tuple=True)              # lc: cube within the block
        slot, e = owner[lc, pt, 0], owner[lc, pt, 1]
        del owner, pt
        pc = lc + s0
        dv = first_vd[pc] + slot                                            # dual vertex id
        a, b = edges[2 * e], edges[2 * e + 1]                               # endpoints, table order
        ra, rb = rows[pc, a].long(), rows[pc, b].long()
        cpc = _unflat(cube_keys[pc], res)
        va, vb = cpc + corners[a], cpc + corners[b]                         # integer grid coords
        del cpc, pc, slot
        xa = va.float() / res - 0.5 + step * torch.tanh(vattr[ra, 1:4])
        xb = vb.float() / res - 0.5 + step * torch.tanh(vattr[rb, 1:4])
        del va, vb
        sa = (vsdf[ra] * alpha[lc, a])[:, None]                             # alpha-weighted sdf
        sb = (vsdf[rb] * alpha[lc, b])[:, None]
        den = sb - sa                                                       # != 0: signs differ
        bw = beta[lc, e]
        pos_sum.index_add_(0, dv, bw[:, None] * ((xa * sb - xb * sa) / den))  # zero crossing u_e
        del xa, xb
        if use_color:
            ca, cb = torch.sigmoid(vattr[ra, 4:10]), torch.sigmoid(vattr[rb, 4:10])
            col_sum.index_add_(0, dv, bw[:, None] * ((ca * sb - cb * sa) / den))
            del ca, cb
        wsum.index_add_(0, dv, bw)
        vgamma[dv] = gamma[lc]                                              # every vd owns an edge
        del ra, rb, a, b, sa, sb, den, bw, lc, e, dv, beta, alpha, gamma
    del rows, wrow, vattr, vsdf
    vertices = pos_sum.div_(wsum[:, None])
    vertex_attrs = col_sum.div_(wsum[:, None]) if use_color else None
    del pos_sum, col_sum, wsum

    # -- step 9: faces. A grid edge gets a quad when the 4 cubes around it are surface cubes that all
    # own it (an interior edge with a sign change). Each such edge is found from the cube around it with
    # the largest key, where it starts at corner 0; the other three are looked up by key (cube_keys is
    # sorted), so nothing per (cube, edge) entry is kept for the whole mesh. Quad corners are the dual
    # vertices of the 4 cubes in ascending cube key; quads are ordered by the edge's key (first endpoint
    # in table order, axis rank y=0, z=1, x=2: the order of (first vertex key, second vertex key)), those
    # whose first endpoint is outside (sdf > 0) first, each flipped by its orientation.
    quads, qkeys, qout = [], [], []
    key_dtype = torch.int32 if R1 ** 3 * 3 < 2 ** 31 else torch.long
    index_of = _cube_index(cube_keys, res)
    for s0 in range(0, S, cube_block):
        check_active()
        s1 = min(s0 + cube_block, S)
        for axis in range(3):
            d, slot_of = tab["quad_d"][axis], tab["edge_slot"][:, tab["quad_e"][axis]].T   # [4,256]
            own = (slot_of[3][case[s0:s1]] >= 0).nonzero().squeeze(1) + s0
            ijk = _unflat(cube_keys[own], res)
            pos, slot, ok = [], [], None
            for i in range(3):                                   # the three lower cubes
                nb = ijk - d[i]
                p, found = index_of(_flat(nb.clamp_min(0), res))
                sl = slot_of[i][case[p]]
                ok_i = (nb >= 0).all(-1) & found & (sl >= 0)
                ok = ok_i if ok is None else ok & ok_i
                pos.append(p)
                slot.append(sl)
                del nb, p, found, sl, ok_i
            keep = ok.nonzero().squeeze(1)
            own, ijk = own[keep], ijk[keep]
            q = torch.empty(keep.numel(), 4, dtype=torch.int32, device=device)  # ascending cube key
            for i in range(3):
                q[:, i] = first_vd[pos[i][keep]] + slot[i][keep]
            q[:, 3] = first_vd[own] + slot_of[3][case[own]]
            del pos, slot, ok, keep
            first = tab["quad_first"][axis]
            quads.append(q)
            qkeys.append((_flat(ijk + corners[first], R1) * 3 + tab["quad_rank"][axis]).to(key_dtype))
            qout.append(((outside[own] >> first) & 1).bool())
            del q, own, ijk
    del case, first_vd, cube_keys, outside, index_of
    quads, qout = torch.cat(quads), torch.cat(qout)
    order = torch.sort(torch.cat(qkeys))[1]                                  # keys are unique
    del qkeys
    o = qout[order]
    order = torch.cat([order[o], order[~o]])
    del o
    quads, qout = quads[order], qout[order]
    del order

    # faces in blocks, written once as the int64 result: outward quads (v0,v1,v3,v2), inward (v2,v3,v1,v0),
    # each split into two triangles along the diagonal of the larger gamma product
    Q = quads.shape[0]
    faces = torch.empty(2 * Q, 3, dtype=torch.long, device=device)
    sp1, sp2 = tab["quad_split_1"], tab["quad_split_2"]
    fwd, back = torch.tensor([0, 1, 3, 2], device=device), torch.tensor([2, 3, 1, 0], device=device)
    for q0 in range(0, Q, face_block):
        q1 = min(q0 + face_block, Q)
        qb = torch.where(qout[q0:q1, None], quads[q0:q1][:, fwd], quads[q0:q1][:, back])
        g = vgamma[qb]
        split1 = (g[:, 0] * g[:, 2] > g[:, 1] * g[:, 3])[:, None]
        faces[2 * q0:2 * q1] = torch.where(split1, qb[:, sp1], qb[:, sp2]).view(-1, 3)
        del qb, g, split1
    del quads, qout, vgamma
    return _result(vertices, faces, vertex_attrs, res, face_block)


def _result(vertices: torch.Tensor, faces: torch.Tensor, vertex_attrs, res: int,
            face_block: int = FACE_BLOCK) -> MeshExtractResult:
    """MeshExtractResult of an int64 [F,3] `faces`, its face normals computed FACE_BLOCK faces at a time
    (MeshExtractResult.face_normal_rows_of on each block: the same rows, without its whole-mesh [F,3]
    gathers and products next to the [F,3] result)."""
    out = MeshExtractResult(vertices, faces[:0], vertex_attrs, res=res)
    normal = vertices.new_empty(faces.shape[0], 3)
    for f0 in range(0, faces.shape[0], face_block):
        normal[f0:f0 + face_block] = MeshExtractResult.face_normal_rows_of(vertices, faces[f0:f0 + face_block])
    out.faces, out.face_normal_rows = faces, normal
    out.success = vertices.shape[0] > 0 and faces.shape[0] > 0
    return out
