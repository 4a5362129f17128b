"""No mirrored UV charts: every triangle's UVs wind the way the triangle does (``uv_winding``).

Measured by the Khronos 3D Commerce asset auditor's own test (``TriangleUv.calculateInverted`` of
@khronosgroup/gltf-asset-auditor 1.0.5, rewritten below): a triangle of a glTF file is "inverted" when its
stored TEXCOORD_0 (v down) winds counter-clockwise, in the order of its indices. tests/trellis/export/test_gltf_auditor.py
runs the auditor itself on a GLB of the tiny pipeline.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from trellis.export.uv.stats import atlas_stats
from trellis.export.uv.unwrap import unwrap_uv
from trellis.export.uv.winding import mirrored_faces, unmirror_charts, uv_charts
from trellis.utils.postprocessing_utils import to_glb

from tests.helpers.asset import make_gaussians, make_mesh
from tests.helpers.meshes import bumpy_sphere

trimesh = pytest.importorskip("trimesh")

SIZE = 512


def auditor_inverted(stored_uv, faces) -> np.ndarray:
    """The auditor's test on stored glTF UVs: isCounterClockwise(a, b, c) in (u, v down)."""
    a, b, c = (stored_uv[faces[:, k]].astype(np.float64) for k in range(3))
    return (c[:, 1] - a[:, 1]) * (b[:, 0] - a[:, 0]) > (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def read_glb_triangles(path):
    """(indices [F,3], TEXCOORD_0 as stored [V,2]) of the one primitive of a .glb, read with struct."""
    data = Path(path).read_bytes()
    json_len, _ = struct.unpack_from("<II", data, 12)
    doc = json.loads(data[20:20 + json_len])
    blob = data[28 + json_len:]
    (prim,) = doc["meshes"][0]["primitives"]

    def accessor(index, width):
        acc = doc["accessors"][index]
        view = doc["bufferViews"][acc["bufferView"]]
        dtype = {5126: np.float32, 5125: np.uint32, 5123: np.uint16}[acc["componentType"]]
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        return np.frombuffer(blob, dtype, acc["count"] * width, start).reshape(-1, width)

    faces = accessor(prim["indices"], 1).reshape(-1, 3).astype(np.int64)
    return faces, accessor(prim["attributes"]["TEXCOORD_0"], 2)


def test_mirrored_faces_is_the_auditors_inverted_test():
    rng = np.random.default_rng(0)
    uv = rng.random((300, 2))
    faces = rng.integers(0, 300, (1000, 3))
    stored = np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1)                  # what a glTF writer stores (v down)
    ours = mirrored_faces(faces, uv)
    assert 300 < ours.sum() < 700                                       # both windings present
    np.testing.assert_array_equal(ours, auditor_inverted(stored, faces))
    square = np.array([[0, 0], [1, 0], [0, 1]], np.float64)
    assert not mirrored_faces([[0, 1, 2]], square)[0] and mirrored_faces([[0, 2, 1]], square)[0]


def fan(center, radius, n, mirrored):
    """A disc chart of n triangles around ``center`` (UV units); wound clockwise when ``mirrored``."""
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    uv = np.vstack([center, center + radius * np.stack([np.cos(ang), np.sin(ang)], 1)])
    faces = np.stack([np.zeros(n, int), 1 + np.arange(n), 1 + (np.arange(n) + 1) % n], 1)
    return uv, (faces[:, [0, 2, 1]] if mirrored else faces)


@pytest.mark.parametrize("own_boxes", [False, True])
def test_unmirror_charts_turns_each_mirrored_chart_in_its_own_box(own_boxes):
    uv_a, f_a = fan([0.25, 0.3], 0.2, 7, mirrored=False)
    uv_b, f_b = fan([0.7, 0.6], 0.15, 5, mirrored=True)
    uv = np.vstack([uv_a, uv_b]).astype(np.float32)
    faces = np.vstack([f_a, f_b + len(uv_a)])
    assert mirrored_faces(faces, uv).sum() == len(f_b)
    info = {}
    out = unmirror_charts(faces, uv, SIZE, 2, info, own_boxes=own_boxes)
    assert info == {"mirrored": 1, "left": 0}
    assert not mirrored_faces(faces, out).any()
    np.testing.assert_array_equal(out[:len(uv_a)], uv[:len(uv_a)])      # the other chart is untouched
    b, ob = uv[len(uv_a):].astype(np.float64), out[len(uv_a):].astype(np.float64)
    np.testing.assert_allclose(ob.min(0), b.min(0), atol=1e-6)           # same box
    np.testing.assert_allclose(ob.max(0), b.max(0), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(ob[f_b] - ob[f_b[:, [1, 2, 0]]], axis=2),   # same shape
                               np.linalg.norm(b[f_b] - b[f_b[:, [1, 2, 0]]], axis=2), atol=1e-6)


