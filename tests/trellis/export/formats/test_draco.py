"""Draco-compressed GLB (trellis/export/formats/draco.py) from our own GLB writer, read back by the Khronos glTF
validator, by Google's draco3dgltf decoder (node, tests/js/draco_decode.js: an implementation other than the
encoder's) and by DracoPy; compared with the arrays the writer was given."""

import json

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from tests.helpers.asset import make_mesh
from tests.helpers.gltf import draco_decode, glb_json, validate_gltf
from trellis.core.axes import Z_UP_TO_Y_UP
from trellis.export.assemble import glb_bytes, make_glb_mesh
from trellis.export.formats.draco import EXTENSION, draco_glb, pack_glb, plain_glb, read_glb
from trellis.export.formats.gltf import glb_mesh
from trellis.export.uv.unwrap import unwrap_uv

BITS = dict(position_bits=14, uv_bits=12, normal_bits=10)


def texture(size: int) -> np.ndarray:
    """A smooth colour pattern, top row first."""
    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([np.sin(9 * x) * np.cos(7 * y), np.sin(5 * x + 4 * y), np.cos(11 * y - 3 * x)], -1)
    return ((rgb * 0.4 + 0.5) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def source():
    """A bumpy sphere (5 120 faces) unwrapped into charts: z-up vertices, faces, UVs."""
    v, f = make_mesh(4)
    v2, f2, uv, _ = unwrap_uv(v.numpy(), f.numpy(), method="charts", texture_size=256)
    return v2, f2, uv


@pytest.fixture(scope="module", params=["plain", "normal_map"])
def written(request, source, tmp_path_factory):
    """(the trimesh mesh our writer wrote, its GLB path, the Draco GLB path); "normal_map" adds TANGENT."""
    v, f, uv = source
    normal_map = None
    if request.param == "normal_map":
        normal_map = np.broadcast_to(np.array([128, 128, 255], np.uint8), (256, 256, 3)).copy()
    mesh = glb_mesh(v, f, uv, texture(256), texture_format="jpeg", normal_texture=normal_map)
    folder = tmp_path_factory.mktemp(request.param)
    plain, packed = folder / "plain.glb", folder / "draco.glb"
    plain.write_bytes(glb_bytes(mesh))
    packed.write_bytes(draco_glb(plain.read_bytes(), **BITS))
    return mesh, plain, packed


def written_arrays(mesh) -> dict:
    """The vertex arrays our writer put in the GLB, by glTF semantic (TEXCOORD_0 in glTF's v-down convention)."""
    out = {"POSITION": np.asarray(mesh.vertices, np.float64),
           "NORMAL": np.asarray(mesh.vertex_normals, np.float64),
           "TEXCOORD_0": np.asarray(mesh.visual.uv, np.float64) * [1, -1] + [0, 1]}
    if "TANGENT" in mesh.vertex_attributes:
        out["TANGENT"] = np.asarray(mesh.vertex_attributes["TANGENT"], np.float32).astype(np.float64)
    return out


def step(values: np.ndarray, bits: int) -> float:
    """Draco's quantisation step: the largest extent of the values over ``2**bits - 1``."""
    return float(np.ptp(values, axis=0).max()) / (2 ** bits - 1)


def test_the_draco_glb_passes_the_khronos_validator(written):
    mesh, plain, packed = written
    report = validate_gltf(packed)
    issues = report["issues"]
    assert issues["numErrors"] == 0, [m for m in issues["messages"] if m["severity"] == 0]
    assert issues["numWarnings"] == 0, [m for m in issues["messages"] if m["severity"] == 1]
    before, after = glb_json(plain), glb_json(packed)
    assert after["extensionsUsed"] == [EXTENSION] and after["extensionsRequired"] == [EXTENSION]
    (prim,) = after["meshes"][0]["primitives"]
    ext = prim["extensions"][EXTENSION]
    assert set(ext["attributes"]) == set(prim["attributes"]) == set(written_arrays(mesh))
    assert len(set(ext["attributes"].values())) == len(ext["attributes"])          # one unique id each
    for index in [prim["indices"], *prim["attributes"].values()]:
        acc = after["accessors"][index]
        assert "bufferView" not in acc and "byteOffset" not in acc, acc
    position = after["accessors"][prim["attributes"]["POSITION"]]
    low, high = np.asarray(position["min"]), np.asarray(position["max"])
    original = before["accessors"][before["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    tolerance = step(mesh.vertices, BITS["position_bits"])
    np.testing.assert_allclose(low, original["min"], atol=tolerance)
    np.testing.assert_allclose(high, original["max"], atol=tolerance)
    # the images are the same bytes; every view starts on 4 bytes; the buffer is the BIN chunk
    doc_a, bin_a = read_glb(plain.read_bytes())
    doc_b, bin_b = read_glb(packed.read_bytes())
    assert len(doc_b["images"]) == len(doc_a["images"]) >= 1

    def view_bytes(doc, binary, index):
        view = doc["bufferViews"][index]
        return binary[view.get("byteOffset", 0):view.get("byteOffset", 0) + view["byteLength"]]

    for image_a, image_b in zip(doc_a["images"], doc_b["images"]):
        assert view_bytes(doc_a, bin_a, image_a["bufferView"]) == view_bytes(doc_b, bin_b, image_b["bufferView"])
    assert all(view.get("byteOffset", 0) % 4 == 0 for view in doc_b["bufferViews"])
    assert doc_b["buffers"][0]["byteLength"] == len(bin_b)
    # only the images and the Draco buffer are left in the file
    assert len(doc_b["bufferViews"]) == len(doc_b["images"]) + 1


def matched_faces(corners_a: np.ndarray, corners_b: np.ndarray, tolerance: float) -> np.ndarray:
    """For each face of ``corners_b`` [F, 3, 3], its face in ``corners_a`` (by centroid; each used once)."""
    distance, match = cKDTree(corners_a.mean(1)).query(corners_b.mean(1))
    assert distance.max() <= tolerance, distance.max()
    assert len(np.unique(match)) == len(match)
    return match


def test_an_independent_decoder_reads_back_the_same_surface(written):
    mesh, _, packed = written
    info = glb_json(packed)
    (prim,) = info["meshes"][0]["primitives"]
    (decoded,) = draco_decode(packed)
    ext = prim["extensions"][EXTENSION]
    # the accessors describe the decoded geometry (the extension's rule), the ids name the attributes asked for
    assert decoded["numPoints"] == info["accessors"][prim["attributes"]["POSITION"]]["count"]
    assert 3 * decoded["numFaces"] == info["accessors"][prim["indices"]]["count"]
    assert decoded["numFaces"] == len(mesh.faces)
    assert {name: a["uniqueId"] for name, a in decoded["attributes"].items()} == ext["attributes"]
    faces = np.asarray(decoded["faces"]).reshape(-1, 3)
    assert faces.min() == 0 and faces.max() == decoded["numPoints"] - 1
    got = {name: np.asarray(a["values"], np.float64).reshape(decoded["numPoints"], a["components"])
           for name, a in decoded["attributes"].items()}
    want = written_arrays(mesh)

    # Same triangles: each decoded face has its written face, corner for corner in the same winding.
    position_error = step(want["POSITION"], BITS["position_bits"]) / 2 + 1e-6
    original_faces = np.asarray(mesh.faces)
    match = matched_faces(want["POSITION"][original_faces], got["POSITION"][faces], 3 ** 0.5 * position_error)
    source = original_faces[match]                            # the written vertex of each decoded corner ...
    turns = [np.abs(got["POSITION"][faces] - want["POSITION"][np.roll(source, -r, axis=1)]).max(axis=(1, 2))
             for r in range(3)]
    best = np.argmin(turns, axis=0)                          # ... up to a rotation of the corners, never a flip
    assert np.min(turns, axis=0).max() <= position_error
    rows = np.arange(len(faces))[:, None]
    source = source[rows, (np.arange(3)[None, :] + best[:, None]) % 3]
    areas = [np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
             for p in (got["POSITION"][faces], want["POSITION"][source])]
    np.testing.assert_allclose(areas[0], areas[1], rtol=1e-2, atol=1e-7)
    np.testing.assert_allclose(np.sort(areas[0]).sum(), np.sort(areas[1]).sum(), rtol=1e-4)

    def corner_values(name):
        return got[name][faces].reshape(-1, got[name].shape[1]), want[name][source].reshape(-1, got[name].shape[1])

    uv_got, uv_want = corner_values("TEXCOORD_0")
    assert np.abs(uv_got - uv_want).max() <= step(want["TEXCOORD_0"], BITS["uv_bits"]) / 2 + 1e-6
    n_got, n_want = corner_values("NORMAL")
    n_want = n_want / np.linalg.norm(n_want, axis=1, keepdims=True)
    angle = np.degrees(np.arccos(np.clip((n_got * n_want).sum(1) / np.linalg.norm(n_got, axis=1), -1, 1)))
    print(f"\nworst errors: position {np.min(turns, axis=0).max():.2e} (bound {position_error:.2e}), "
          f"UV {np.abs(uv_got - uv_want).max():.2e}, normal {angle.max():.3f} degrees")
    assert angle.max() < 0.5, angle.max()                     # 10-bit octahedral normals: ~0.2 degrees at worst
    if "TANGENT" in want:
        t_got, t_want = corner_values("TANGENT")
        np.testing.assert_array_equal(t_got, t_want)          # a generic attribute is stored losslessly


def test_dracopy_decodes_what_the_accessors_say(written):
    import DracoPy

    _, _, packed = written
    doc, binary = read_glb(packed.read_bytes())
    (prim,) = doc["meshes"][0]["primitives"]
    ext = prim["extensions"][EXTENSION]
    view = doc["bufferViews"][ext["bufferView"]]
    mesh = DracoPy.decode(binary[view["byteOffset"]:view["byteOffset"] + view["byteLength"]])
    by_id = {a["unique_id"]: a for a in mesh.attributes}
    for name, unique_id in ext["attributes"].items():
        acc = doc["accessors"][prim["attributes"][name]]
        data = np.asarray(by_id[unique_id]["data"])
        assert data.shape == (acc["count"], {"VEC2": 2, "VEC3": 3, "VEC4": 4}[acc["type"]]), name
        if "min" in acc:
            np.testing.assert_array_equal(data.min(0), np.asarray(acc["min"], np.float32))
            np.testing.assert_array_equal(data.max(0), np.asarray(acc["max"], np.float32))
    assert mesh.faces.size == doc["accessors"][prim["indices"]]["count"]


def test_the_geometry_is_several_times_smaller(written):
    """Measured on this 5 120-face mesh (3 701 vertices): geometry 179.9 kB -> 17.8 kB without tangents (0.10), 239 kB
    -> 78 kB with them (0.33: DracoPy stores TANGENT as raw float32); asserted with margin."""
    mesh, plain, packed = written
    doc_a, _ = read_glb(plain.read_bytes())
    doc_b, _ = read_glb(packed.read_bytes())
    images = sum(doc_a["bufferViews"][i["bufferView"]]["byteLength"] for i in doc_a["images"])
    geometry_a = sum(v["byteLength"] for v in doc_a["bufferViews"]) - images
    ext = doc_b["meshes"][0]["primitives"][0]["extensions"][EXTENSION]
    geometry_b = doc_b["bufferViews"][ext["bufferView"]]["byteLength"]
    limit = 0.4 if "TANGENT" in mesh.vertex_attributes else 0.15
    print(f"\ngeometry {geometry_a} -> {geometry_b} bytes ({geometry_b / geometry_a:.3f}); "
          f"file {plain.stat().st_size} -> {packed.stat().st_size}")
    assert geometry_b < limit * geometry_a
    assert packed.stat().st_size < plain.stat().st_size - 0.8 * (geometry_a - geometry_b)


def test_the_bits_reach_the_encoder(source):
    """Positions at 8 bits take at most 256 values per axis (Draco's grid), at 14 bits many more; the file shrinks."""
    import DracoPy

    v, f, uv = source
    data = glb_bytes(make_glb_mesh(v, f, uv, texture(64)))
    files = {bits: draco_glb(data, position_bits=bits, uv_bits=bits, normal_bits=min(bits, 10)) for bits in (8, 14)}
    assert len(files[8]) < 0.8 * len(files[14])
    for bits, packed in files.items():
        doc, binary = read_glb(packed)
        view = doc["bufferViews"][doc["meshes"][0]["primitives"][0]["extensions"][EXTENSION]["bufferView"]]
        points = DracoPy.decode(binary[view["byteOffset"]:view["byteOffset"] + view["byteLength"]]).points
        levels = max(len(np.unique(points[:, axis])) for axis in range(3))
        assert (levels <= 2 ** 8) == (bits == 8), (bits, levels)


def test_a_scene_whose_meshes_share_accessors(source, tmp_path):
    """trimesh writes an instanced geometry as two meshes reading the same accessors (encoded once, one Draco
    buffer) and lets two geometries with equal faces and UVs share those accessors (each then gets its own)."""
    v, f, uv = source
    scene = trimesh.Scene()
    first = make_glb_mesh(v, f, uv, texture(32), crease_angle=None)
    second = make_glb_mesh(np.asarray(v) * 0.5 + 1.0, f, uv, texture(32), crease_angle=None)
    scene.add_geometry(first, geom_name="a", node_name="a1")
    shift = trimesh.transformations.translation_matrix([2, 0, 0])
    scene.add_geometry(first, geom_name="a", node_name="a2", transform=shift)
    scene.add_geometry(second, geom_name="b", node_name="b1")
    plain, _ = read_glb(scene.export(file_type="glb"))
    a, a_again, b = (m["primitives"][0] for m in plain["meshes"])
    assert a == a_again and a["indices"] == b["indices"] and a["attributes"]["POSITION"] != b["attributes"]["POSITION"]
    path = tmp_path / "scene.glb"
    path.write_bytes(draco_glb(scene.export(file_type="glb")))
    report = validate_gltf(path)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:5]
    doc = glb_json(path)
    a, a_again, b = (m["primitives"][0] for m in doc["meshes"])
    assert a == a_again and a["indices"] != b["indices"]
    assert a["extensions"][EXTENSION]["bufferView"] != b["extensions"][EXTENSION]["bufferView"]
    decoded = draco_decode(path)
    assert [d["numFaces"] for d in decoded] == [len(f)] * 3
    for prim, d in zip((a, a_again, b), decoded):
        assert doc["accessors"][prim["attributes"]["POSITION"]]["count"] == d["numPoints"]
    low = [np.asarray(doc["accessors"][p["attributes"]["POSITION"]]["min"]) for p in (a, b)]
    np.testing.assert_allclose(low[1], low[0] * 0.5 + np.ones(3) @ Z_UP_TO_Y_UP, atol=1e-3)     # its own bounds


def tetrahedron_glb(indexed: bool, extra: dict | None = None, points_too: bool = False) -> bytes:
    """A hand-made GLB of a tetrahedron (POSITION only, or more attributes in ``extra``); ``points_too`` adds a
    POINTS primitive that reads the same POSITION accessor."""
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.uint16)
    if not indexed:
        points, faces = points[faces.ravel()], None
    arrays = {"POSITION": points, **(extra or {})}
    binary, views, accessors, attributes = b"", [], [], {}
    for name, array in arrays.items():
        views.append({"buffer": 0, "byteOffset": len(binary), "byteLength": array.nbytes})
        accessors.append({"bufferView": len(views) - 1, "componentType": 5126, "count": len(array),
                          "type": f"VEC{array.shape[1]}"})
        if name == "POSITION":
            accessors[-1].update(min=array.min(0).tolist(), max=array.max(0).tolist())
        attributes[name] = len(accessors) - 1
        binary += array.tobytes()
    prim = {"attributes": attributes, "mode": 4}
    if faces is not None:
        views.append({"buffer": 0, "byteOffset": len(binary), "byteLength": faces.nbytes})
        accessors.append({"bufferView": len(views) - 1, "componentType": 5123, "count": faces.size, "type": "SCALAR"})
        prim["indices"] = len(accessors) - 1
        binary += faces.tobytes()
    prims = [prim, {"attributes": {"POSITION": attributes["POSITION"]}, "mode": 0}] if points_too else [prim]
    doc = {"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
           "meshes": [{"primitives": prims}], "accessors": accessors, "bufferViews": views,
           "buffers": [{"byteLength": len(binary) + (-len(binary) % 4)}]}
    return pack_glb(doc, binary)


def test_a_primitive_without_indices_gets_the_decoded_ones(tmp_path):
    path = tmp_path / "tetra.glb"
    path.write_bytes(draco_glb(tetrahedron_glb(indexed=False)))
    assert validate_gltf(path)["issues"]["numErrors"] == 0
    doc = glb_json(path)
    prim = doc["meshes"][0]["primitives"][0]
    indices = doc["accessors"][prim["indices"]]
    assert indices["count"] == 12 and indices["componentType"] == 5123
    (decoded,) = draco_decode(path)
    assert decoded["numFaces"] == 4
    assert doc["accessors"][prim["attributes"]["POSITION"]]["count"] == decoded["numPoints"] == 4    # merged


def test_a_points_primitive_keeps_the_positions_it_shares(tmp_path):
    """The triangles get a copy of the POSITION accessor; the POINTS primitive still reads the original data."""
    plain = tetrahedron_glb(indexed=True, points_too=True)
    path = tmp_path / "tetra.glb"
    path.write_bytes(draco_glb(plain))
    report = validate_gltf(path)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:5]
    doc, binary = read_glb(path.read_bytes())
    triangles, points = doc["meshes"][0]["primitives"]
    assert EXTENSION in triangles["extensions"] and "extensions" not in points
    kept = doc["accessors"][points["attributes"]["POSITION"]]
    view = doc["bufferViews"][kept["bufferView"]]
    original_doc, original_binary = read_glb(plain)
    first = original_doc["bufferViews"][0]
    assert binary[view["byteOffset"]:view["byteOffset"] + view["byteLength"]] == original_binary[:first["byteLength"]]
    assert "bufferView" not in doc["accessors"][triangles["attributes"]["POSITION"]]
    (decoded,) = draco_decode(path)
    assert decoded["numFaces"] == 4


