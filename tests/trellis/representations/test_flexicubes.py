"""Tests of the sparse FlexiCubes extraction (TRELLIS_FACTS.md §8) against a dense reference.

`dense_reference` below is a deliberately plain, slow implementation of §8 on the full
(res+1)^3 vertex grid and res^3 cube grid (loops, no cleverness). It shares nothing with the module
except the table loader.
"""
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from trellis.representations.mesh import MeshExtractResult, extract_mesh
from trellis.representations.mesh.flexicubes import load_tables


# ----------------------------------------------------------------------------------------------
# Dense reference
# ----------------------------------------------------------------------------------------------
def _tables_np():
    t = {k: v.numpy() for k, v in load_tables("cpu").items()}
    t["edge_pairs"] = t["cube_edges"].reshape(12, 2)
    return t


def dense_reference(coords, feats, res, use_color=True):
    """Returns (vertices [V,3], faces [F,3], attrs [V,6] or None, stats dict)."""
    T = _tables_np()
    corners, edge_pairs = T["cube_corners"], T["edge_pairs"]
    coords = coords.long().numpy()
    f = feats.float().numpy()
    N, R1 = len(coords), res + 1
    na = 10 if use_color else 4
    f32 = np.float32

    # steps 1-3: accumulate (voxel, corner) pairs on the dense vertex grid and take the mean.
    # (Corner-major accumulation order, so float sums come out exactly like any other
    # corner-major implementation; the order is not part of the spec.)
    total = np.zeros((R1, R1, R1, na), np.float32)
    count = np.zeros((R1, R1, R1), np.int64)
    for k in range(8):
        for n in range(N):
            i, j, l = coords[n] + corners[k]
            vals = [f[n, k:k + 1] - f32(1.0 / res), f[n, 8 + 3 * k:11 + 3 * k]]
            if use_color:
                vals.append(f[n, 53 + 6 * k:59 + 6 * k])
            total[i, j, l] += np.concatenate(vals)
            count[i, j, l] += 1
    attr = np.zeros((R1, R1, R1, na), np.float32)
    attr[..., 0] = 1.0  # untouched: sdf +1, deform 0, colour logits 0
    touched = count > 0
    attr[touched] = total[touched] / count[touched][:, None].astype(np.float32)
    sdf = attr[..., 0]
    weights = np.zeros((res, res, res, 21), np.float32)
    for n in range(N):
        weights[tuple(coords[n])] = f[n, 32:53]

    # step 4: positions and colours of every grid vertex
    ii, jj, ll = torch.meshgrid(*(torch.arange(R1),) * 3, indexing="ij")
    ijk = torch.stack((ii, jj, ll), -1)
    pos = (ijk.float() / res - 0.5
           + (1 - 1e-8) / (2 * res) * torch.tanh(torch.from_numpy(attr[..., 1:4]))).numpy()
    col = torch.sigmoid(torch.from_numpy(attr[..., 4:10])).numpy() if use_color else None

    # steps 5-6: case of every cube
    inside = sdf < 0
    case = np.zeros((res, res, res), np.int64)
    for k, (ox, oy, oz) in enumerate(corners):
        case += inside[ox:ox + res, oy:oy + res, oz:oz + res].astype(np.int64) << k
    is_surf = (case > 0) & (case < 255)

    # step 7: ambiguity resolution on the original cases
    chk = T["check_table"]
    final = case.copy()
    replaced = 0
    for i, j, l in zip(*np.nonzero(is_surf)):
        flag, dx, dy, dz, alt = chk[case[i, j, l]]
        if flag != 1:
            continue
        a, b, c = i + dx, j + dy, l + dz
        if 0 <= a < res and 0 <= b < res and 0 <= c < res \
                and is_surf[a, b, c] and chk[case[a, b, c], 0] == 1:
            final[i, j, l] = alt
            replaced += 1

    # step 8: dual vertices, cubes ordered by (dual-vertex count, n), then table slot
    voxel_set = {tuple(c) for c in coords.tolist()}
    surf_cubes = [tuple(x) for x in zip(*np.nonzero(is_surf))]  # np.nonzero order = ascending n
    surf_cubes.sort(key=lambda c: T["num_vd_table"][final[c]])  # stable
    vid, verts, vcols, vgam = {}, [], [], []
    boundary_vertices = 0
    for c in surf_cubes:
        w = weights[c]
        beta = (0.99 * torch.tanh(torch.from_numpy(w[:12])) + 1).numpy()
        alpha = (0.99 * torch.tanh(torch.from_numpy(w[12:20])) + 1).numpy()
        gamma = (0.99 * torch.sigmoid(torch.from_numpy(w[20:21])) + 0.005).numpy()[0]
        cs = final[c]
        for slot in range(T["num_vd_table"][cs]):
            p_num, c_num, w_sum = np.zeros(3, f32), np.zeros(6, f32), f32(0)
            for e in T["dmc_table"][cs][slot]:
                if e < 0:
                    continue
                ka, kb = edge_pairs[e]
                va = tuple(np.array(c) + corners[ka])
                vb = tuple(np.array(c) + corners[kb])
                sa, sb = sdf[va] * alpha[ka], sdf[vb] * alpha[kb]
                assert (sdf[va] < 0) != (sdf[vb] < 0)
                p_num = p_num + beta[e] * ((pos[va] * sb - pos[vb] * sa) / (sb - sa))
                if use_color:
                    c_num = c_num + beta[e] * ((col[va] * sb - col[vb] * sa) / (sb - sa))
                w_sum = w_sum + beta[e]
            vid[(c, slot)] = len(verts)
            verts.append(p_num / w_sum)
            vcols.append(c_num / w_sum)
            vgam.append(gamma)
            boundary_vertices += c not in voxel_set

    # step 9: faces from interior surface edges
    offs = [tuple(o) for o in corners.tolist()]

    def owner(cube, p, q):  # dual vertex of `cube` owning grid edge p->q
        e = [k for k, (ka, kb) in enumerate(edge_pairs)
             if offs[ka] == tuple(np.subtract(p, cube)) and offs[kb] == tuple(np.subtract(q, cube))]
        assert len(e) == 1
        cs = final[cube]
        slots = [s for s in range(T["num_vd_table"][cs]) if e[0] in T["dmc_table"][cs][s]]
        assert len(slots) == 1
        return vid[(cube, slots[0])]

    flat = lambda v: (v[0] * R1 + v[1]) * R1 + v[2]
    grid_edges = []  # (first, second) endpoints
    for i in range(R1):
        for j in range(R1):
            for l in range(R1):
                if i < res:
                    grid_edges.append(((i, j, l), (i + 1, j, l)))
                if j < res:
                    grid_edges.append(((i, j + 1, l), (i, j, l)))  # y-edges point -y
                if l < res:
                    grid_edges.append(((i, j, l), (i, j, l + 1)))
    grid_edges.sort(key=lambda pq: (flat(pq[0]), flat(pq[1])))
    quads_pos, quads_neg = [], []
    for p, q in grid_edges:
        if inside[p] == inside[q]:
            continue
        lo = np.minimum(p, q)
        axis = int(np.nonzero(np.array(p) != np.array(q))[0][0])
        cubes = []
        for d1 in (0, 1):
            for d2 in (0, 1):
                d = [0, 0, 0]
                d[[1, 2, 0][axis]] = -d1  # the two axes other than the edge's, in some order
                d[[2, 0, 1][axis]] = -d2
                c = tuple(int(x) for x in lo + d)
                if all(0 <= x < res for x in c):
                    cubes.append(c)
        if len(cubes) != 4:
            continue
        cubes.sort(key=lambda c: (c[0] * res + c[1]) * res + c[2])
        q0, q1, q2, q3 = (owner(c, p, q) for c in cubes)
        if sdf[p] > 0:
            quads_pos.append((q0, q1, q3, q2))
        else:
            quads_neg.append((q2, q3, q1, q0))
    faces = []
    for Q in quads_pos + quads_neg:
        if vgam[Q[0]] * vgam[Q[2]] > vgam[Q[1]] * vgam[Q[3]]:
            faces += [(Q[0], Q[1], Q[2]), (Q[0], Q[2], Q[3])]
        else:
            faces += [(Q[0], Q[1], Q[3]), (Q[3], Q[1], Q[2])]

    V = torch.tensor(np.array(verts, np.float32).reshape(-1, 3))
    Fc = torch.tensor(np.array(faces, np.int64).reshape(-1, 3))
    A = torch.tensor(np.array(vcols, np.float32).reshape(-1, 6)) if use_color else None
    stats = dict(replaced=replaced, surface_cubes=len(surf_cubes), quads=len(faces) // 2,
                 boundary_vertices=boundary_vertices, zero_first=sum(
                     1 for p, q in grid_edges if inside[p] != inside[q] and sdf[p] == 0))
    return V, Fc, A, stats