def two_charts(other):
    """A mirrored right triangle in the lower left half of the texel box [40, 80]² of a 256² atlas, and
    another triangle ``other`` (texel corners, counter-clockwise)."""
    b = np.array([[40, 40], [40, 80], [80, 40]], np.float64)            # clockwise: mirrored
    uv = np.vstack([b, np.asarray(other, np.float64)]) / 256
    return np.array([[0, 1, 2], [3, 4, 5]]), uv.astype(np.float32)


def test_unmirror_charts_takes_the_mirror_that_keeps_charts_apart():
    # a chart reaching into the box's right side: mirrored across its width the triangle would cover it
    faces, uv = two_charts([[72, 56], [100, 48], [100, 68]])
    info = {}
    out = unmirror_charts(faces, uv, 256, 2, info)
    assert info == {"mirrored": 1, "left": 0} and not mirrored_faces(faces, out).any()
    np.testing.assert_array_equal(out[:3, 0], uv[:3, 0])                # mirrored across its height
    np.testing.assert_allclose(out[:3, 1] * 256, [80, 40, 80], atol=1e-4)
    np.testing.assert_array_equal(out[3:], uv[3:])
    assert atlas_stats(faces, out, 256)["overlap_texels"] == 0


def test_unmirror_charts_leaves_a_chart_that_no_mirror_can_place():
    # a chart at the box's upper right corner, which both mirrors cover
    faces, uv = two_charts([[76, 76], [90, 76], [76, 90]])
    info = {}
    out = unmirror_charts(faces, uv, 256, 2, info)
    assert info == {"mirrored": 1, "left": 1}
    np.testing.assert_array_equal(out, uv)


def test_uv_charts_are_the_vertex_connected_pieces():
    n, chart = uv_charts([[0, 1, 2], [2, 3, 0], [4, 5, 6], [6, 7, 8], [9, 10, 11]], 12)
    assert n == 3 and chart.tolist() == [0, 0, 1, 1, 2]


def meshes():
    torus = trimesh.creation.torus(0.35, 0.12, 64, 32)
    capsule = trimesh.creation.capsule(0.5, 0.25)
    return {"torus": (np.asarray(torus.vertices, np.float32), np.asarray(torus.faces)),
            "capsule": (np.asarray(capsule.vertices, np.float32), np.asarray(capsule.faces)),
            "noisy": bumpy_sphere(4, noise=0.01)}


@pytest.mark.parametrize("method", ["xatlas", "charts", "geometric"])
def test_unwrap_uv_lays_out_no_mirrored_triangle(method):
    for name, (v, f) in meshes().items():
        info = {}
        _, faces, uv, _ = unwrap_uv(v, f, method=method, texture_size=SIZE, info=info)
        assert info["method"] == method
        assert mirrored_faces(faces, uv).sum() == 0, name
        stats = atlas_stats(faces, uv, SIZE)
        assert stats["overlap_texels"] == 0 and stats["outside"] == 0, (name, stats)


@pytest.fixture(scope="module")
def glbs(tmp_path_factory):
    torch.manual_seed(0)
    v, f = make_mesh(2)
    gaussians = make_gaussians(v, f, n=2000, sigma=0.03)
    folder = tmp_path_factory.mktemp("winding")
    out = {}
    for method in ("xatlas", "geometric", "charts"):
        mesh = to_glb(gaussians, (v, f), simplify=0.0, fill_holes=False, texture_size=SIZE, verbose=False,
                      nviews=2, render_resolution=32, cg_iterations=0, uv_method=method)
        path = folder / f"{method}.glb"
        mesh.export(path)                                 # as the app writes it (desktop/jobs/folder.py)
        out[method] = (path, mesh.export_info["uv_method"])
    return out


@pytest.mark.parametrize("method", ["xatlas", "geometric", "charts"])
def test_glb_has_no_inverted_uv_triangle(glbs, method):
    path, used = glbs[method]
    assert used == method
    faces, stored = read_glb_triangles(path)
    assert len(faces) >= 300
    assert auditor_inverted(stored, faces).sum() == 0
