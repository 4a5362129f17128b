"""Keep my mesh's bake along the normals (``trellis.export.bake.near_surface``): Gaussians that carry a mesh's look
but lie off it (as a look generated on its 64^3 voxels does) baked onto that mesh and its UVs.

The mesh is a bumpy ellipsoid in the voxeliser's frame with a latitude-longitude atlas; the Gaussians are flat discs on
it (the export tests' asset), coloured
with the pattern where they sit, then moved out along their normal by 1.5 voxels of 64^3. The bake along the normals
must give the pattern back where the mesh is, much closer than the bake from views (whose views each project the
offset surface onto the mesh shifted differently), and stay in the band it searches.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.asset import make_gaussians, pattern
from trellis.export import bake_onto_mesh
from trellis.export.bake.near_surface import (GaussianCells, bake_near_surface, composite_along_normals,
                                              texel_frames)
from trellis.export.uv.stats import uv_raster
from trellis.representations.gaussian import quaternion_to_matrix
from tests.helpers.threads import one_thread  # noqa: F401 (autouse: one torch thread here)

SIZE = 128
OFFSET = 1.5 / 64                  # the Gaussians' surface off the mesh: 1.5 voxels of the generation grid


def ellipsoid(n_lat: int = 24, n_lon: int = 48):
    """(vertices, faces, uvs) of a bumpy ellipsoid on a latitude-longitude grid, the seam's vertices doubled and the
    poles' rows of faces left out (their UVs would be slivers)."""
    lat, lon = np.linspace(0, np.pi, n_lat + 1), np.linspace(0, 2 * np.pi, n_lon + 1)
    t, p = np.meshgrid(lat, lon, indexing="ij")
    r = 1 + 0.08 * np.sin(3 * p) * np.sin(t) ** 2
    v = np.stack([0.30 * r * np.sin(t) * np.cos(p), 0.36 * r * np.sin(t) * np.sin(p), 0.5 * np.cos(t)], -1)
    uv = np.stack([0.01 + 0.98 * p / (2 * np.pi), 0.99 - 0.77 * t / np.pi], -1)
    idx = np.arange((n_lat + 1) * (n_lon + 1)).reshape(n_lat + 1, n_lon + 1)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    f = np.concatenate([np.stack([a, b, c], -1)[1:-1].reshape(-1, 3), np.stack([a, c, d], -1)[1:-1].reshape(-1, 3)])
    return v.reshape(-1, 3), f, uv.reshape(-1, 2)


@pytest.fixture(scope="module")
def scene():
    v, f, uv = ellipsoid()
    used = np.unique(f)
    lo, hi = v[used].min(0), v[used].max(0)
    shell = ((v - (lo + hi) / 2) / (hi - lo).max()).astype(np.float32)
    gs = make_gaussians(torch.from_numpy(shell), torch.from_numpy(f), n=20000, sigma=0.005)
    xyz = gs.get_xyz
    normal = quaternion_to_matrix(gs.get_rotation)[:, :, 2]
    normal = normal * torch.sign((normal * xyz).sum(-1, keepdim=True))       # outward: the ellipsoid is star-shaped
    gs.from_xyz(xyz + OFFSET * normal)
    # the pattern at each texel's point on the mesh, and the texels well inside the faces
    face_id, bary = uv_raster(f, uv, SIZE, with_bary=True)
    covered = (face_id > 0).float()[None, None]
    inside = -torch.nn.functional.max_pool2d(-covered, 3, 1, 1)[0, 0] > 0.5          # and its 8 neighbours
    points = (torch.from_numpy(shell)[torch.from_numpy(f)[(face_id - 1).clamp(min=0)]] * bary[..., None]).sum(-2)
    return {"vertices": shell, "faces": f, "uvs": uv, "gaussian": gs, "truth": pattern(points), "inside": inside}


def psnr(texture, scene) -> float:
    err = torch.from_numpy(texture).float() / 255 - scene["truth"]
    return float(-10 * torch.log10(err[scene["inside"]].square().mean()))


def test_the_bake_along_normals_finds_the_look_where_the_mesh_is(scene):
    # keep my mesh bakes along the normals by default; its mesh given 40 units tall and moved, as a file would be
    normals = bake_onto_mesh(scene["gaussian"], scene["vertices"] * 40 + 3, scene["faces"], scene["uvs"],
                             texture_size=SIZE, device="cpu")
    views = bake_onto_mesh(scene["gaussian"], scene["vertices"], scene["faces"], scene["uvs"], texture_size=SIZE,
                           nviews=8, render_resolution=128, device="cpu", bake="views")
    got, before = psnr(normals.texture, scene), psnr(views.texture, scene)
    info = normals.info
    print(f"\nPSNR against the pattern on the mesh: along normals {got:.2f} dB, from views {before:.2f} dB; {info}")
    assert normals.texture.shape == (SIZE, SIZE, 3) and normals.texture.dtype == np.uint8
    assert "observations" not in info and "observations" in views.info
    assert got >= before + 6.0 and got >= 34.0
    assert info["observed_share"] > 0.99
    assert abs(info["near_surface"]["mean_height_voxels"] - OFFSET * 64) < 0.2       # it found the offset surface
    assert {"bake", "inpaint"} <= set(info["seconds"])
    # the bake itself, on the mesh in the Gaussians' frame: the same texture up to the normalisation's rounding
    direct = bake_near_surface(scene["gaussian"], scene["vertices"], scene["faces"], scene["uvs"], SIZE)
    assert abs(psnr(direct, scene) - got) < 0.1


def test_the_band_bounds_the_search(scene):
    """A texel whose line meets no Gaussian within the band sees nothing: a band narrower than the offset finds
    nothing, and pairs are made in chunks of any size with the same result."""
    fr = texel_frames(scene["vertices"], scene["faces"], scene["uvs"], 32)
    cells = GaussianCells(scene["gaussian"], cell=0.03)        # 2 cells reach the band's ends and the reach beyond
    filt = torch.zeros_like(fr["area"])                        # no Mip filter: alpha is the Gaussians' own
    line = (cells, fr["point"], fr["normal"], filt)
    inner = composite_along_normals(*line, -OFFSET / 2, OFFSET / 2, 0.03, 2)
    assert float(inner[1].max()) < 0.05
    whole = composite_along_normals(*line, -2 * OFFSET, 2 * OFFSET, 0.03, 2)
    small = composite_along_normals(*line, -2 * OFFSET, 2 * OFFSET, 0.03, 2, pair_budget=20000)
    assert float((whole[1] > 0.05).float().mean()) > 0.99 and float(whole[1].mean()) > 0.5
    for a, b in zip(whole, small):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_radiance_field_is_refused(scene):
    with pytest.raises(TypeError, match="needs Gaussians"):
        bake_near_surface(object(), scene["vertices"], scene["faces"], scene["uvs"], 16)