# ----------------------------------------------------------------------------------------------
# Random inputs
# ----------------------------------------------------------------------------------------------
def random_case(seed, res, use_color=True):
    g = torch.Generator().manual_seed(seed)
    C = 101 if use_color else 53
    p = 0.1 + 0.5 * torch.rand((), generator=g).item()
    occ = torch.rand(res, res, res, generator=g) < p
    occ[0, :, :] |= torch.rand(res, res, generator=g) < 0.5    # make sure grid faces are touched
    occ[:, res - 1, :] |= torch.rand(res, res, generator=g) < 0.5
    coords = occ.nonzero()
    coords = coords[torch.randperm(len(coords), generator=g)]  # arbitrary input order
    N = len(coords)
    feats = torch.randn(N, C, generator=g)
    corner_pos = (coords[:, None, :] + load_tables()["cube_corners"]).float() / res - 0.5
    if seed % 2:  # smooth field: a noisy sphere (realistic surfaces)
        centre = torch.rand(3, generator=g) * 0.4 - 0.2
        sdf = (corner_pos - centre).norm(dim=-1) - 0.25
        feats[:, :8] = sdf + 0.03 * torch.randn(N, 8, generator=g)
    else:  # independent signs: many surface cubes, many ambiguous cases
        feats[:, :8] *= 0.5
    # exact zeros after the -1/res bias at a few grid vertices (sdf == 0 is outside, not > 0)
    key = ((corner_pos + 0.5) * res).round().long()
    key = (key[..., 0] * 7 + key[..., 1] * 3 + key[..., 2] * 5) % 11 == 0
    feats[:, :8][key] = 1.0 / res
    # some voxels with zero weights (like the defaults of boundary cubes)
    feats[torch.rand(N, generator=g) < 0.2, 32:53] = 0
    return coords.int(), feats


