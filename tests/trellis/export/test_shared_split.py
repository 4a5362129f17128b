"""The normals' split made once for every file of a textured mesh (``normals.SharedSplit``): the GLB, OBJ and USDZ
written with it are the files written without it, and the split is made once however many files are written."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from trellis.export import TexturedMesh, assemble
from trellis.export import normals as normals_mod
from trellis.export.normals import SharedSplit, split_vertex_normals
from trellis.export.uv.unwrap import unwrap_uv

trimesh = pytest.importorskip("trimesh")


@pytest.fixture(scope="module")
def textured():
    """A bumpy box with a UV layout (seam copies) and a patterned texture: creases and seams both."""
    m = trimesh.creation.box(extents=(1.0, 0.6, 0.4))
    m = m.subdivide().subdivide()
    v = np.asarray(m.vertices, np.float32) * (1 + 0.05 * np.sin(7 * np.asarray(m.vertices, np.float32)))
    vv, ff, uv, _ = unwrap_uv(v, np.asarray(m.faces, np.int64), method="charts", texture_size=64)
    rng = np.random.default_rng(1)
    texture = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return TexturedMesh(vv, ff, uv, texture, {})


def written(textured, folder, **options) -> dict:
    out = {}
    for kind in ("glb", "obj"):
        path = textured.save(folder / f"m.{kind}", **options)
        out[kind] = open(path, "rb").read()
    return out


def count_splits(monkeypatch, *modules) -> list:
    """A list that gets one entry per ``split_vertex_normals`` call made through ``modules``' names for it."""
    calls = []
    real = normals_mod.split_vertex_normals

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)
    for module in modules:
        monkeypatch.setattr(module, "split_vertex_normals", counted)
    return calls


@pytest.mark.parametrize("options", [{}, {"height": 1.7, "pivot": "bottom", "units": "mm"}])
def test_files_with_the_shared_split_are_the_files_without(textured, tmp_path, options, monkeypatch):
    (tmp_path / "plain").mkdir()
    plain = written(textured, tmp_path / "plain", **options)
    calls = count_splits(monkeypatch, normals_mod, assemble)   # where the split is made, and where writers make it
    shared = TexturedMesh(*textured)
    shared.split = SharedSplit(textured.vertices, textured.faces).start()
    (tmp_path / "shared").mkdir()
    with_split = written(shared, tmp_path / "shared", **options)
    assert len(calls) == 1, "the GLB and the OBJ take the split made once"
    if not options:
        assert with_split == plain                   # bit for bit: the same arrays
        return
    # placed (scaled, moved, other units): the same split; the normals agree to rounding
    for kind in ("glb", "obj"):
        a = trimesh.load(tmp_path / "plain" / f"m.{kind}", force="mesh", process=False)
        b = trimesh.load(tmp_path / "shared" / f"m.{kind}", force="mesh", process=False)
        assert np.array_equal(a.faces, b.faces) and np.allclose(a.vertices, b.vertices)
        assert np.allclose(a.vertex_normals, b.vertex_normals, atol=1e-6)


def test_a_split_serves_only_its_own_faces_and_angle(textured):
    shared = SharedSplit(textured.vertices, textured.faces, 60.0)
    assert shared.for_faces(textured.faces.copy(), 60.0) is None          # other faces (e.g. a print solid's)
    assert shared.for_faces(textured.faces, 30.0) is None                  # another crease angle
    assert shared.for_faces(textured.faces, None) is None
    source, faces, normals = shared.for_faces(textured.faces, 60)
    want = split_vertex_normals(textured.vertices, textured.faces, 60.0)
    assert np.array_equal(source, want[0]) and np.array_equal(faces, want[1]) and np.array_equal(normals, want[2])


def test_the_bake_hands_its_files_the_split_of_its_mesh():
    """``bake_textured_mesh`` starts the split of the mesh it returns, at the export's crease angle (none where
    the files carry no split normals)."""
    import torch

    from tests.helpers.asset import make_gaussians, make_mesh
    from trellis.export.schedule import bake_textured_mesh

    torch.manual_seed(0)
    v, f = make_mesh(1)
    gaussians = make_gaussians(v, f, n=2000, sigma=0.03)
    small = dict(simplify=0.0, fill_holes=False, texture_size=64, verbose=False, nviews=2, render_resolution=32,
                 cg_iterations=0)
    out = bake_textured_mesh(gaussians, (v, f), crease_angle=45.0, **small)
    assert out.split.faces is out.faces and out.split.crease_angle == 45.0
    want = split_vertex_normals(out.vertices, out.faces, 45.0)
    assert all(np.array_equal(a, b) for a, b in zip(out.split.value(), want))
    assert len(out) == 6                                   # it unpacks to its arrays, as before
    again = pickle.loads(pickle.dumps(out))                # sent to another process: the split goes along
    assert again.split.for_faces(again.faces, 45.0) is not None
    assert bake_textured_mesh(gaussians, (v, f), crease_angle=180.0, **small).split is None


def test_a_normal_map_bake_and_its_files_make_the_split_once(tmp_path, monkeypatch):
    """With a normal map, its bake (the frames it is baked in) and the GLB and OBJ written after take one split."""
    import torch

    from tests.helpers.asset import make_gaussians, make_mesh
    from trellis.export.bake import normal_map as normal_map_mod
    from trellis.export.schedule import bake_textured_mesh

    calls = count_splits(monkeypatch, normals_mod, assemble, normal_map_mod)
    torch.manual_seed(0)
    v, f = make_mesh(1)
    out = bake_textured_mesh(make_gaussians(v, f, n=2000, sigma=0.03), (v, f), simplify=0.0, fill_holes=False,
                             texture_size=64, verbose=False, nviews=2, render_resolution=32, cg_iterations=0,
                             normal_map=True)
    assert out.normal_texture is not None
    for kind in ("glb", "obj"):
        out.save(tmp_path / f"m.{kind}")
    assert len(calls) == 1
