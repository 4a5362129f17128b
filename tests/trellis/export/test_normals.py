"""Vertex normals of the export (trellis/export/normals.py) and how the GLB / OBJ carry them."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from trellis.export.assemble import Z_UP_TO_Y_UP, make_glb_mesh, save_obj
from trellis.export.normals import DEFAULT_CREASE_ANGLE, split_vertex_normals

trimesh = pytest.importorskip("trimesh")


def unit_cube():
    """8 shared corners, 12 outward-wound triangles (no UV split): the crease split alone makes 24."""
    m = trimesh.creation.box()
    return np.asarray(m.vertices, np.float64), np.asarray(m.faces, np.int64)


def sphere(subdivisions=3):
    m = trimesh.creation.icosphere(subdivisions=subdivisions)
    return np.asarray(m.vertices, np.float64), np.asarray(m.faces, np.int64)


def cut_seam(v, f, chosen):
    """Give the ``chosen`` faces their own copies of their vertices, as a UV seam around them does."""
    v2, f2 = v.copy(), f.copy()
    inner = np.unique(f[chosen])
    copy = {int(i): len(v) + k for k, i in enumerate(inner)}
    v2 = np.concatenate([v, v[inner]])
    f2[chosen] = np.vectorize(copy.get)(f[chosen])
    return v2, f2


def folded_sheet(bend_deg, n=4):
    """A strip of 2n triangles folded along the x axis by ``bend_deg`` (the angle between the normals)."""
    xs = np.linspace(0.0, 1.0, n + 1)
    half = np.radians(bend_deg) / 2
    side_a = np.array([0.0, np.cos(half), -np.sin(half)])      # the two half-planes leave the fold here
    side_b = np.array([0.0, -np.cos(half), -np.sin(half)])
    rows = [np.stack([xs, 0 * xs, 0 * xs], 1), np.stack([xs, 0 * xs, 0 * xs], 1) + side_a,
            np.stack([xs, 0 * xs, 0 * xs], 1) + side_b]
    v = np.concatenate(rows)
    fold, a, b = 0, n + 1, 2 * (n + 1)
    faces = []
    for i in range(n):
        faces += [[fold + i, fold + i + 1, a + i], [a + i, fold + i + 1, a + i + 1]]
        faces += [[fold + i, b + i, fold + i + 1], [b + i, b + i + 1, fold + i + 1]]
    return v, np.array(faces, np.int64)


def face_unit_normals(v, f):
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def check_output(v, f, source, new_f, normals):
    """What holds for any output: same faces in the same order and winding, unit normals."""
    assert new_f.shape == f.shape
    np.testing.assert_array_equal(source[new_f], f)                  # each corner still names its vertex
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-12)
    assert np.all(np.diff(source) >= 0)
    assert len(np.unique(new_f)) == len(source)                       # every output vertex is used


# ----------------------------------------------------------------------------- the normals


def test_cube_gets_24_vertices_with_axis_normals():
    v, f = unit_cube()
    source, new_f, normals = split_vertex_normals(v, f)
    check_output(v, f, source, new_f, normals)
    assert len(source) == 24
    assert np.bincount(source).tolist() == [3] * 8                    # each corner: one copy per side
    np.testing.assert_allclose(np.abs(normals).max(axis=1), 1.0, atol=1e-12)  # axis directions
    # every corner of a face carries that face's normal, pointing away from the centre
    np.testing.assert_allclose(normals[new_f], np.repeat(face_unit_normals(v, f)[:, None], 3, 1), atol=1e-12)
    assert np.all(np.einsum("ij,ij->i", normals, v[source]) > 0)


def test_sphere_normals_are_smooth_and_radial():
    v, f = sphere(3)
    source, new_f, normals = split_vertex_normals(v, f)
    check_output(v, f, source, new_f, normals)
    np.testing.assert_array_equal(source, np.arange(len(v)))          # nothing split, order kept
    np.testing.assert_array_equal(new_f, f)
    radial = v / np.linalg.norm(v, axis=1, keepdims=True)
    angle = np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", normals, radial), -1, 1)))
    assert angle.max() < 0.5, angle.max()                             # measured: 0.08° at 642 vertices


def test_uv_seam_copies_share_one_smooth_normal():
    v, f = sphere(3)
    chosen = np.flatnonzero(v[f].mean(axis=1)[:, 0] > 0.2)
    seam_v, seam_f = cut_seam(v, f, chosen)
    origin = np.concatenate([np.arange(len(v)), np.unique(f[chosen])])   # seam vertex -> sphere vertex
    source, new_f, normals = split_vertex_normals(seam_v, seam_f)
    check_output(seam_v, seam_f, source, new_f, normals)
    np.testing.assert_array_equal(source, np.unique(seam_f))          # the seam adds no crease split
    # the copies on both sides of the seam have the normal the uncut sphere has there
    _, _, smooth = split_vertex_normals(v, f)
    np.testing.assert_allclose(normals[new_f], smooth[origin[seam_f]], atol=1e-12)


def test_crease_split_keeps_each_copys_uv():
    """UVs follow ``source``: a vertex split at a crease keeps its UV in every copy."""
    v, f = unit_cube()
    uv = np.random.default_rng(0).random((len(v), 2))
    source, new_f, _ = split_vertex_normals(v, f)
    new_uv = uv[source]
    np.testing.assert_array_equal(new_uv[new_f], uv[f])


@pytest.mark.parametrize("bend, split", [(30.0, False), (55.0, False), (65.0, True), (90.0, True),
                                         (170.0, True)])
def test_fold_splits_only_beyond_the_crease_angle(bend, split):
    v, f = folded_sheet(bend)
    source, new_f, normals = split_vertex_normals(v, f)
    check_output(v, f, source, new_f, normals)
    fold = np.flatnonzero(np.abs(v[:, 1:]).sum(axis=1) < 1e-12)      # the vertices on the fold line
    copies = np.bincount(source, minlength=len(v))
    assert (copies[fold] == (2 if split else 1)).all()
    on_fold = np.isin(source, fold)
    if split:
        # each side's copy has that side's face normal
        fn = face_unit_normals(v, f)
        np.testing.assert_allclose(normals[new_f], np.repeat(fn[:, None], 3, 1), atol=1e-12)
    else:
        # one smooth normal, halfway between the two sides (straight down the fold's bisector: +z)
        np.testing.assert_allclose(normals[on_fold], np.tile([0, 0, 1.0], (on_fold.sum(), 1)), atol=1e-12)


def test_thin_knife_edge_is_split():
    """A thin wedge (5°): its two long faces meet at 175°, far beyond the crease angle."""
    t = np.tan(np.radians(2.5))
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, t], [1, 1, t], [0, 1, -t], [1, 1, -t]], np.float64)
    f = np.array([[0, 1, 3], [0, 3, 2], [0, 4, 5], [0, 5, 1], [2, 3, 5], [2, 5, 4],
                  [0, 2, 4], [1, 5, 3]], np.int64)
    fn = face_unit_normals(v, f)
    assert np.all(np.einsum("ij,ij->i", fn, v[f].mean(1) - v.mean(0)) > 0)   # outward wound
    source, new_f, normals = split_vertex_normals(v, f)
    check_output(v, f, source, new_f, normals)
    edge = [0, 1]
    assert (np.bincount(source)[edge] == 3).all()                     # top, bottom, end cap
    top, bottom = normals[new_f[0, 0]], normals[new_f[2, 0]]
    assert np.degrees(np.arccos(np.clip(top @ bottom, -1, 1))) > 170


@pytest.mark.parametrize("make", [unit_cube, lambda: sphere(2),
                                  lambda: (trimesh.creation.cylinder(0.3, 1.0, sections=24).vertices,
                                           trimesh.creation.cylinder(0.3, 1.0, sections=24).faces),
                                  lambda: (trimesh.creation.capsule(1.0, 0.4).vertices,
                                           trimesh.creation.capsule(1.0, 0.4).faces)])
def test_normals_point_outward_on_closed_convex_meshes(make):
    v, f = (np.asarray(a) for a in make())
    v = v + np.array([3.0, -2.0, 1.0])                                # not at the origin
    source, new_f, normals = split_vertex_normals(v, f)
    check_output(v, f, source, new_f, normals)
    centre = v.mean(axis=0)
    assert np.all(np.einsum("ij,ij->i", normals, v[source] - centre) > 0)
    # and agree with each face they shade (within the crease angle of it)
    fn = face_unit_normals(v, f)
    cos = np.einsum("fkj,fj->fk", normals[new_f], fn)
    assert cos.min() > np.cos(np.radians(DEFAULT_CREASE_ANGLE))


def test_cylinder_side_is_smooth_and_its_rim_is_sharp():
    m = trimesh.creation.cylinder(0.3, 1.0, sections=24)
    v, f = np.asarray(m.vertices), np.asarray(m.faces)
    source, _, normals = split_vertex_normals(v, f)
    rim = np.abs(np.abs(v[:, 2]) - 0.5) < 1e-9
    rim &= np.hypot(v[:, 0], v[:, 1]) > 0.29
    assert (np.bincount(source, minlength=len(v))[rim] == 2).all()    # cap + side (bend 90°)
    side = np.abs(normals[:, 2]) < 1e-9
    radial = v[source][side, :2] / np.linalg.norm(v[source][side, :2], axis=1, keepdims=True)
    np.testing.assert_allclose(normals[side, :2], radial, atol=1e-9)  # 15° between sections: smooth


def test_angle_weighting_ignores_how_a_side_is_triangulated():
    """A cube corner smoothed (crease angle above 90°): its normal is the diagonal whether the top side
    is two triangles or a fan of 8 thin ones from that corner: each side counts with its 90° there."""
    v, f = unit_cube()
    corner = int(np.argmax(v.sum(axis=1)))                            # (+.5, +.5, +.5)
    fn = face_unit_normals(v, f)
    top = fn[:, 2] > 0.5
    # the fan's rim: the top square's two far edges, (.5,-.5) -> (-.5,-.5) -> (-.5,.5), 4 steps each
    rim = np.concatenate([np.linspace([0.5, -0.5, 0.5], [-0.5, -0.5, 0.5], 5)[:-1],
                          np.linspace([-0.5, -0.5, 0.5], [-0.5, 0.5, 0.5], 5)])
    fan_v = np.concatenate([v, rim])
    ids = np.arange(len(v), len(fan_v))
    fan = np.array([[corner, ids[i], ids[i + 1]] for i in range(len(rim) - 1)])
    fan_fn = face_unit_normals(fan_v, fan)
    fan[fan_fn[:, 2] < 0] = fan[fan_fn[:, 2] < 0][:, ::-1]           # wind them outward (+z)
    fan_f = np.concatenate([f[~top], fan])
    assert len(fan) == 8 and (face_unit_normals(fan_v, fan)[:, 2] > 0.999).all()
    for mesh_v, mesh_f in ((v, f), (fan_v, fan_f)):
        source, _, normals = split_vertex_normals(mesh_v, mesh_f, crease_angle=120.0)
        (at_corner,) = np.flatnonzero(source == corner)
        np.testing.assert_allclose(normals[at_corner], np.ones(3) / np.sqrt(3), atol=1e-12)


def test_faces_without_area_get_finite_unit_normals():
    v, f = sphere(1)
    v = np.concatenate([v, v[:1]])                                    # a copy of vertex 0 ...
    f = np.concatenate([f, [[0, len(v) - 1, 1]], [[2, 2, 3]]])       # ... a sliver of zero area, a collapsed edge
    source, new_f, normals = split_vertex_normals(v, f)
    check_output(v, f, source, new_f, normals)
    assert np.isfinite(normals).all()
    radial = v[source] / np.linalg.norm(v[source], axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", normals, radial).min() > 0.9


def test_empty_mesh():
    source, new_f, normals = split_vertex_normals(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    assert source.shape == (0,) and new_f.shape == (0, 3) and normals.shape == (0, 3)


@pytest.mark.parametrize("collide", [False, True])
def test_welded_points_are_numpys_unique_rows_named_by_their_first_vertex(collide, monkeypatch):
    """Rows equal under == (-0.0 is 0.0, a NaN equals nothing) share one id, their first vertex's; with every
    row's hash made equal, the rows are told apart by the whole-row sort instead."""
    from trellis.export import normals
    if collide:
        monkeypatch.setattr(normals, "_MIX", np.zeros(3, np.uint64))
    rng = np.random.default_rng(0)
    v = rng.integers(-2, 3, (400, 3)) / 2.0                   # a coarse grid: many rows repeat, many share x
    v[rng.random(v.shape) < 0.2] *= -1.0
    v[v == 0.0] *= rng.choice([1.0, -1.0], (v == 0.0).sum())   # zeros of both signs
    v[rng.random(v.shape) < 0.02] = np.nan
    _, label = np.unique(v, axis=0, return_inverse=True)
    first = {}
    expected = [first.setdefault(int(k), i) for i, k in enumerate(label.reshape(-1))]
    np.testing.assert_array_equal(normals.point_ids(v), expected)