# (seed, res, use_color); odd seeds use a smooth sdf, even seeds independent random signs
CASES = [(0, 8, True), (1, 8, True), (2, 10, False), (3, 10, True), (4, 12, True), (5, 12, False),
         (6, 8, False), (7, 9, True), (8, 11, True), (9, 16, True), (10, 6, True), (11, 7, False)]


@pytest.fixture(scope="module")
def compared():
    """Runs sparse and dense on all CASES once; returns per-case stats."""
    out = []
    for seed, res, col in CASES:
        coords, feats = random_case(seed, res, col)
        m = extract_mesh(coords, feats, res, use_color=col)
        V, Fc, A, stats = dense_reference(coords, feats, res, col)
        out.append((seed, res, col, m, V, Fc, A, stats))
    return out


def test_sparse_matches_dense(compared):
    for seed, res, col, m, V, Fc, A, stats in compared:
        msg = f"seed {seed} res {res} colour {col}"
        assert stats["quads"] > 0, msg
        assert m.vertices.shape == V.shape, msg
        assert m.vertices.dtype == torch.float32 and m.faces.dtype == torch.int64
        torch.testing.assert_close(m.vertices, V, atol=1e-6, rtol=0, msg=msg)
        assert torch.equal(m.faces, Fc), msg
        if col:
            torch.testing.assert_close(m.vertex_attrs, A, atol=1e-6, rtol=0, msg=msg)
            assert m.vertex_attrs.shape == (V.shape[0], 6)
            assert 0 <= m.vertex_attrs.min() and m.vertex_attrs.max() <= 1
        else:
            assert m.vertex_attrs is None
        assert m.res == res and m.success
        assert m.face_normal.shape == (Fc.shape[0], 3, 3)


