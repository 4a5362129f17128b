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

from .mesh_extract_result import MeshExtractResult

__all__ = ["extract_mesh", "load_tables"]

_TABLE_FILE = Path(__file__).with_name("flexicubes_tables.json")
# Surface cubes whose edge entries are made at once in step 8 (memory: ~4 entries per cube, ~150 bytes
# each while a block is processed; the random-weight 4.7 M-face mesh has ~2.4 M surface cubes).
CUBE_BLOCK = 1 << 18
_TABLE_KEYS = ("dmc_table", "num_vd_table", "check_table", "cube_corners", "cube_edges",
               "edge_dir_table", "quad_split_1", "quad_split_2")
_raw_tables = None
_device_tables: Dict[torch.device, Dict[str, torch.Tensor]] = {}


def load_tables(device="cpu") -> Dict[str, torch.Tensor]:
    """FlexiCubes tables (int64 tensors) on `device`; the JSON is read once, each device cached once.

    Besides the raw tables it holds `edge_owner` [256,12,2]: for each case the (dual-vertex slot,
    edge id) pairs of dmc_table in table order (slot-major), padded with -1.
    """
    global _raw_tables
    device = torch.device(device)
    if device not in _device_tables:
        if _raw_tables is None:
            with open(_TABLE_FILE) as f:
                raw = json.load(f)
            t = {k: torch.tensor(raw[k], dtype=torch.long) for k in _TABLE_KEYS}
            owner = torch.full((256, 12, 2), -1, dtype=torch.long)
            for case in range(256):  # 256 x <=28 entries, done once
                pairs = [(j, e) for j in range(4) for e in raw["dmc_table"][case][j] if e >= 0]
                if pairs:
                    owner[case, :len(pairs)] = torch.tensor(pairs)
            t["edge_owner"] = owner
            _raw_tables = t
        _device_tables[device] = {k: v.to(device) for k, v in _raw_tables.items()}
    return _device_tables[device]


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


