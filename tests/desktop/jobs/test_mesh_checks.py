"""meshes.check_mesh, the check every surface runs on a 3-D model before its job is queued (REST, MCP, the app),
against files whose headers look fine but whose geometry the job's loader would fail on (or drop) later: a face
naming a vertex the file lacks, NaN or infinite coordinates (OBJ, PLY binary and ASCII, STL binary and ASCII, GLB and
glTF), a PLY shorter than its header's counts. What the check refuses the loader refuses too, or reads as something
else than the file says; what it lets through loads (an OBJ's comment after a line's values included)."""
import base64
import json
import struct
import time

import numpy as np

import pytest

from desktop.jobs import InputError, check_mesh
from desktop.jobs.steps import load_mesh, load_own_mesh
from tests.helpers.gltf import glb

TRIANGLE = b"v 0 0 0\nv 1 0 0\nv 0 1 0\n"
PLY_HEAD = (b"ply\nformat binary_little_endian 1.0\nelement vertex %d\nproperty float x\nproperty float y\n"
            b"property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n")

CORNERS = [[0, 0, 0], [1, 0, 0], [0, 1, 0]]
NAN = [[0, 0, 0], [1, 0, 0], [0, float("nan"), 0]]
INF = [[0, 0, 0], [float("-inf"), 0, 0], [0, 1, 0]]


def ply(vertices, faces, fmt="binary_little_endian") -> bytes:
    """A PLY of float x y z vertices and triangle faces (a uchar count and int indices), as exporters write it."""
    head = (f"ply\nformat {fmt} 1.0\ncomment made by hand\nelement vertex {len(vertices)}\nproperty float x\n"
            f"property float y\nproperty float z\nelement face {len(faces)}\nproperty list uchar int vertex_indices\n"
            f"end_header\n").encode()
    if fmt == "ascii":
        rows = [" ".join(map(str, map(float, v))) for v in vertices] + ["3 " + " ".join(map(str, f)) for f in faces]
        return head + "\n".join(rows).encode() + b"\n"
    order = ">" if fmt == "binary_big_endian" else "<"
    body = np.asarray(vertices, order + "f4").tobytes()
    return head + body + b"".join(struct.pack(order + "B3i", 3, *f) for f in faces)


def stl(triangles) -> bytes:
    """A binary STL of `triangles` ([[corner x3] ...]), normals zero."""
    rows = b"".join(struct.pack("<12fH", 0, 0, 0, *np.ravel(t), 0) for t in triangles)
    return b"\0" * 80 + struct.pack("<I", len(triangles)) + rows


def stl_text(triangles) -> bytes:
    facets = "".join("facet normal 0 0 0\nouter loop\n" + "".join(f"vertex {x} {y} {z}\n" for x, y, z in t)
                     + "endloop\nendfacet\n" for t in triangles)
    return f"solid hand\n{facets}endsolid hand\n".encode()