def test_what_cannot_be_compressed_is_refused():
    with pytest.raises(ValueError, match="COLOR_0"):
        draco_glb(tetrahedron_glb(True, {"COLOR_0": np.ones((4, 4), np.float32)}))
    for bad in (dict(position_bits=0), dict(uv_bits=31), dict(level=11), dict(normal_bits=7.5)):
        with pytest.raises(ValueError, match="must be an integer"):
            draco_glb(tetrahedron_glb(True), **bad)
    with pytest.raises(ValueError, match="binary glTF"):
        draco_glb(b"glTF" + bytes(16))


def test_a_file_without_triangles_comes_back_unchanged():
    data = trimesh.Scene(trimesh.PointCloud(np.random.default_rng(0).random((50, 3)))).export(file_type="glb")
    doc, _ = read_glb(data)
    assert [p.get("mode", 4) for m in doc["meshes"] for p in m["primitives"]] == [0]       # points
    assert draco_glb(data) == data


def test_plain_glb_gives_a_viewer_the_decoded_geometry_without_the_extension(written, tmp_path):
    """plain_glb (the page's 3D view of a Draco GLB: Gradio's viewer would fetch a decoder from the internet) is a
    valid GLB without the extension whose accessors hold what DracoPy decodes, its texture kept."""
    mesh, plain, packed = written
    back = tmp_path / "back.glb"
    back.write_bytes(plain_glb(packed.read_bytes()))
    report = validate_gltf(back)
    issues = report["issues"]
    assert issues["numErrors"] == 0, [m for m in issues["messages"] if m["severity"] == 0]
    doc = glb_json(back)
    assert EXTENSION not in json.dumps(doc)
    loaded = trimesh.load(back, force="mesh", process=False)
    assert len(loaded.faces) == len(mesh.faces)
    original = np.asarray(mesh.vertices)
    drift = cKDTree(original).query(np.asarray(loaded.vertices))[0].max()      # each decoded vertex near one of ours
    assert drift <= step(original, BITS["position_bits"]), drift
    assert loaded.visual.material.baseColorTexture is not None
    assert plain_glb(plain.read_bytes()) == plain.read_bytes()          # nothing to decode: unchanged