@torch.no_grad()
def extract_mesh(coords: torch.Tensor, feats: torch.Tensor, res: int,
                 use_color: bool = True) -> MeshExtractResult:
    """FlexiCubes extraction of one batch item.

    coords: int [N,3] voxel coordinates (x,y,z) in [0,res), unique.
    feats:  float [N,101] (use_color) or [N,53]: sdf 0-7, deform 8-31, weights 32-52, colour 53-100
            (per-voxel layout of TRELLIS_FACTS.md §7.4, corners x fastest).
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
    coords = coords.to(device=device, dtype=torch.long)
    feats = feats.float()
    N, R1 = feats.shape[0], res + 1

    # -- steps 1-3: merge the per-voxel corner values onto the touched grid vertices (true mean).
    # Row U of `vattr` is the default for untouched vertices: sdf +1, deform 0, colour logits 0.
    # Columns: sdf, deform xyz, colour logits x6.
    corner_key = _flat(corners, R1)           # flat() is linear: key(v + o) = key(v) + key(o)
    vkey = _flat(coords, R1)[:, None] + corner_key                          # [N,8]
    vert_keys, inv, cnt = torch.unique(vkey.flatten(), return_inverse=True, return_counts=True)
    inv = inv.view(N, 8)
    U = vert_keys.numel()
    vattr = feats.new_zeros(U + 1, 10 if use_color else 4)
    for k in range(8):  # one add per corner slot: keeps memory at [N,10]; indices unique per k
        part = [feats[:, k:k + 1] - 1.0 / res, feats[:, 8 + 3 * k:11 + 3 * k]]
        if use_color:
            part.append(feats[:, 53 + 6 * k:59 + 6 * k])
        vattr.index_add_(0, inv[:, k], torch.cat(part, 1))
    vattr[:U] /= cnt[:, None].float()
    vattr[U, 0] = 1.0
    vsdf = vattr[:, 0]

    # -- step 5: cubes. A surface cube needs an inside corner and untouched vertices are outside,
    # so the only candidates are the in-grid cubes around inside (touched) vertices. This includes
    # the boundary cubes that share a corner with a voxel without being one.
    inside_v = _unflat(vert_keys[vsdf[:U] < 0], R1)                         # [I,3]
    cand = []
    for o in corners:  # the 8 cubes having the vertex as a corner
        c = inside_v - o
        cand.append(_flat(c[_in_grid(c, res)], res))
    cube_keys = torch.unique(torch.cat(cand))                               # ascending n
    del cand, inside_v
    cube = _unflat(cube_keys, res)                                          # [C,3]
    pos, found = _lookup(vert_keys, _flat(cube, R1)[:, None] + corner_key)
    rows = torch.where(found, pos, U)                                       # [C,8] rows of vattr
    # -- step 6: case id = sum_k inside(k) * 2^k (strict sdf < 0)
    case = ((vsdf[rows] < 0).long() << torch.arange(8, device=device)).sum(1)
    surf = (case > 0) & (case < 255)
    cube_keys, cube, rows, case = cube_keys[surf], cube[surf], rows[surf], case[surf]
    S = cube_keys.numel()
    if S == 0:
        return _empty(device, use_color, res)
    rows = rows.int()  # largest index tensor kept around; int32 halves it

    # -- step 7: ambiguity (C16/C19), decided on the original cases of both cubes simultaneously.
    # A neighbour that is not a surface cube (incl. one not in `cube_keys`) never triggers.
    chk = tab["check_table"][case]                                          # [S,5]
    amb = (chk[:, 0] == 1).nonzero().squeeze(1)
    nb = cube[amb] + chk[amb, 1:4]
    nb_ok = _in_grid(nb, res)
    nb_pos, nb_found = _lookup(cube_keys, _flat(nb, res))
    flip = nb_ok & nb_found & (tab["check_table"][case[nb_pos], 0] == 1)
    case = case.clone()
    case[amb[flip]] = chk[amb[flip], 4]

    # -- step 5 (weights): the cube's own voxel weights, 0 for cubes that are not voxels.
    vox_keys, vox_order = torch.sort(_flat(coords, res))
    wpos, wfound = _lookup(vox_keys, cube_keys)
    w = feats.new_zeros(S, 21)
    w[wfound] = feats[vox_order[wpos[wfound]], 32:53]
    beta = 0.99 * torch.tanh(w[:, :12]) + 1.0
    alpha = 0.99 * torch.tanh(w[:, 12:20]) + 1.0
    gamma = 0.99 * torch.sigmoid(w[:, 20]) + 0.005

    # -- step 8: dual vertices. Output order: cubes grouped by dual-vertex count (stable, so
    # ascending n inside a group), then table slot. first_vd = id of each cube's slot 0.
    nvd = tab["num_vd_table"][case]
    by_count = torch.argsort(nvd, stable=True)
    first_vd = torch.empty_like(nvd)
    first_vd[by_count] = torch.cumsum(nvd[by_count], 0) - nvd[by_count]
    V = int(nvd.sum())

    # One entry per (cube, owned surface edge): cube-major, then dmc table order. Made and consumed in
    # blocks of CUBE_BLOCK cubes (the same entries in the same order, summed in the same order), so the
    # per-entry tensors (a dozen [M] / [M,3] arrays, ~4 entries per cube) never exist for the whole mesh
    # at once: only what step 9 needs is kept (edge key, dual vertex, first endpoint's side).
    n_attr = 9 if use_color else 3
    acc = vattr.new_zeros(V, n_attr)
    wsum = vattr.new_zeros(V)
    vgamma = vattr.new_empty(V)
    step = (1 - 1e-8) / (2 * res)
    rank_of_dir = torch.tensor([2, 0, 1], device=device)
    ekeys, dvs, outs = [], [], []
    for s0 in range(0, S, CUBE_BLOCK):
        owner = tab["edge_owner"][case[s0:s0 + CUBE_BLOCK]]                # [B,12,2]
        pc, pt = (owner[:, :, 0] >= 0).nonzero(as_tuple=True)
        slot, e = owner[pc, pt, 0], owner[pc, pt, 1]
        del owner, pt
        pc = pc + s0
        dv = first_vd[pc] + slot                                            # dual vertex id
        a, b = edges[2 * e], edges[2 * e + 1]                               # endpoints, table order
        ra, rb = rows[pc, a].long(), rows[pc, b].long()
        cpc = cube[pc]
        va, vb = cpc + corners[a], cpc + corners[b]                         # integer grid coords
        xa = va.float() / res - 0.5 + step * torch.tanh(vattr[ra, 1:4])
        xb = vb.float() / res - 0.5 + step * torch.tanh(vattr[rb, 1:4])
        sa = (vsdf[ra] * alpha[pc, a])[:, None]                             # alpha-weighted sdf
        sb = (vsdf[rb] * alpha[pc, b])[:, None]
        den = sb - sa                                                       # != 0: signs differ
        bw = beta[pc, e]
        vals = [(xa * sb - xb * sa) / den]                                  # zero crossing u_e
        if use_color:
            ca, cb = torch.sigmoid(vattr[ra, 4:10]), torch.sigmoid(vattr[rb, 4:10])
            vals.append((ca * sb - cb * sa) / den)
        u = torch.cat(vals, 1)
        acc.index_add_(0, dv, bw[:, None] * u)
        wsum.index_add_(0, dv, bw)
        vgamma[dv] = gamma[pc]                                              # every vd owns an edge
        # step 9's inputs: the grid edge's key (first endpoint in table order, axis rank), the dual
        # vertex, and whether the first endpoint is outside (sdf > 0)
        ekeys.append(_flat(va, R1) * 3 + rank_of_dir[tab["edge_dir_table"][e]])
        dvs.append(dv)
        outs.append(vsdf[ra] > 0)
        del u, vals, xa, xb, va, vb, cpc, ra, rb, a, b, sa, sb, den, bw, pc, slot, e
    acc /= wsum[:, None]
    vertices = acc[:, :3].contiguous()
    vertex_attrs = acc[:, 3:].contiguous() if use_color else None
    del acc, wsum
    ekey, dv, first_out = torch.cat(ekeys), torch.cat(dvs), torch.cat(outs)
    del ekeys, dvs, outs

    # -- step 9: faces. A grid edge is identified by its first endpoint (table order) and axis;
    # key = first-vertex key * 3 + rank, rank y=0, z=1, x=2 (y-edges point -y), which sorts like
    # (first vertex key, second vertex key). Edges seen by exactly 4 cubes are interior edges.
    ekey, perm = torch.sort(ekey, stable=True)                             # keeps ascending n
    _, ecount = torch.unique_consecutive(ekey, return_counts=True)
    start = (torch.cumsum(ecount, 0) - ecount)[ecount == 4]
    group = perm[start[:, None] + torch.arange(4, device=device)]           # [Q,4] entries
    q = dv[group]
    outward = first_out[group[:, 0]]                                        # first endpoint sdf > 0
    quads = torch.cat([q[outward][:, [0, 1, 3, 2]], q[~outward][:, [2, 3, 1, 0]]])
    g = vgamma[quads]
    split1 = (g[:, 0] * g[:, 2] > g[:, 1] * g[:, 3])[:, None]
    faces = torch.where(split1, quads[:, tab["quad_split_1"]], quads[:, tab["quad_split_2"]])
    return MeshExtractResult(vertices, faces.reshape(-1, 3), vertex_attrs, res=res)
