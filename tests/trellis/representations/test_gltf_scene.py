"""glTF scene graphs counted before they are built (trellis.representations.gltf_scene) and read by the loader
(mesh_input): instancing, deep and cyclic hierarchies refused from the JSON alone, with their numbers; malformed
fields named; what is accepted placed exactly as trimesh's Scene.dump places it. GLBs are built here in memory."""
import io
import json
import time
import tracemalloc

import numpy as np
import pytest
import trimesh

from trellis.representations import gltf_scene, mesh_input
from trellis.representations.gltf_scene import GltfError, check_scene, count_scene
from trellis.representations.mesh_input import MeshInputError, load_mesh, load_mesh_as_is, with_uv_materials

from tests.helpers.gltf import UV, chain, declared_doc, glb, setter, triangle_doc, with_uvs

def refused(data: bytes, words: str, loader=load_mesh):
    """The loader's MeshInputError for a GLB's bytes, which must contain `words`."""
    with pytest.raises(MeshInputError) as err:
        loader(io.BytesIO(data), file_type="glb")
    assert words in str(err.value), str(err.value)
    return str(err.value)


# ------------------------------------------------------------------------------------------ instancing

def test_two_thousand_instances_are_refused_from_the_declared_counts_before_anything_is_built():
    doc = declared_doc(2_000)
    count = count_scene(doc)
    assert (count.triangles, count.instances, count.nodes, count.depth, count.mesh_triangles, count.mesh_parts) == \
        (40_960_000, 2_000, 2_000, 1, 20_480, 1)
    words = "places 40,960,000 triangles in its scene (2,000 nodes place copies of its meshes' 20,480 triangles), " \
            "more than the 4,000,000 accepted"
    with pytest.raises(GltfError, match=r"places 40,960,000 triangles"):
        check_scene(doc, mesh_input.MAX_FACES)
    data = glb(doc)
    assert len(data) < 200_000
    tracemalloc.start()
    try:
        for loader in (load_mesh, load_mesh_as_is):             # the new look's shape, and the kept mesh
            message = refused(data, words, loader)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message.startswith("the file places") and peak < 20 * 2 ** 20, (message, peak)    # flattened: > 1 GB
    check_scene(declared_doc(195), mesh_input.MAX_FACES)        # 3,993,600 placed: under the limit


def test_other_counts_past_their_limits_are_refused_with_their_numbers(monkeypatch):
    with pytest.raises(GltfError, match="has 10,001 nodes, more than the 10,000 accepted"):
        check_scene(declared_doc(10_001, triangles=1), 1_000_000)
    doc = declared_doc(1, triangles=5_000_000)
    with pytest.raises(GltfError, match="has 5,000,000 triangles in its meshes, more than the 4,000,000"):
        check_scene({**doc, "nodes": [], "scenes": []}, 4_000_000)     # built even when no node places it
    doc = declared_doc(1, triangles=1)
    doc["accessors"][0]["count"] = 13_000_000                          # vertices: three a triangle at most
    with pytest.raises(GltfError, match="has 13,000,000 vertices in its meshes, more than the 12,000,000"):
        check_scene(doc, 4_000_000)
    monkeypatch.setattr(gltf_scene, "MAX_PARTS", 100)
    doc = declared_doc(101, triangles=1)
    with pytest.raises(GltfError, match=r"places 101 mesh parts \(primitives\) in its scene, more than the 100"):
        check_scene(doc, 4_000_000)


def test_accepted_instances_are_placed_as_trimesh_places_them():
    """Nested transforms (translation, rotation, scale, a mirror that reverses the winding) give the vertices and
    faces of trimesh's own Scene.dump, in its order, through both loaders."""
    nodes = [{"children": [1, 2], "translation": [2, 0, 0], "rotation": [0, 0.6, 0, 0.8]},
             {"mesh": 0, "scale": [-1, 2, 1]},
             {"mesh": 0, "children": [3], "matrix": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 5, 0, 1]},
             {"mesh": 0, "translation": [0, 0, 3]},
             {"mesh": 0}]
    doc, binary = triangle_doc(nodes, [0, 4])
    data = glb(doc, binary)
    scene = trimesh.load(io.BytesIO(data), file_type="glb", process=False)
    dumped = [m for m in scene.dump() if isinstance(m, trimesh.Trimesh)]
    want_v = np.concatenate([m.vertices for m in dumped])
    want_f = np.concatenate([m.faces + 3 * i for i, m in enumerate(dumped)])
    own = load_mesh_as_is(io.BytesIO(data), file_type="glb", up="z")
    assert own.meshes == 4 and np.allclose(own.vertices, want_v, atol=1e-12) and np.array_equal(own.faces, want_f)
    mesh = load_mesh(io.BytesIO(data), file_type="glb", up="z")
    assert np.allclose(mesh.vertices, want_v, atol=1e-12) and np.array_equal(mesh.faces, want_f)
    assert count_scene(doc)[:6] == (4, 12, 4, 4, 5, 3)      # triangles, vertices, parts, instances, nodes, depth


def test_a_deep_hierarchy_within_the_limit_is_read_in_one_pass_and_a_deeper_one_refused_at_once():
    doc, binary = triangle_doc(chain(gltf_scene.MAX_DEPTH, mesh_on_every_node=True), [0])
    mesh = load_mesh(io.BytesIO(glb(doc, binary)), file_type="glb", up="z")   # Scene.dump: minutes at this depth
    assert len(mesh.faces) == gltf_scene.MAX_DEPTH
    assert np.isclose(mesh.vertices[:, 0].max(), 1 + 0.1 * (gltf_scene.MAX_DEPTH - 1))
    doc, binary = triangle_doc(chain(1_000), [0])
    t = time.perf_counter()
    refused(glb(doc, binary), "has a node hierarchy 1,000 levels deep, more than the 256 accepted")
    assert time.perf_counter() - t < 5                        # the JSON only: no RecursionError after minutes


