"""gltf_scene's reader of a glTF's values, shared by the app's submit-time mesh check and the Draco writer:
read_glb (the JSON and the BIN chunk), file_buffers (a GLB's chunk, data: URIs), accessor_values (a strided view
of the bytes, every component type, AccessorError for what it does not read) and placed_meshes (the meshes the
chosen scene places, each once). Files come from trimesh, from our GLB exporter and, for what exporters rarely
write (interleaved views, data: URIs, sparse accessors), from JSON built here."""
import base64
import json
import struct

import numpy as np
import pytest
import trimesh

from tests.helpers.gltf import glb
from trellis.export.assemble import glb_bytes
from trellis.export.formats.draco import draco_glb, plain_glb
from trellis.export.formats.gltf import glb_mesh
from trellis.representations.gltf_scene import (AccessorError, GltfError, accessor_values, file_buffers, glb_binary,
                                                placed_meshes, read_glb, read_json)

TETRA = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
TETRA_FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.uint16)


def values_of(data: bytes, index: int) -> np.ndarray:
    doc, binary = read_glb(data)
    return accessor_values(doc, file_buffers(doc, binary), index)


def interleaved_doc() -> tuple:
    """(JSON, binary) of the tetrahedron with positions and normals interleaved in one view (24-byte stride), an
    RGBA uint8 normalized colour in a view of its own (4-byte stride, after a 2-byte pad) and uint16 indices."""
    normals = TETRA / np.maximum(np.linalg.norm(TETRA, axis=1, keepdims=True), 1e-9)
    rows = np.concatenate([TETRA, normals], axis=1).astype(np.float32)
    colours = np.array([[255, 0, 0, 255], [0, 255, 0, 128], [0, 0, 255, 0], [10, 20, 30, 40]], np.uint8)
    index = TETRA_FACES.tobytes()
    binary = rows.tobytes() + b"\0\0" + colours.tobytes() + index
    doc = {"asset": {"version": "2.0"}, "buffers": [{"byteLength": len(binary)}],
           "bufferViews": [{"buffer": 0, "byteLength": rows.nbytes, "byteStride": 24, "target": 34962},
                           {"buffer": 0, "byteOffset": rows.nbytes + 2, "byteLength": 16, "byteStride": 4},
                           {"buffer": 0, "byteOffset": rows.nbytes + 18, "byteLength": len(index)}],
           "accessors": [{"bufferView": 0, "componentType": 5126, "count": 4, "type": "VEC3",
                          "min": [0, 0, 0], "max": [1, 1, 1]},
                         {"bufferView": 0, "byteOffset": 12, "componentType": 5126, "count": 4, "type": "VEC3"},
                         {"bufferView": 1, "componentType": 5121, "normalized": True, "count": 4, "type": "VEC4"},
                         {"bufferView": 2, "componentType": 5123, "count": 12, "type": "SCALAR"}],
           "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "NORMAL": 1, "COLOR_0": 2}, "indices": 3}]}],
           "nodes": [{"mesh": 0}], "scenes": [{"nodes": [0]}], "scene": 0}
    return doc, binary, normals, colours


# ------------------------------------------------------------------------------------------ files as exporters write

def test_a_trimesh_glb_reads_back_what_trimesh_wrote():
    box, ball = trimesh.creation.box(), trimesh.creation.icosphere(1)
    scene = trimesh.Scene()
    scene.add_geometry(box, geom_name="box", node_name="box")
    scene.add_geometry(ball, geom_name="ball", node_name="ball")
    data = scene.export(file_type="glb")
    doc, binary = read_glb(data)
    buffers = file_buffers(doc, binary)
    assert placed_meshes(doc) == [0, 1]
    for m, mesh in zip(placed_meshes(doc), (box, ball)):
        (prim,) = doc["meshes"][m]["primitives"]
        positions = accessor_values(doc, buffers, prim["attributes"]["POSITION"])
        faces = accessor_values(doc, buffers, prim["indices"])
        assert positions.dtype == np.float32 and positions.shape == (len(mesh.vertices), 3)
        np.testing.assert_array_equal(positions, mesh.vertices.astype(np.float32))
        assert faces.dtype == np.uint32 and faces.shape == (3 * len(mesh.faces), 1)
        np.testing.assert_array_equal(faces.reshape(-1, 3), mesh.faces)
        assert not positions.flags.writeable and not positions.flags.owndata      # a view of the file's bytes