# ----------------------------------------------------------------------------- in the files


def read_glb(path):
    """(JSON, binary chunk) of a .glb, read with the struct module: what any loader sees."""
    data = Path(path).read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF" and version == 2 and length == len(data)
    json_len, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A
    doc = json.loads(data[20:20 + json_len])
    bin_len, bin_type = struct.unpack_from("<II", data, 20 + json_len)
    assert bin_type == 0x004E4942
    return doc, data[28 + json_len:28 + json_len + bin_len]


def read_accessor(doc, blob, index):
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    assert acc["componentType"] == 5126                               # float32
    width = {"VEC2": 2, "VEC3": 3}[acc["type"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    return np.frombuffer(blob, np.float32, acc["count"] * width, start).reshape(-1, width)


def test_glb_carries_the_normals_we_computed(tmp_path):
    v, f = unit_cube()
    uv = np.random.default_rng(1).random((len(v), 2))
    mesh = make_glb_mesh(v, f, uv, np.zeros((8, 8, 3), np.uint8))
    path = tmp_path / "cube.glb"
    mesh.export(path)                                                 # as the app writes it
    source, new_f, normals = split_vertex_normals(v, f)
    doc, blob = read_glb(path)
    attributes = doc["meshes"][0]["primitives"][0]["attributes"]
    assert {"POSITION", "NORMAL", "TEXCOORD_0"} <= set(attributes)
    written = read_accessor(doc, blob, attributes["NORMAL"])
    np.testing.assert_allclose(written, normals @ Z_UP_TO_Y_UP, atol=1e-7)     # y up, like the positions
    np.testing.assert_allclose(read_accessor(doc, blob, attributes["POSITION"]), v[source] @ Z_UP_TO_Y_UP,
                               atol=1e-7)
    # trimesh reads them back as given (a scene keeps the file's normals; force="mesh" recomputes them)
    scene = trimesh.load(path, process=False)
    (loaded,) = scene.geometry.values()
    assert len(loaded.vertices) == 24 and len(loaded.faces) == 12
    np.testing.assert_allclose(loaded.vertex_normals, normals @ Z_UP_TO_Y_UP, atol=1e-7)
    np.testing.assert_allclose(loaded.visual.uv[np.asarray(loaded.faces)], uv[f], atol=1e-7)


def test_glb_normals_are_the_files_not_recomputed(tmp_path):
    """A sphere cut by a UV seam: trimesh, left to itself, would shade the seam (it joins faces by vertex
    index); what it loads from our file is smooth across it."""
    v, f = sphere(2)
    chosen = np.flatnonzero(v[f].mean(axis=1)[:, 0] > 0.2)
    seam_v, seam_f = cut_seam(v, f, chosen)
    mesh = make_glb_mesh(seam_v, seam_f, np.zeros((len(seam_v), 2)), np.zeros((4, 4, 3), np.uint8))
    path = tmp_path / "seam.glb"
    mesh.export(path)
    _, _, normals = split_vertex_normals(seam_v, seam_f)
    (loaded,) = trimesh.load(path, process=False).geometry.values()
    np.testing.assert_allclose(loaded.vertex_normals, normals @ Z_UP_TO_Y_UP, atol=1e-7)
    own = trimesh.Trimesh(loaded.vertices, loaded.faces, process=False).vertex_normals
    assert np.abs(own - loaded.vertex_normals).max() > 0.05         # so not recomputed on load
    radial = loaded.vertices / np.linalg.norm(loaded.vertices, axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", loaded.vertex_normals, radial).min() > np.cos(np.radians(3))


def test_no_normals_when_asked(tmp_path):
    v, f = unit_cube()
    mesh = make_glb_mesh(v, f, np.zeros((8, 2)), np.zeros((4, 4, 3), np.uint8), crease_angle=None)
    path = tmp_path / "flat.glb"
    mesh.export(path)
    doc, _ = read_glb(path)
    assert "NORMAL" not in doc["meshes"][0]["primitives"][0]["attributes"]
    assert len(mesh.vertices) == 8
    obj = save_obj(v, f, np.zeros((8, 2)), np.zeros((4, 4, 3), np.uint8), tmp_path / "flat.obj",
                   crease_angle=None)
    lines = Path(obj).read_text().splitlines()
    assert not any(ln.startswith("vn ") for ln in lines)
    assert all(c.count("/") == 1 for ln in lines if ln.startswith("f ") for c in ln.split()[1:])


def test_obj_carries_vn_and_faces_name_them(tmp_path):
    v, f = unit_cube()
    uv = np.random.default_rng(2).random((len(v), 2))
    path = save_obj(v, f, uv, np.zeros((4, 4, 3), np.uint8), tmp_path / "cube.obj")
    source, new_f, normals = split_vertex_normals(v, f)
    lines = Path(path).read_text().splitlines()
    vs = np.array([[float(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("v ")])
    vt = np.array([[float(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("vt ")])
    vn = np.array([[float(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("vn ")])
    faces = [ln.split()[1:] for ln in lines if ln.startswith("f ")]
    assert len(vs) == len(vt) == len(vn) == 24 and len(faces) == 12
    for corners, want in zip(faces, new_f + 1):
        triples = [tuple(int(i) for i in c.split("/")) for c in corners]
        assert triples == [(i, i, i) for i in want]
    np.testing.assert_allclose(vn, normals @ Z_UP_TO_Y_UP, atol=1e-6)
    np.testing.assert_allclose(vt, uv[source], atol=1e-6)
    np.testing.assert_allclose(vs, v[source] @ Z_UP_TO_Y_UP, atol=1e-6)
    loaded = trimesh.load(path, process=False, force="mesh")
    assert len(loaded.vertices) == 24
    np.testing.assert_allclose(loaded.vertex_normals, normals @ Z_UP_TO_Y_UP, atol=1e-6)


def _zlib_level_flag(png: bytes) -> int:
    """The FLEVEL bits of the zlib stream in a PNG's first IDAT chunk (0: fastest ... 2: default, 3: best)."""
    import struct

    pos = 8
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        if kind == b"IDAT":
            cmf, flg = png[pos + 8], png[pos + 9]
            assert cmf & 0x0F == 8 and (cmf * 256 + flg) % 31 == 0       # a deflate zlib header
            return flg >> 6
        pos += 12 + length
    raise AssertionError("no IDAT chunk")


def test_texture_png_is_written_fast_and_lossless(tmp_path):
    """The GLB's and the OBJ's texture PNG are compressed at zlib's fastest level (writing a 1024² texture at
    PIL's default level took ~0.6 s of the export) and decode to the exact texels."""
    import io

    from PIL import Image

    v, f = unit_cube()
    rng = np.random.default_rng(4)
    texture = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    texture[:32] = 200                                   # some compressible content
    glb = tmp_path / "t.glb"
    make_glb_mesh(v, f, np.zeros((len(v), 2)), texture).export(glb)
    doc, blob = read_glb(glb)
    view = doc["bufferViews"][doc["images"][0]["bufferView"]]
    png = blob[view.get("byteOffset", 0):view.get("byteOffset", 0) + view["byteLength"]]
    assert _zlib_level_flag(png) == 0
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), texture)
    save_obj(v, f, np.zeros((len(v), 2)), texture, tmp_path / "m.obj")
    png = (tmp_path / "m.png").read_bytes()
    assert _zlib_level_flag(png) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "m.png").convert("RGB")), texture)


def test_obj_text_is_numpys_savetxt_text(tmp_path):
    """The OBJ lines (written a chunk of rows per format operation) are exactly what np.savetxt writes for the
    same rows, across chunk borders too."""
    import io

    from trellis.export import assemble

    rng = np.random.default_rng(2)
    rows_f = rng.random((1000, 3)) * 2 - 1
    rows_i = rng.integers(1, 10 ** 6, (1000, 9))
    for line, rows in (("v %.6f %.6f %.6f\n", rows_f), ("f %d/%d/%d %d/%d/%d %d/%d/%d\n", rows_i)):
        ours, numpys = io.StringIO(), io.StringIO()
        assemble.write_rows(ours, line, rows, chunk=300)
        np.savetxt(numpys, rows, fmt=line[:-1])
        assert ours.getvalue() == numpys.getvalue()
    v, f = sphere(2)
    obj = save_obj(v, f, rng.random((len(v), 2)), np.zeros((4, 4, 3), np.uint8), tmp_path / "s.obj")
    loaded = trimesh.load(obj, process=False, force="mesh")
    assert len(loaded.faces) == len(f)
