"""A look baked onto the user's own mesh (trellis.export.keep_mesh): the model's vertices, faces and UVs kept bit for
bit, the texture measured against the known appearance, unusable UVs replaced, files that keep the vertices.

The model: a bumpy UV-mapped ellipsoid (an equirectangular layout, one seam, pole copies its faces do not use)
with a small tetrahedron hidden inside on its own UV islands, placed where a user's model would be (centred at
(3, -2, 5), 40 units tall, float32) plus one stray vertex no face uses far away. The Gaussians carry
test_export's colour pattern on the ellipsoid in the normalised frame the voxeliser gives this model.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers.asset import make_gaussians, pattern
from tests.helpers.gltf import validate_gltf
from trellis.core.axes import Z_UP_TO_Y_UP
from trellis.core.callbacks import Cancelled
from trellis.export import bake_onto_mesh, make_glb_mesh, save_glb, uv_usable
from trellis.export.assemble import NO_SPLIT_ANGLE, unsplit_normals, with_normals
from trellis.export.formats.gltf import plain_geometry
from trellis.export.keep_mesh import MAX_DEGENERATE_SHARE, MAX_OVERLAP_SHARE, UV_RANGE_TOLERANCE
from trellis.export.normals import split_vertex_normals
from trellis.export.uv.stats import uv_raster
from trellis.representations.voxels import used_in_unit_cube
from tests.helpers.threads import one_thread  # noqa: F401 (autouse: one torch thread here)

trimesh = pytest.importorskip("trimesh")

RES, TEXTURE, NVIEWS = 256, 256, 24
CHEAP = dict(texture_size=64, nviews=4, render_resolution=64, device="cpu")
SMALL = dict(texture_size=128, nviews=12, render_resolution=128, device="cpu")    # ~1 s a bake, most texels seen
UV_ROUND_TRIP = 2.0 ** -23       # glTF stores 1 - v in float32 and trimesh flips it back: one rounding each way


def ellipsoid(n_lat: int = 24, n_lon: int = 48):
    """(vertices, faces, uvs) of a bumpy ellipsoid: a latitude-longitude grid, closed, its UVs inside
    u [0.01, 0.99] x v [0.22, 0.99] (the seam's and the poles' vertices doubled, the poles' faces left out)."""
    lat, lon = np.linspace(0, np.pi, n_lat + 1), np.linspace(0, 2 * np.pi, n_lon + 1)
    t, p = np.meshgrid(lat, lon, indexing="ij")
    r = 1 + 0.08 * np.sin(3 * p) * np.sin(t) ** 2
    v = np.stack([0.30 * r * np.sin(t) * np.cos(p), 0.36 * r * np.sin(t) * np.sin(p), 0.5 * np.cos(t)], -1)
    uv = np.stack([0.01 + 0.98 * p / (2 * np.pi), 0.99 - 0.77 * t / np.pi], -1)
    idx = np.arange((n_lat + 1) * (n_lon + 1)).reshape(n_lat + 1, n_lon + 1)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    f = np.concatenate([np.stack([a, b, c], -1)[:-1].reshape(-1, 3), np.stack([a, c, d], -1)[1:].reshape(-1, 3)])
    return v.reshape(-1, 3), f, uv.reshape(-1, 2)


def hidden_tetrahedron(first: int):
    """(vertices, faces, uvs): a tetrahedron around the origin, each face its own UV island under v = 0.2."""
    corner = np.array([[0, 0, 0.08], [0.07, 0, -0.04], [-0.04, 0.06, -0.04], [-0.04, -0.06, -0.04]])
    v = corner[[0, 2, 1, 0, 3, 2, 0, 1, 3, 1, 2, 3]]
    uv = np.concatenate([[[x, 0.03], [x + 0.18, 0.03], [x + 0.09, 0.17]] for x in 0.05 + 0.23 * np.arange(4)])
    return v, first + np.arange(12).reshape(4, 3), uv


@pytest.fixture(scope="module")
def model():
    v, f, uv = ellipsoid()
    used = np.unique(f)
    lo, hi = v[used].min(0), v[used].max(0)
    shell = (v - (lo + hi) / 2) / (hi - lo).max()          # the frame the voxeliser gives it, computed here by hand
    tv, tf, tuv = hidden_tetrahedron(len(v))
    stray = np.array([[30.0, 30.0, 30.0]])                 # no face uses it: it must not stretch the box
    normalised = np.concatenate([shell, tv, stray])
    vertices = (normalised * 40 + [3, -2, 5]).astype(np.float32)
    return {"vertices": vertices, "faces": np.concatenate([f, tf]), "uvs": np.concatenate([uv, tuv, [[0.5, 0.5]]]),
            "normalised": normalised, "shell_faces": len(f),
            "gaussian": make_gaussians(torch.tensor(shell, dtype=torch.float32), torch.from_numpy(f))}


@pytest.fixture(scope="module")
def baked(model):
    calls = []
    # the bake from views (the bake along normals: test_keep_mesh_surface)
    out = bake_onto_mesh(model["gaussian"], model["vertices"], model["faces"], model["uvs"], bake="views",
                         texture_size=TEXTURE, nviews=NVIEWS, render_resolution=RES, device="cpu", debug=True,
                         progress=lambda *a: calls.append(a[0]))
    print(f"\nbake_onto_mesh ({NVIEWS} views {RES}², texture {TEXTURE}²): {out.info['seconds']}")
    return out, calls


def ideal_texture(model, points, faces, uvs, size):
    """(the pattern at each texel's point of the ellipsoid, mask of texels inside its faces eroded by one texel,
    mask of the tetrahedron's texels); ``points``: the vertices in the normalised frame."""
    face_id, bary = uv_raster(faces, uvs, size, with_bary=True)
    face_id, bary = face_id.numpy(), bary.numpy()
    points = (points[faces[np.maximum(face_id - 1, 0)]] * bary[..., None]).sum(-2)
    shell = torch.from_numpy((face_id > 0) & (face_id <= model["shell_faces"])).float()[None, None]
    inner = (-F.max_pool2d(-shell, 3, 1, 1))[0, 0].numpy() > 0.5
    return pattern(torch.from_numpy(points)).numpy(), inner, face_id > model["shell_faces"]


# ----------------------------------------------------------------------------- the bake


def test_the_normalised_frame_is_the_voxelisers(model):
    used, cube, faces = used_in_unit_cube(model["vertices"], model["faces"])
    assert len(used) == len(model["vertices"]) - 3           # the stray vertex and two unused pole copies
    np.testing.assert_allclose(cube, model["normalised"][used], atol=1.2e-6)   # clipped 1e-6 inside the cube
    np.testing.assert_array_equal(used[faces], model["faces"])


def test_kept_mesh_is_bit_equal_and_its_texture_matches_the_pattern(model, baked):
    out, calls = baked
    assert out.info["uv"] == "kept" and out.info["uv_stats"]["overlap_share"] == 0
    assert out.vertices.dtype == np.float32 and np.array_equal(out.vertices, model["vertices"])
    assert out.vertices is not model["vertices"]
    np.testing.assert_array_equal(out.faces, model["faces"])
    np.testing.assert_array_equal(out.uvs, model["uvs"])
    assert out.texture.shape == (TEXTURE, TEXTURE, 3) and out.texture.dtype == np.uint8
    ideal, inner, _ = ideal_texture(model, model["normalised"], model["faces"], model["uvs"], TEXTURE)
    err = (out.texture.astype(np.float64) / 255 - ideal)[inner]
    psnr = -10 * np.log10((err ** 2).mean())
    print(f"\nkept UVs: texture vs the pattern at {int(inner.sum())} texels: PSNR {psnr:.2f} dB")
    # Measured 39.3 dB; the same bake with the Gaussians 1 % of the object's size off (0.4 units here): 32.8 dB.
    assert psnr >= 37.0
    assert {"observe", "bake", "inpaint"} <= set(calls) and "uv_unwrap" not in calls
    for stage in ("normalise", "uv_check", "observe+accumulate", "bake+inpaint"):
        assert stage in out.info["seconds"]
    # the hidden tetrahedron's islands (~5 % of the atlas) are all that no view sees
    assert 0.9 < out.info["observed_share"] < 0.96 and out.info["observations"]["views"] == NVIEWS


def test_a_hidden_face_is_inpainted_not_black(model, baked):
    out, _ = baked
    _, _, hidden = ideal_texture(model, model["normalised"], model["faces"], model["uvs"], TEXTURE)
    assert hidden.sum() > 3000
    assert not out.info["observed_texels"][hidden].any()                     # no view reached it...
    assert (out.info["texture_before_inpaint"][hidden] == 0).all()           # ...so the bake left it black
    colour = out.texture[hidden].astype(np.float64)
    assert colour.max(axis=1).min() >= 60                                     # ...and the inpainting filled it
    observed = out.texture[out.info["observed_texels"]].astype(np.float64).mean(0)
    assert np.abs(colour.mean(0) - observed).max() < 40                      # with the surface's colours


def test_glb_keeps_positions_indices_and_uvs(model, baked, tmp_path):
    out, _ = baked
    path = out.save(tmp_path / "own.glb", crease_angle=NO_SPLIT_ANGLE)
    assert validate_gltf(path)["issues"]["numErrors"] == 0
    loaded = trimesh.load(path, process=False, force="mesh")
    # y up in the file: the exact turn of the model's float32 vertices, the stray one included
    np.testing.assert_array_equal(loaded.vertices, model["vertices"].astype(np.float64) @ Z_UP_TO_Y_UP)
    np.testing.assert_array_equal(loaded.faces, model["faces"])
    np.testing.assert_allclose(loaded.visual.uv, model["uvs"], rtol=0, atol=UV_ROUND_TRIP)
    assert loaded.vertex_normals.shape == loaded.vertices.shape
    # the default crease angle splits and drops vertices: 180 is what keeps them
    default = trimesh.load(out.save(tmp_path / "split.glb"), process=False, force="mesh")
    assert len(default.vertices) != len(model["vertices"])
    # the OBJ too (6 decimals of text, y up by default), read line by line: trimesh's reader drops unused vertices
    lines = open(out.save(tmp_path / "own.obj", crease_angle=NO_SPLIT_ANGLE)).read().splitlines()
    obj_v = np.array([[float(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("v ")])
    obj_f = np.array([[int(c.split("/")[0]) - 1 for c in ln.split()[1:]] for ln in lines if ln.startswith("f ")])
    np.testing.assert_allclose(obj_v, model["vertices"].astype(np.float64) @ Z_UP_TO_Y_UP, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(obj_f, model["faces"])
    assert sum(ln.startswith("vn ") for ln in lines) == len(model["vertices"])


def test_opt_bake_mode_keeps_the_mesh_too(model):
    out = bake_onto_mesh(model["gaussian"], model["vertices"], model["faces"], model["uvs"], bake_mode="opt",
                         steps=20, **CHEAP)
    assert out.info["uv"] == "kept" and np.array_equal(out.vertices, model["vertices"])
    assert out.texture.shape == (64, 64, 3) and out.texture.max() > 0


def mirrored(uvs):
    """The layout folded onto its left half: the ellipsoid's two sides share their texels."""
    out = uvs.copy()
    out[:, 0] = 0.5 - np.abs(out[:, 0] - 0.5)
    return out


@pytest.mark.parametrize("kind,reason", [("tiled", "outside [0, 1]"), ("mirrored", "covered twice"),
                                         ("none", "no UVs")])
def test_unusable_uvs_get_a_new_atlas(model, kind, reason):
    uvs = {"tiled": model["uvs"] + [1.0, 0.0], "mirrored": mirrored(model["uvs"]), "none": None}[kind]
    calls = []
    out = bake_onto_mesh(model["gaussian"], model["vertices"], model["faces"], uvs,
                         progress=lambda *a: calls.append(a[0]), **SMALL)
    assert out.info["uv"].startswith("new atlas: ") and reason in out.info["uv"], out.info["uv"]
    assert "uv_unwrap" in calls and out.info["uv_method"] in ("geometric", "xatlas", "charts")
    # the same triangles in the same order, corner for corner at the model's own float32 positions
    assert out.vertices.dtype == np.float32 and len(out.faces) == len(model["faces"])
    assert np.array_equal(out.vertices[out.faces], model["vertices"][model["faces"]])
    assert uv_usable(out.vertices, out.faces, out.uvs)[0]
    # the new atlas maps the look as well: the texture against the pattern at its texels
    points = (out.vertices.astype(np.float64) - [3, -2, 5]) / 40
    ideal, inner, _ = ideal_texture(model, points, out.faces, out.uvs, SMALL["texture_size"])
    psnr = -10 * np.log10(((out.texture.astype(np.float64) / 255 - ideal)[inner] ** 2).mean())
    print(f"\n{kind}: {out.info['uv']} ({out.info['uv_method']}): PSNR {psnr:.2f} dB at {int(inner.sum())} texels")
    # Measured 36.2 dB (the kept UVs at these settings: 35.7); the texture's mean colour everywhere: 13.7 dB.
    assert psnr >= 33.0


def test_cancel_stops_the_bake(model):
    with pytest.raises(Cancelled):
        bake_onto_mesh(model["gaussian"], model["vertices"], model["faces"], model["uvs"], cancel=lambda: True,
                       **CHEAP)


def test_bad_arguments_are_refused(model):
    with pytest.raises(TypeError, match="target_faces"):
        bake_onto_mesh(model["gaussian"], model["vertices"], model["faces"], model["uvs"], target_faces=100)
    with pytest.raises(ValueError, match="does not have"):
        bake_onto_mesh(model["gaussian"], model["vertices"], model["faces"] + 10_000, model["uvs"])
    with pytest.raises(ValueError, match="does not have"):
        uv_usable(model["vertices"], model["faces"] + 10_000, model["uvs"])


# ----------------------------------------------------------------------------- uv_usable


def grid(n: int = 10):
    """A flat n x n grid of quads over the unit square, UVs = its x, y."""
    x, y = np.meshgrid(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1), indexing="ij")
    v = np.stack([x, y, np.zeros_like(x)], -1).reshape(-1, 3)
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    f = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return v, f, v[:, :2].copy()


def test_uv_usable_accepts_a_clean_layout_and_says_why_not_otherwise():
    v, f, uv = grid()
    ok, reason, stats = uv_usable(v, f, uv)
    assert ok and reason == "usable" and stats["overlap_share"] == 0 and stats["degenerate_share"] == 0
    assert stats["texel_use"] > 0.99
    assert uv_usable(v, f, None)[:2] == (False, "the mesh has no UVs")
    assert not uv_usable(v, f, np.c_[uv, uv[:, :1]])[0]                      # (u, v, w)
    assert not uv_usable(v, f, uv[:-1])[0]                                   # one short
    nan = uv.copy()
    nan[5] = np.nan
    assert "not numbers" in uv_usable(v, f, nan)[1]
    assert "outside" in uv_usable(v, f, uv + [0.0, 1.0])[1]                 # a UDIM tile
    assert uv_usable(v, f, uv * (1 + 0.5 * UV_RANGE_TOLERANCE))[0]          # rounded a little past the edge
    assert not uv_usable(v, f, uv * (1 + 2 * UV_RANGE_TOLERANCE))[0]
    stray_v, stray_uv = np.r_[v, [[5.0, 5.0, 5.0]]], np.r_[uv, [[7.0, -3.0]]]
    assert uv_usable(stray_v, f, stray_uv)[0]                                # unused vertices are not judged


def with_quad(v, f, uv, corner, side, uv_corner, uv_side):
    """The mesh plus a separate square (its own 4 vertices) of ``side`` at ``corner`` (z = 1), its UVs a square of
    ``uv_side`` at ``uv_corner``."""
    sq = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    qv = np.c_[np.asarray(corner) + side * sq, np.ones(4)]
    n = len(v)
    quad_uv = np.asarray(uv_corner) + uv_side * sq
    return np.r_[v, qv], np.r_[f, [[n, n + 1, n + 2], [n, n + 2, n + 3]]], np.r_[uv, quad_uv]


def test_uv_usable_degenerate_share():
    v, f, uv = grid()
    ok, reason, stats = uv_usable(v, f, np.zeros_like(uv))
    assert not ok and stats["degenerate_share"] == 1.0 and "no UV area" in reason
    # a square whose UVs collapse to one point: 1 % of the surface passes, 3.8 % does not
    for side, usable in ((0.1, True), (0.2, False)):
        ok, reason, stats = uv_usable(*with_quad(v, f, uv, (2, 2), side, (0.3, 0.3), 0.0))
        assert stats["degenerate_share"] == pytest.approx(side ** 2 / (1 + side ** 2), rel=1e-4)
        assert ok == usable and (stats["degenerate_share"] <= MAX_DEGENERATE_SHARE) == usable, reason


def test_uv_usable_overlap_share():
    v, f, uv = grid()
    folded = uv.copy()
    folded[:, 0] = 0.5 - np.abs(uv[:, 0] - 0.5)                            # mirrored halves
    ok, reason, stats = uv_usable(v, f, folded)
    assert not ok and stats["overlap_share"] > 0.95 and "covered twice" in reason
    # a separate square stacked on the layout: 1 % of it passes, 9 % does not
    for side, usable in ((0.1, True), (0.3, False)):
        ok, _, stats = uv_usable(*with_quad(v, f, uv, (2, 2), side, (0.4, 0.4), side))
        assert stats["overlap_share"] == pytest.approx(side ** 2, rel=0.05)
        assert ok == usable and (stats["overlap_share"] <= MAX_OVERLAP_SHARE) == usable


# ----------------------------------------------------------------------------- files


def test_trimesh_reads_our_uvs_in_our_convention(tmp_path):
    # a texture of four coloured quadrants, each vertex's UV at the centre of one: v up, top row first
    colours = {"top_left": (255, 0, 0), "top_right": (0, 255, 0), "bottom_left": (0, 0, 255),
               "bottom_right": (255, 255, 255)}
    texture = np.zeros((8, 8, 3), np.uint8)
    texture[:4, :4], texture[:4, 4:] = colours["top_left"], colours["top_right"]
    texture[4:, :4], texture[4:, 4:] = colours["bottom_left"], colours["bottom_right"]
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    uv = np.array([[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]], np.float32)
    expected = [colours["bottom_left"], colours["bottom_right"], colours["top_right"], colours["top_left"]]
    f = np.array([[0, 1, 2], [0, 2, 3]])
    path = save_glb(make_glb_mesh(v, f, uv, texture, crease_angle=NO_SPLIT_ANGLE), tmp_path / "quadrants.glb")
    loaded = trimesh.load(path, process=False, force="mesh")
    np.testing.assert_allclose(loaded.visual.uv, uv, rtol=0, atol=UV_ROUND_TRIP)
    image = np.asarray(loaded.visual.material.baseColorTexture.convert("RGB"))
    s = image.shape[0]
    for (u, w), colour in zip(loaded.visual.uv, expected):
        assert tuple(image[int((1 - w) * s), int(u * s)]) == colour        # column u·S, row (1 − v)·S


def test_no_split_normals_keep_every_vertex():
    box = trimesh.creation.box()
    v, f = np.asarray(box.vertices), np.asarray(box.faces)
    assert len(split_vertex_normals(v, f, 60.0)[0]) == 24                    # a crease splits each corner in 3
    out_v, out_f, _, normals = with_normals(v, f, np.zeros((8, 2)), NO_SPLIT_ANGLE)
    np.testing.assert_array_equal(out_v, v)
    np.testing.assert_array_equal(out_f, f)
    np.testing.assert_allclose(normals, v / np.linalg.norm(v, axis=1, keepdims=True), atol=1e-12)
    assert len(plain_geometry(v, f, NO_SPLIT_ANGLE)[0]) == 8 and len(plain_geometry(v, f, 60.0)[0]) == 24
    # two tetrahedra touching at one vertex: split_vertex_normals splits it even at 180 degrees, this does not
    tet = trimesh.creation.box().vertices[[0, 3, 5, 6]]
    tf = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])
    pair_v = np.r_[tet, 2 * tet[0] - tet[1:]]
    second = np.where(tf == 0, 0, tf + 3)
    pair_f = np.r_[tf, second[:, ::-1]]
    assert len(split_vertex_normals(pair_v, pair_f, 180.0)[0]) == 8
    assert unsplit_normals(pair_v, pair_f).shape == (7, 3)
    # a double-sided square (each side its own vertices at the same positions): each side keeps its normal
    sq = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float64)
    sheet_v, sheet_f = np.r_[sq, sq], np.array([[0, 1, 2], [0, 2, 3], [4, 6, 5], [4, 7, 6]])
    n = unsplit_normals(sheet_v, sheet_f)
    np.testing.assert_allclose(n, [[0, 0, 1]] * 4 + [[0, 0, -1]] * 4, atol=1e-12)