def gltf_doc(vertices, indices, stride=12) -> tuple:
    """(JSON, binary) of one mesh of `vertices` (float32, `stride` bytes apart) and uint16 `indices`, placed by one
    node under a parent (a scene graph a reader walks)."""
    points = np.zeros((len(vertices), stride // 4), np.float32)
    points[:, :3] = vertices
    index = np.asarray(indices, np.uint16).tobytes()
    binary = points.tobytes() + index
    strided = {"byteStride": stride} if stride != 12 else {}
    doc = {"asset": {"version": "2.0"}, "buffers": [{"byteLength": len(binary)}],
           "bufferViews": [{"buffer": 0, "byteLength": points.nbytes, **strided},
                           {"buffer": 0, "byteOffset": points.nbytes, "byteLength": len(index)}],
           "accessors": [{"bufferView": 0, "componentType": 5126, "count": len(vertices), "type": "VEC3"},
                         {"bufferView": 1, "componentType": 5123, "count": len(indices), "type": "SCALAR"}],
           "meshes": [{"name": "seat", "primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
           "nodes": [{"children": [1]}, {"mesh": 0, "translation": [0, 0, 1]}], "scenes": [{"nodes": [0]}], "scene": 0}
    return doc, binary


def glb_of(vertices, indices, stride=12) -> bytes:
    return glb(*gltf_doc(vertices, indices, stride))


def gltf_of(vertices, indices) -> bytes:
    doc, binary = gltf_doc(vertices, indices)
    doc["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(binary).decode()
    return json.dumps(doc).encode()


BROKEN = [
    ("index.obj", b"v 0 0 0\nf 1 2 3000000000\n", "a face names vertex 2, but the file has 1 vertex"),
    ("far.obj", TRIANGLE + b"f 1 2 3000000000\n", "a face names vertex 3,000,000,000, but the file has 3 vertices"),
    ("behind.obj", TRIANGLE + b"f -1 -2 -4\n", "a face names vertex -4"),
    ("half.obj", TRIANGLE + b"f 1 2 2.5\n", "a face names vertex 2.5, not a whole number"),
    ("nan.obj", b"v nan nan nan\nv inf 0 0\nv 0 1 0\nf 1 2 3\n",
     "2 of its vertices have coordinates that are not numbers (NaN) or are infinite, the first is vertex 1"),
    ("overflow.obj", b"v 0 0 0\nv 1 0 0\nv 0 1e999 0\nf 1 2 3\n", "the first is vertex 3"),
    ("claims.ply", PLY_HEAD % 4_000_000_000 + b"\0" * 64,
     "element vertex 4,000,000,000 and element face 1, at least 48,000,000,013 bytes of data, but 64 bytes follow"),
    ("claims_ascii.ply", (b"ply\nformat ascii 1.0\nelement vertex 4000000000\nproperty float x\nproperty float y\n"
                          b"property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
                          b"0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n"), "damaged PLY file"),
    ("zero.obj", TRIANGLE + b"f 0 1 2\n", "a face names vertex 0, but OBJ counts vertices from 1"),
    ("index.ply", ply(CORNERS, [[0, 1, 5]]), "face 0 names vertex 5, but the file has 3 vertices (0 to 2)"),
    ("index_be.ply", ply(CORNERS, [[0, 1, 2], [2, 1, 3]], "binary_big_endian"),
     "face 1 names vertex 3, but the file has 3 vertices"),
    ("negative.ply", ply(CORNERS, [[0, 1, -1]]), "face 0 names vertex -1, but the file has 3 vertices (0 to 2)"),
    ("index_ascii.ply", ply(CORNERS, [[0, 1, 9]], "ascii"), "face 0 names vertex 9, but the file has 3 vertices"),
    ("nan.ply", ply(NAN, [[0, 1, 2]]),
     "1 of its vertices have coordinates that are not numbers (NaN) or are infinite, the first is vertex 2 "
     "(counting from 0, as PLY does)"),
    ("inf.ply", ply(INF, [[0, 1, 2]], "binary_big_endian"), "the first is vertex 1 (counting from 0"),
    ("nan_ascii.ply", ply(NAN, [[0, 1, 2]], "ascii"), "not numbers (NaN) or are infinite, the first is vertex 2"),
    ("nan.stl", stl([NAN]), "1 of its triangles have coordinates that are not numbers (NaN) or are infinite, the "
                            "first is triangle 1 (counting from 1)"),
    ("inf.stl", stl([INF]), "the first is triangle 1"),
    ("nan_ascii.stl", stl_text([NAN]), "1 of its triangles have coordinates that are not numbers (NaN)"),
    ("index.glb", glb_of(CORNERS, [0, 1, 7]),
     "mesh 0 ('seat') has a triangle naming vertex 7, but its part has 3 vertices (0 to 2)"),
    ("nan.glb", glb_of(NAN, [0, 1, 2]),
     "1 of its vertices have coordinates that are not numbers (NaN) or are infinite, the first is vertex 2 of mesh 0 "
     "('seat')"),
    ("unused_nan.glb", glb_of(CORNERS + [[float("nan")] * 3], [0, 1, 2]), "the first is vertex 3 of mesh 0"),
    ("strided_inf.glb", glb_of(INF, [0, 1, 2], stride=24), "the first is vertex 1 of mesh 0"),
    ("nan.gltf", gltf_of(NAN, [0, 1, 2]), "is a damaged glTF file: 1 of its vertices have coordinates that are not"),
    ("index.gltf", gltf_of(CORNERS, [0, 1, 3]), "has a triangle naming vertex 3, but its part has 3 vertices"),
]
# The job's loaders read these instead of failing, as something the file does not say: vertex 0 as vertex 1 (the
# triangle collapses onto two corners); -1 kept as -1 by the as-is reader (keep-my-mesh), a face naming no vertex.
MISREAD = {"zero.obj": lambda mesh, own: (np.diff(np.sort(own.faces, axis=1), axis=1) == 0).any(),
           "negative.ply": lambda mesh, own: (own.faces < 0).any()}


@pytest.mark.parametrize("name,data,words", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_geometry_is_refused_by_the_check_as_by_the_loader(name, data, words, tmp_path):
    path = tmp_path / name
    path.write_bytes(data)
    for source in ((name, data), path):                   # an upload, or a file on this computer
        t = time.perf_counter()
        with pytest.raises(InputError, match="damaged") as err:
            check_mesh(source)
        assert words in str(err.value) and str(err.value).startswith(f"{name} is a damaged "), str(err.value)
        assert time.perf_counter() - t < 1.0
    ext = "." + name.rsplit(".", 1)[1]
    if name in MISREAD:                                   # loads, but not as the file says
        assert MISREAD[name](load_mesh((name, data), ext), load_own_mesh((name, data), ext))
        return
    with pytest.raises(InputError):                       # what the job would have met, later
        load_mesh((name, data), ext)


@pytest.mark.parametrize("line", [b"f 1 2 3 # the seat", b"f 1 2 3#4", b"v 0 1 0 # top", b"vn 0 0 1 # up"])
def test_an_obj_comment_after_values_is_read_as_a_comment(line):
    """OBJ's # starts a comment anywhere on a line: the check passes such a file and the job's loader reads its
    triangle (trimesh alone read the comment as values and failed)."""
    data = TRIANGLE + (line if line.startswith(b"f") else line + b"\nf 1 2 3") + b"\n"
    assert check_mesh(("commented.obj", data)) == ".obj"
    mesh = load_mesh(("commented.obj", data), ".obj")
    assert len(mesh.faces) == 1 and np.isfinite(mesh.vertices).all()
    assert len(load_own_mesh(("commented.obj", data), ".obj").faces) == 1          # keep-my-mesh's reader too


def test_a_partly_broken_model_is_refused_though_the_loader_would_drop_the_broken_part():
    two = [CORNERS, [[1, 0, 0], [1, 1, 0], [0, 1, 0]]]
    for name, data in [("half.stl", stl([NAN, two[1]])), ("half.ply", ply(NAN + [[1, 1, 0]], [[0, 1, 2], [1, 3, 0]]))]:
        with pytest.raises(InputError, match="1 of its .* not numbers"):
            check_mesh((name, data))
        assert len(load_mesh((name, data), "." + name[-3:]).faces) == 1          # the NaN triangle silently gone


def test_sound_files_pass_and_load():
    import trimesh

    box = trimesh.creation.box()
    sound = [("slashes.obj", TRIANGLE + b"vt 0 0\nvn 0 0 1\nf 1/1/1 2/1/1 3/1/1\n"),
             ("relative.obj", TRIANGLE + b"# a comment\nf -3//1 -2//1 -1//1\n"),
             ("windows.obj", (TRIANGLE + b"f 1 2 3\n").replace(b"\n", b"\r\n")),
             ("box.ply", box.export(file_type="ply", encoding="binary")),
             ("box_ascii.ply", box.export(file_type="ply", encoding="ascii")),
             ("box.obj", box.export(file_type="obj").encode()),
             ("full_comments.obj", b"# made by hand\n" + TRIANGLE + b"# the face\nf 1 2 3\n"),
             ("box_be.ply", ply(box.vertices, box.faces, "binary_big_endian")),
             ("hand.ply", ply(CORNERS, [[0, 1, 2]], "ascii")),
             ("box.stl", box.export(file_type="stl")),
             ("box_ascii.stl", box.export(file_type="stl_ascii").encode()),
             ("two.stl", stl([CORNERS, [[1, 0, 0], [1, 1, 0], [0, 1, 0]]])),
             ("box.glb", box.export(file_type="glb")),
             ("strided.glb", glb_of(CORNERS, [0, 1, 2], stride=24)),
             ("triangle.gltf", gltf_of(CORNERS, [0, 1, 2]))]
    for name, data in sound:
        ext = check_mesh((name, data))
        assert ext == "." + name.rsplit(".", 1)[1], name
        assert len(load_mesh((name, data), ext).faces) > 0, name


def test_a_binary_ply_one_byte_short_is_damaged():
    import trimesh

    data = trimesh.creation.box().export(file_type="ply", encoding="binary")
    with pytest.raises(InputError, match="at least 252 bytes of data, but 251 bytes follow the header"):
        check_mesh(("box.ply", data[:-1]))


def test_a_files_verdict_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    """The page checks a model at upload and again at Generate: the second check of the unchanged file reads none
    of it; a file rewritten (new size) or touched (new modification time) is read and judged again."""
    import os

    from trellis.representations import mesh_input

    reads = []
    real = mesh_input.read_regular_file
    monkeypatch.setattr(mesh_input, "read_regular_file", lambda path, *a, **k: reads.append(path) or real(path, *a, **k))
    path = tmp_path / "triangle.obj"
    path.write_bytes(TRIANGLE + b"f 1 2 3\n")

    def checked(source=path):
        reads.clear()
        try:
            return check_mesh(source), len(reads)
        except InputError as err:
            return str(err), len(reads)

    ext, count = checked()
    assert ext == ".obj" and count >= 1                          # read (its head, then the whole)...
    assert checked() == (".obj", 0)                              # ...and not again
    assert checked(str(path)) == (".obj", 0)                     # the same file by its name
    path.write_bytes(TRIANGLE + b"v 0 nan 0\nf 1 2 3\n")         # rewritten: a new size
    refusal, count = checked()
    assert "the first is vertex 4" in refusal and count >= 1
    assert checked() == (refusal, 0)                             # a refusal is remembered too
    stamp = os.stat(path).st_mtime_ns
    os.utime(path, ns=(stamp, stamp + 10 ** 9))                  # touched: same size, new modification time
    assert checked()[0] == refusal and reads
    assert checked(("triangle.obj", path.read_bytes())) == (refusal, 0)     # an upload's bytes: read, not a file
    assert checked(("triangle.obj", TRIANGLE + b"f 1 2 3\n")) == (".obj", 0)