def test_test_data_exercises_corner_cases(compared):
    """The random cases must hit C16/C19 replacements, boundary cubes and sdf == 0 endpoints."""
    assert sum(c[-1]["replaced"] for c in compared) >= 10
    assert sum(c[-1]["replaced"] > 0 for c in compared) >= 4
    assert sum(c[-1]["boundary_vertices"] for c in compared) > 100
    assert sum(c[-1]["zero_first"] for c in compared) > 0


def test_ambiguity_changes_output():
    """Sanity of the replacement rule on a hand-made C16 pair: the two cubes sharing the
    ambiguous face both switch to their 2-vertex alternative."""
    T = load_tables()
    chk = T["check_table"]
    case = int(torch.nonzero(chk[:, 0] == 1)[0])  # a flagged case
    d = chk[case, 1:4]
    res = 4
    c0 = torch.tensor([1, 1, 1])
    c1 = c0 + d
    corners = T["cube_corners"]
    # sdf for cube c0 with pattern `case`; the neighbour must see a flagged case too
    sdf = {}
    for k in range(8):
        sdf[tuple((c0 + corners[k]).tolist())] = -1.0 if (case >> k) & 1 else 1.0
    for k in range(8):
        v = tuple((c1 + corners[k]).tolist())
        if v not in sdf:  # mirror the pattern across the shared face
            mirror = (c1 + corners[k]) - 2 * d
            sdf[v] = sdf[tuple(mirror.tolist())]
    coords = torch.stack([c0, c1]).int()
    feats = torch.zeros(2, 53)
    for n, c in enumerate((c0, c1)):
        for k in range(8):
            feats[n, k] = sdf[tuple((c + corners[k]).tolist())] + 1.0 / res
    V, Fc, A, stats = dense_reference(coords, feats, res, use_color=False)
    m = extract_mesh(coords, feats, res, use_color=False)
    assert stats["replaced"] == 2
    torch.testing.assert_close(m.vertices, V, atol=1e-6, rtol=0)
    assert torch.equal(m.faces, Fc)


# ----------------------------------------------------------------------------------------------
# §21.9 and table properties
# ----------------------------------------------------------------------------------------------
def ball(res, radius=0.3, use_color=True):
    T = load_tables()
    ijk = torch.stack(torch.meshgrid(*(torch.arange(res),) * 3, indexing="ij"), -1).view(-1, 3)
    centre = (ijk.float() + 0.5) / res - 0.5
    coords = ijk[centre.norm(dim=-1) < radius + 2.5 / res]
    corner = (coords[:, None, :] + T["cube_corners"]).float() / res - 0.5
    feats = torch.zeros(len(coords), 101 if use_color else 53)
    feats[:, :8] = corner.norm(dim=-1) - radius
    if use_color:
        feats[:, 53:] = torch.randn(len(coords), 48, generator=torch.Generator().manual_seed(0))
    return coords, feats


def test_ball_closed_and_outward():
    res = 32
    m = extract_mesh(*ball(res), res)
    assert m.success and m.faces.shape[0] > 1000
    # closed, consistently oriented: every directed edge once, every undirected edge twice
    f = m.faces
    directed = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    assert torch.unique(directed, dim=0).shape[0] == directed.shape[0]
    undirected = torch.unique(directed.sort(1).values, dim=0, return_counts=True)[1]
    assert bool((undirected == 2).all())
    assert torch.unique(f).numel() == m.vertices.shape[0]  # a ball uses every dual vertex
    centroid = m.vertices[f].mean(1)
    outward = (m.face_normal[:, 0] * centroid).sum(-1) > 0
    assert outward.float().mean() >= 0.99
    r = m.vertices.norm(dim=-1)
    assert (r - (0.3 + 1 / res)).abs().max() < 1.0 / res  # surface at radius + bias


