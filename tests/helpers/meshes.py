"""Small meshes for the export, renderer and voxel tests, as (vertices, faces) arrays: spheres (smooth, bumpy, noisy
with a hidden inner shell, a welded soup), a height-field sheet, nested cube shells."""
import math
import struct

import numpy as np
import torch


def icosphere(subdivisions, radius=0.45, center=(0.0, 0.0, 0.0)):
    """trimesh's icosphere as float64 vertices (moved to `center`) and int64 faces."""
    import trimesh           # here: the test modules skip without it (pytest.importorskip)

    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.asarray(m.vertices) + np.asarray(center), np.asarray(m.faces, dtype=np.int64)


def union(*meshes):
    """The meshes as one (vertices, faces): their arrays concatenated, faces renumbered."""
    vs, fs, n = [], [], 0
    for v, f in meshes:
        vs.append(v)
        fs.append(f + n)
        n += len(v)
    return np.concatenate(vs), np.concatenate(fs)


def bumpy_sphere(subdivisions=4, noise=0.0, seed=0):
    """A unit icosphere with smooth radial bumps (radius 0.75..1.25), plus Gaussian `noise` on the vertices:
    float32 vertices, int64 faces."""
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=subdivisions)
    v = np.asarray(s.vertices, np.float64)
    r = 1 + 0.15 * np.sin(5 * v[:, 0]) * np.cos(4 * v[:, 1]) + 0.1 * np.sin(7 * v[:, 2])
    v = v * r[:, None] + noise * np.random.default_rng(seed).normal(size=v.shape)
    return v.astype(np.float32), np.asarray(s.faces, np.int64)


def noisy_sphere_with_inner_shell(subdivisions=8, seed=0):
    """~1.4 M faces at subdivisions=8: a bumpy outer sphere and a hidden inner sphere."""
    v, f = icosphere(subdivisions, 0.45)
    rng = np.random.default_rng(seed)
    d = v / np.linalg.norm(v, axis=1, keepdims=True)
    bumps = 0.01 * np.sin(9 * d[:, 0]) * np.sin(7 * d[:, 1]) * np.sin(8 * d[:, 2])
    v = v * (1 + bumps / 0.45)[:, None] + rng.normal(scale=0.0005, size=v.shape)
    return union((v, f), icosphere(max(subdivisions - 2, 1), 0.25))


def duplicated_soup(seed=0):
    """A sphere as a triangle soup (every face its own corners) in shuffled vertex order, with -0.0 and 0.0
    coordinates on vertices that must merge, a few degenerate faces and float32 positions."""
    rng = np.random.default_rng(seed)
    v, f = icosphere(3)
    v = np.round(v.astype(np.float32) * 64) / 64           # many equal x / y values: the sort's later keys decide
    v[np.abs(v) < 1e-9] = 0.0
    soup = v[f].reshape(-1, 3).copy()
    zeros = np.argwhere(soup == 0.0)
    pick = zeros[rng.random(len(zeros)) < 0.5]
    soup[pick[:, 0], pick[:, 1]] = -0.0
    order = rng.permutation(len(soup))
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    faces = inverse[np.arange(len(soup)).reshape(-1, 3)]
    faces = np.concatenate([faces, faces[:5, [0, 0, 1]]])  # degenerate once merged
    return soup[order], faces


def uv_sphere(radius=0.5, n_lat=24, n_lon=48):
    """A latitude-longitude sphere (poles on z) as float32 vertex and int64 face tensors."""
    verts = [[0.0, 0.0, radius]]
    for a in range(1, n_lat):
        th = math.pi * a / n_lat
        for b in range(n_lon):
            ph = 2 * math.pi * b / n_lon
            verts.append([radius * math.sin(th) * math.cos(ph),
                          radius * math.sin(th) * math.sin(ph), radius * math.cos(th)])
    verts.append([0.0, 0.0, -radius])
    faces = []
    ring = lambda a, b: 1 + (a - 1) * n_lon + (b % n_lon)  # noqa: E731
    for b in range(n_lon):
        faces.append((0, ring(1, b), ring(1, b + 1)))
        faces.append((len(verts) - 1, ring(n_lat - 1, b + 1), ring(n_lat - 1, b)))
    for a in range(1, n_lat - 1):
        for b in range(n_lon):
            faces.append((ring(a, b), ring(a + 1, b), ring(a + 1, b + 1)))
            faces.append((ring(a, b), ring(a + 1, b + 1), ring(a, b + 1)))
    return torch.tensor(verts, dtype=torch.float32), torch.tensor(faces, dtype=torch.int64)


def plane(n: int, height):
    """A grid of n x n quads over [-0.4, 0.4]², z = height(x, y), normals up: (vertices, faces)."""
    x, y = np.meshgrid(np.linspace(-0.4, 0.4, n + 1), np.linspace(-0.4, 0.4, n + 1), indexing="ij")
    v = np.stack([x, y, height(x, y)], -1).reshape(-1, 3)
    i = np.arange(n)[:, None] * (n + 1) + np.arange(n)[None, :]
    i = i.reshape(-1)
    f = np.concatenate([np.stack([i, i + n + 1, i + n + 2], 1), np.stack([i, i + n + 2, i + 1], 1)])
    return v.astype(np.float32), f.astype(np.int64)


def wavy_sheet():
    """A gently waved square sheet of 24 x 24 quads, UV = its x, y: (vertices, faces, uvs), faces' centroids."""
    v, f = plane(24, lambda x, y: 0.02 * np.sin(6 * x) * np.cos(5 * y))
    return v, f, (v[:, :2] + 0.5).astype(np.float32), v[f].mean(1)


def nested_cubes(n: int) -> tuple:
    """(vertices, faces) of n nested cube shells, scaled 0.5 to 1: 12 n large triangles lying over one another."""
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], float) - 0.5
    f = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4], [1, 2, 6], [1, 6, 5], [2, 3, 7],
                  [2, 7, 6], [3, 0, 4], [3, 4, 7]])
    tris = np.concatenate([v[f] * s for s in np.linspace(0.5, 1, n)])
    return tris.reshape(-1, 3), np.arange(3 * len(tris)).reshape(-1, 3)


def nested_cubes_stl(n: int) -> bytes:
    """The binary STL of nested_cubes(n): 2 000 shells are 24 000 triangles in 1.2 MB."""
    tris = nested_cubes(n)[0].reshape(-1, 3, 3)
    rec = np.zeros(len(tris), [("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    rec["v"] = tris
    return b" " * 80 + struct.pack("<I", len(rec)) + rec.tobytes()


def to_clip(vertices, extrinsics, intrinsics, near=0.1, far=100.0):
    """Homogeneous clip-space positions [N, 4] of `vertices` [N, 3] through an OpenCV camera."""
    from trellis.renderers.cameras import projection_opencv

    full = projection_opencv(intrinsics, near, far) @ extrinsics
    vh = torch.cat([vertices, torch.ones_like(vertices[:, :1])], -1)
    return vh @ full.T