def test_our_exporters_glb_reads_back_within_its_declared_bounds():
    sphere = trimesh.creation.icosphere(subdivisions=2)
    uv = np.stack([sphere.vertices[:, 0] * 0.5 + 0.5, sphere.vertices[:, 1] * 0.5 + 0.5], axis=1)
    data = glb_bytes(glb_mesh(sphere.vertices, sphere.faces, uv, np.full((8, 8, 3), 200, np.uint8)))
    doc, binary = read_glb(data)
    buffers = file_buffers(doc, binary)
    (prim,) = doc["meshes"][placed_meshes(doc)[0]]["primitives"]
    attrs = prim["attributes"]
    positions = accessor_values(doc, buffers, attrs["POSITION"])
    declared = doc["accessors"][attrs["POSITION"]]
    np.testing.assert_allclose(positions.min(axis=0), declared["min"], atol=1e-6)
    np.testing.assert_allclose(positions.max(axis=0), declared["max"], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(positions, axis=1), 1.0, atol=1e-5)     # the unit sphere, turned
    normals = accessor_values(doc, buffers, attrs["NORMAL"])
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-4)
    uvs = accessor_values(doc, buffers, attrs["TEXCOORD_0"])
    assert uvs.shape == (len(positions), 2) and uvs.min() >= 0 and uvs.max() <= 1
    faces = accessor_values(doc, buffers, prim["indices"]).reshape(-1, 3)
    assert len(faces) == len(sphere.faces) and faces.max() == len(positions) - 1


# ------------------------------------------------------------------------------------------ strides, types, URIs

def test_interleaved_views_and_integer_components_read_as_stored():
    doc, binary, normals, colours = interleaved_doc()
    data = glb(doc, binary)
    np.testing.assert_array_equal(values_of(data, 0), TETRA)
    np.testing.assert_allclose(values_of(data, 1), normals, rtol=1e-6)
    rgba = values_of(data, 2)
    assert rgba.dtype == np.uint8 and rgba.strides == (4, 1)
    np.testing.assert_array_equal(rgba, colours)                     # normalized: the stored bytes, not 0..1
    indices = values_of(data, 3)
    assert indices.dtype == np.uint16
    np.testing.assert_array_equal(indices.reshape(-1, 3), TETRA_FACES)


def test_draco_compresses_an_interleaved_glb_through_the_shared_reader():
    doc, binary, _, _ = interleaved_doc()
    doc["meshes"][0]["primitives"][0]["attributes"].pop("COLOR_0")     # Draco is written for four attributes
    back = plain_glb(draco_glb(glb(doc, binary)))
    out, out_binary = read_glb(back)
    prim = out["meshes"][0]["primitives"][0]
    buffers = file_buffers(out, out_binary)
    positions = accessor_values(out, buffers, prim["attributes"]["POSITION"])
    faces = accessor_values(out, buffers, prim["indices"]).reshape(-1, 3)
    assert len(faces) == 4
    triangles = {tuple(sorted(map(tuple, np.round(positions[f], 3)))) for f in faces}
    assert triangles == {tuple(sorted(map(tuple, TETRA[f].astype(np.float64)))) for f in TETRA_FACES}