def test_ball_matches_dense():
    res = 12
    coords, feats = ball(res, radius=0.25)
    m = extract_mesh(coords, feats, res)
    V, Fc, A, _ = dense_reference(coords, feats, res)
    torch.testing.assert_close(m.vertices, V, atol=1e-6, rtol=0)
    assert torch.equal(m.faces, Fc)
    torch.testing.assert_close(m.vertex_attrs, A, atol=1e-6, rtol=0)


def test_tables_each_surface_edge_owned_once():
    T = _tables_np()
    for case in range(256):
        inside = [(case >> k) & 1 for k in range(8)]
        surface = {e for e, (a, b) in enumerate(T["edge_pairs"]) if inside[a] != inside[b]}
        nvd = T["num_vd_table"][case]
        rows = T["dmc_table"][case]
        owned = [e for j in range(nvd) for e in rows[j] if e >= 0]
        assert sorted(owned) == sorted(surface), case   # exactly once each, nothing else
        assert all(len([e for e in rows[j] if e >= 0]) > 0 for j in range(nvd)), case
        assert (rows[nvd:] == -1).all(), case
        assert (nvd == 0) == (case in (0, 255))
    # replacement cases are complements with the same surface edges and one more dual vertex
    chk = T["check_table"]
    for case in np.nonzero(chk[:, 0] == 1)[0]:
        assert chk[case, 4] == 255 - case
        assert T["num_vd_table"][chk[case, 4]] == T["num_vd_table"][case] + 1
    # edge directions: x and z edges point +, y edges point -
    for e, (a, b) in enumerate(T["edge_pairs"]):
        d = T["cube_corners"][b] - T["cube_corners"][a]
        axis = T["edge_dir_table"][e]
        assert d[axis] == (-1 if axis == 1 else 1) and abs(d).sum() == 1


# ----------------------------------------------------------------------------------------------
# Edge cases
# ----------------------------------------------------------------------------------------------
def _assert_empty(m, use_color):
    assert m.vertices.shape == (0, 3) and m.vertices.dtype == torch.float32
    assert m.faces.shape == (0, 3) and m.faces.dtype == torch.int64
    assert m.face_normal.shape == (0, 3, 3)
    if use_color:
        assert m.vertex_attrs.shape == (0, 6)
    else:
        assert m.vertex_attrs is None
    assert not m.success


@pytest.mark.parametrize("use_color", [True, False])
def test_empty_and_all_outside(use_color):
    C = 101 if use_color else 53
    _assert_empty(extract_mesh(torch.zeros(0, 3, dtype=torch.int32), torch.zeros(0, C), 16,
                               use_color), use_color)
    coords, feats = random_case(3, 8, use_color)
    feats[:, :8] = feats[:, :8].abs() + 0.5
    _assert_empty(extract_mesh(coords, feats, 8, use_color), use_color)


def test_float16_input():
    coords, feats = random_case(4, 10, True)
    h = feats.half()
    m16 = extract_mesh(coords.long(), h, 10)
    m32 = extract_mesh(coords, h.float(), 10)
    assert m16.vertices.dtype == torch.float32 and m16.vertex_attrs.dtype == torch.float32
    assert torch.equal(m16.vertices, m32.vertices) and torch.equal(m16.faces, m32.faces)
    assert torch.equal(m16.vertex_attrs, m32.vertex_attrs)


def test_result_container():
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 2, 0]])
    r = MeshExtractResult(v, torch.tensor([[0, 1, 2]]), None, res=8)
    assert r.success and r.res == 8 and r.vertex_attrs is None
    torch.testing.assert_close(r.face_normal, torch.tensor([[[0.0, 0, 1]] * 3]))
    r2 = r.to("cpu")
    assert torch.equal(r2.faces, r.faces) and r2.success


def test_invariant_to_voxel_order():
    coords, feats = random_case(5, 10, True)
    perm = torch.randperm(len(coords), generator=torch.Generator().manual_seed(1))
    a, b = extract_mesh(coords, feats, 10), extract_mesh(coords[perm], feats[perm], 10)
    torch.testing.assert_close(a.vertices, b.vertices, atol=1e-6, rtol=0)
    assert torch.equal(a.faces, b.faces)