def test_a_gltf_file_is_counted_too(tmp_path):
    doc, binary = triangle_doc(chain(300), [0])
    import base64

    doc["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(binary).decode()
    path = tmp_path / "deep.gltf"
    path.write_text(json.dumps(doc))
    with pytest.raises(MeshInputError, match="deep.gltf has a node hierarchy 300 levels deep"):
        load_mesh(path)


# ------------------------------------------------------------------------------------------ hierarchies that are no tree

@pytest.mark.parametrize("nodes, roots, words", [
    ([{"children": [1]}, {"mesh": 0}], [0, 1], "node 1 is a root of scene 0 and a child of node 0"),
    ([{"children": [1]}, {"children": [0], "mesh": 0}], [0], "node 0 is its own ancestor"),
    ([{"mesh": 0}, {"children": [2]}, {"children": [1]}], [0], "node 1 is its own ancestor"),   # not even placed
    ([{"children": [0], "mesh": 0}], [0], "node 0 is its own child"),
    ([{"children": [2]}, {"children": [2]}, {"mesh": 0}], [0, 1], "node 2 is a child of node 0 and of node 1"),
    ([{"children": [1, 1]}, {"mesh": 0}], [0], "node 0 lists its child 1 twice"),
    ([{"mesh": 0}], [0, 0], "scene 0 lists node 0 twice"),
])
def test_hierarchies_that_are_no_tree_are_refused(nodes, roots, words):
    doc, binary = triangle_doc(nodes, roots)
    refused(glb(doc, binary), f"the file is a damaged glTF file: {words}")


# ------------------------------------------------------------------------------------------ malformed fields

MALFORMED = [
    ("materials", {}, "materials is an object, not a list"),
    ("materials", "plain", "materials is a string, not a list"),
    ("meshes", {"0": {}}, "meshes is an object, not a list"),
    ("nodes", "0", "nodes is a string, not a list"),
    ("nodes.0", [0], "nodes[0] is a list, not an object"),
    ("accessors", 3, "accessors is a number, not a list"),
    ("scenes", {}, "scenes is an object, not a list"),
    ("scene", 3, "scene is 3, but the file has only scenes 0 to 0"),
    ("scene", "0", 'scene is "0", not a whole number from 0'),
    ("scenes.0.nodes", 0, "scenes[0].nodes is a number, not a list"),
    ("meshes.0.primitives.0.material", 4, "meshes[0].primitives[0].material is 4, but the file has no materials"),
    ("meshes.0.primitives.0.material", 0.5, "meshes[0].primitives[0].material is 0.5, not a whole number"),
    ("meshes.0.primitives.0.material", True, "meshes[0].primitives[0].material is true, not a whole number"),
    ("meshes.0.primitives.0.indices", -1, "meshes[0].primitives[0].indices is -1, not a whole number from 0"),
    ("meshes.0.primitives.0.indices", 1.0, "meshes[0].primitives[0].indices is 1.0, not a whole number"),
    ("meshes.0.primitives.0.attributes", [0], "meshes[0].primitives[0].attributes is a list, not an object"),
    ("meshes.0.primitives.0.attributes", {"TEXCOORD_0": 1},
     "meshes[0].primitives[0] has triangles but no POSITION attribute"),
    ("meshes.0.primitives.0.mode", 9, "meshes[0].primitives[0].mode is 9, not a primitive mode (0 to 6)"),
    ("meshes.0.primitives", {}, "meshes[0].primitives is an object, not a list"),
    ("nodes.0.children", "1", "nodes[0].children is a string, not a list"),
    ("nodes.0.children", [0.5], "nodes[0].children[0] is 0.5, not a whole number"),
    ("nodes.0.mesh", 2, "nodes[0].mesh is 2, but the file has only meshes 0 to 0"),
    ("nodes.0.matrix", [1] * 15, "nodes[0].matrix is not a list of 16 numbers"),
    ("nodes.0.translation", ["1", 0, 0], "nodes[0].translation is not a list of 3 numbers"),
    ("accessors.0.count", -3, "accessors[0].count is -3, not a whole number from 0"),
    ("accessors.0.count", "3", 'accessors[0].count is "3", not a whole number'),
]


@pytest.mark.parametrize("path, value, words", MALFORMED, ids=[f"{p}={v!r}" for p, v, _ in MALFORMED])
def test_malformed_fields_are_named_by_both_loaders(path, value, words):
    data = with_uvs(setter(path, value))
    for loader in (load_mesh_as_is, load_mesh):
        refused(data, f"the file is a damaged glTF file: {words}", loader)


def test_damaged_json_and_uvs_without_a_material():
    refused(glb([1, 2]), "its JSON is a list, not an object")
    whole = glb({"asset": {"version": "2.0"}, "nodes": []})
    refused(whole[:30], "its JSON chunk says")
    refused(whole[:12] + b"\x10\0\0\0BIN\0" + whole[20:], "its first chunk is not JSON")
    refused(whole[:5], "damaged GLB file (too short)")
    refused(glb(b'{"nodes": [' * 40), "its JSON cannot be read")
    with pytest.raises(MeshInputError, match="materials is an object"):      # the helper alone, too
        with_uv_materials(with_uvs(setter("materials", {})))
    own = load_mesh_as_is(io.BytesIO(with_uvs(lambda doc: None)), file_type="glb")   # given a plain material
    assert own.uvs is not None and np.allclose(own.uvs[:, 0], UV[:, 0])