def test_a_gltf_with_a_data_uri_reads_like_the_glb():
    doc, binary, normals, _ = interleaved_doc()
    doc["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(binary).decode()
    doc = read_json(json.dumps(doc).encode())
    buffers = file_buffers(doc, None)
    assert buffers == [binary]
    np.testing.assert_allclose(accessor_values(doc, buffers, 1), normals, rtol=1e-6)
    doc["buffers"][0]["uri"] = "tetra.bin"                            # another file's bytes: not this reader's
    assert file_buffers(doc, None) == [None]
    with pytest.raises(AccessorError, match="accessor 1 reads buffer 0, which this file does not hold"):
        accessor_values(doc, file_buffers(doc, None), 1)


def test_an_empty_accessor_is_an_empty_array():
    doc, binary, _, _ = interleaved_doc()
    doc["accessors"][0]["count"] = 0
    assert accessor_values(doc, [binary], 0).shape == (0, 3)


def _sparse(doc):
    doc["accessors"][0]["sparse"] = {"count": 1, "indices": {"bufferView": 2, "componentType": 5123},
                                     "values": {"bufferView": 0}}


REFUSED = [        # (what, accessor, change, words)
    ("sparse", 0, _sparse, "sparse or has no data of its own"),
    ("no view", 0, lambda doc: doc["accessors"][0].pop("bufferView"), "sparse or has no data of its own"),
    ("double", 0, lambda doc: doc["accessors"][0].update(componentType=5130), "componentType 5130 and type 'VEC3'"),
    ("type", 0, lambda doc: doc["accessors"][0].update(type="VEC5"), "not a glTF 2.0 pair"),
    ("buffer", 0, lambda doc: doc["bufferViews"][0].update(buffer=3), "reads buffer 3"),
    ("stride", 0, lambda doc: doc["bufferViews"][0].update(byteStride=8),
     "12-byte values but its bufferView's byteStride is 8"),
    ("past its view", 0, lambda doc: doc["accessors"][0].update(count=5), "runs past the end of its bufferView"),
    ("offset", 1, lambda doc: doc["accessors"][1].update(byteOffset=16), "runs past the end of its bufferView"),
]


@pytest.mark.parametrize("index,change,words", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_what_is_not_read_raises_accessor_error_naming_the_accessor(index, change, words):
    doc, binary, _, _ = interleaved_doc()
    accessor_values(doc, file_buffers(doc, binary), index)          # read as written
    change(doc)
    with pytest.raises(AccessorError, match=f"^accessor {index} ") as err:
        accessor_values(doc, file_buffers(doc, binary), index)
    assert words in str(err.value) and isinstance(err.value, ValueError)


# ------------------------------------------------------------------------------------------ the file and the scene

def test_read_glb_refuses_another_version_and_a_cut_file():
    doc, binary, _, _ = interleaved_doc()
    data = glb(doc, binary)
    with pytest.raises(GltfError, match="not a binary glTF 2.0 file .*version 1"):
        read_glb(data[:4] + struct.pack("<I", 1) + data[8:])
    with pytest.raises(GltfError, match="cut short"):
        read_glb(data[:-4])
    chunk = binary + b"\0" * (-len(binary) % 4)
    assert read_glb(data + b"\0" * 64)[1] == glb_binary(data) == chunk      # bytes past the header's length: left
    assert read_glb(glb(doc))[1] == b"" and glb_binary(glb(doc)) is None


def test_placed_meshes_are_the_chosen_scenes_each_once():
    doc, binary, _, _ = interleaved_doc()
    doc["meshes"] = [doc["meshes"][0]] * 3
    doc["nodes"] = [{"mesh": 0}, {"children": [2, 3]}, {"mesh": 2}, {"mesh": 2, "children": [4]}, {"mesh": 0},
                    {"mesh": 1}]
    doc["scenes"] = [{"nodes": [5]}, {"nodes": [1, 0]}]
    doc["scene"] = 1
    assert placed_meshes(doc) == [0, 2]                                # mesh 1: only scene 0's node places it
    del doc["scene"]
    assert placed_meshes(doc) == [1]                                   # no `scene`: the first one
    doc["nodes"][4]["children"] = [1]                                  # 1 -> 3 -> 4 -> 1
    doc["scene"] = 1
    with pytest.raises(GltfError, match="own ancestor"):
        placed_meshes(doc)