def test_speed_res256_smoke():
    """~20 k shell voxels at res 256 must run in a few seconds on CPU (no dense grids)."""
    res = 256
    ijk = torch.stack(torch.meshgrid(*(torch.arange(64),) * 3, indexing="ij"), -1).view(-1, 3) + 96
    centre = (ijk.float() + 0.5) / res - 0.5
    coords = ijk[(centre.norm(dim=-1) - 0.1).abs() < 1.0 / res]
    corner = (coords[:, None, :] + load_tables()["cube_corners"]).float() / res - 0.5
    feats = torch.randn(len(coords), 101)
    feats[:, :8] = corner.norm(dim=-1) - 0.1
    t = time.perf_counter()
    m = extract_mesh(coords, feats, res)
    assert time.perf_counter() - t < 10
    assert m.success and len(coords) > 5000


def test_cube_blocks_give_the_same_mesh(monkeypatch):
    """Step 8 runs over the surface cubes in blocks (CUBE_BLOCK, for memory): any block size gives the
    same faces and vertices (the sums run in the same order); colours within float rounding."""
    import trellis.representations.mesh.flexicubes as fc

    res = 32
    coords, feats = ball(res)
    feats[:, :53] += 0.05 * torch.randn(len(coords), 53, generator=torch.Generator().manual_seed(1))
    whole = extract_mesh(coords, feats, res)
    for block, face_block in ((1000, 5000), (7, 11)):
        monkeypatch.setattr(fc, "CUBE_BLOCK", block)
        monkeypatch.setattr(fc, "FACE_BLOCK", face_block)
        part = extract_mesh(coords, feats, res)
        assert torch.equal(part.faces, whole.faces)
        assert torch.equal(part.vertices, whole.vertices)
        assert torch.equal(part.face_normal, whole.face_normal)
        torch.testing.assert_close(part.vertex_attrs, whole.vertex_attrs, atol=1e-6, rtol=0)


def test_sort_path_matches_dense_grid_path(monkeypatch):
    """Steps 1-6 find the touched vertices and candidate cubes on dense lookup grids up to GRID_CELLS
    cells and by sorting above; both give the same mesh, bit for bit, and the sort path agrees with the
    dense reference (the grid path is what test_sparse_matches_dense checks)."""
    import trellis.representations.mesh.flexicubes as fc

    for seed, res, col in CASES[:6]:
        coords, feats = random_case(seed, res, col)
        grid = extract_mesh(coords, feats, res, use_color=col)
        monkeypatch.setattr(fc, "GRID_CELLS", 0)
        srt = extract_mesh(coords, feats, res, use_color=col)
        monkeypatch.setattr(fc, "GRID_CELLS", 1 << 25)
        assert torch.equal(grid.faces, srt.faces) and torch.equal(grid.vertices, srt.vertices)
        if col:
            assert torch.equal(grid.vertex_attrs, srt.vertex_attrs)
        V, Fc, A, _ = dense_reference(coords, feats, res, col)
        torch.testing.assert_close(srt.vertices, V, atol=1e-6, rtol=0)
        assert torch.equal(srt.faces, Fc)


# ----------------------------------------------------------------------------------------------
# Memory on a noisy field
# ----------------------------------------------------------------------------------------------
def scattered_noisy(res, seed=0, occupancy=0.08):
    """What a random-weight decoder gives on a scattered stage-1 structure: 4^3 blocks of voxels at ~8 %
    of the res/4 grid, random features (about 6 faces per voxel, 5x a smooth surface's)."""
    g = torch.Generator().manual_seed(seed)
    parents = (torch.rand(res // 4, res // 4, res // 4, generator=g) < occupancy).nonzero()
    offsets = torch.stack(torch.meshgrid(*(torch.arange(4),) * 3, indexing="ij"), -1).view(-1, 3)
    coords = (parents[:, None] * 4 + offsets).reshape(-1, 3)
    coords = coords[torch.randperm(len(coords), generator=g)]
    return coords.int(), torch.randn(len(coords), 101, generator=g)


def test_noisy_field_matches_dense():
    res = 32
    coords, feats = scattered_noisy(res)
    m = extract_mesh(coords, feats, res)
    V, Fc, A, _ = dense_reference(coords, feats, res)
    assert m.faces.shape[0] > 5 * len(coords)
    assert torch.equal(m.faces, Fc) and m.faces.dtype == torch.long
    torch.testing.assert_close(m.vertices, V, atol=1e-6, rtol=0)
    torch.testing.assert_close(m.vertex_attrs, A, atol=1e-6, rtol=0)


def test_noisy_field_peak_memory(monkeypatch):
    """On a noisy field the faces, their normals and the vertices are most of the extraction's memory
    (a 1.3 M-voxel res-256 field of random features: 8.6 M faces, result 640 MiB with the [F,3,3] normals).
    Blocks are made small next to this mesh, as the defaults are next to a full-size one; the peak of the
    live tensor storages made inside the call stays close to the result: measured 1.20x here (2.12x before
    quads were found per cube and faces and normals were written in blocks, which at full size was 1317
    MiB -> 661 MiB). The face normals are those of MeshExtractResult's plain computation, bit for bit, and kept
    as one [F,3] row per face behind the [F,3,3] view: the result shrank by 2/3 of its normals (here 4.82 ->
    1.61 MB) while the peak, reached before they are made, stayed 12.55 MB, so peak / result is 1.71x now."""
    import trellis.representations.mesh.flexicubes as fc
    from benchmarks.slat_memory_gpu import LiveStorages

    res = 64
    coords, feats = scattered_noisy(res)
    monkeypatch.setattr(fc, "CUBE_BLOCK", 1 << 12)
    monkeypatch.setattr(fc, "FACE_BLOCK", 1 << 14)
    load_tables()                                            # cached tables are not the call's memory
    with LiveStorages() as meter:
        m = extract_mesh(coords, feats, res)
    result = sum(t.untyped_storage().nbytes() for t in (m.vertices, m.vertex_attrs, m.faces, m.face_normal))
    assert m.face_normal.untyped_storage().nbytes() == m.faces.shape[0] * 3 * 4          # [F,3] float32 held
    assert m.faces.shape[0] > 5 * len(coords) > 100000
    assert meter.peak < 1.8 * result, (meter.peak, result)
    assert torch.equal(m.face_normal, MeshExtractResult.comp_face_normals(m.vertices, m.faces))
    monkeypatch.setattr(fc, "CUBE_BLOCK", 1 << 16)
    monkeypatch.setattr(fc, "FACE_BLOCK", 1 << 18)
    whole = extract_mesh(coords, feats, res)
    assert torch.equal(m.faces, whole.faces) and torch.equal(m.vertices, whole.vertices)


def test_block_sizes_follow_the_free_memory(monkeypatch):
    """_block_sizes: the smallest blocks on a CPU; on CUDA a quarter of what the process can still get
    (free memory under its cap + the allocator's idle cache), at most BLOCK_MEMORY_MAX, never below the
    smallest blocks (the device readings are stood in for: this box has no GPU)."""
    import trellis.core.device as dev
    import trellis.representations.mesh.flexicubes as fc

    assert fc._block_sizes(torch.device("cpu")) == (fc.CUBE_BLOCK, fc.FACE_BLOCK)
    cuda = torch.device("cuda", 0)
    for free, reserved, allocated, want in ((70 << 30, 0, 0, fc.BLOCK_MEMORY_MAX),      # an idle large card
                                            (600 << 20, 300 << 20, 200 << 20, (700 << 20) // 4),
                                            (10 << 20, 0, 0, 0)):                         # nearly full: smallest
        monkeypatch.setattr(dev, "free_device_memory", lambda d, free=free: free)
        monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d=None, r=reserved: r)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None, a=allocated: a)
        cube, face = fc._block_sizes(cuda)
        assert cube == max(fc.CUBE_BLOCK, want // fc.CUBE_BLOCK_BYTES)
        assert face == max(fc.FACE_BLOCK, want // fc.FACE_BLOCK_BYTES)
    assert fc.BLOCK_MEMORY_MAX // fc.CUBE_BLOCK_BYTES >= 16 * fc.CUBE_BLOCK    # an idle card: 16x fewer blocks
