"""glTF files in tests: reading a GLB's JSON, the Khronos validator and Google's Draco decoder (node, tests/js), and
small GLBs built in memory (one triangle placed by any node graph, scenes declaring more than they hold)."""
import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.repo import JS_DIR

TRIANGLE = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
UV = np.array([[0, 0], [1, 0], [0, 1]], np.float32)


# ------------------------------------------------------------------------------------------ reading and validating

def glb_json(path) -> dict:
    """The JSON chunk of the GLB at `path` (its header checked: glTF 2, the file's length)."""
    data = Path(path).read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF" and version == 2 and length == len(data)
    chunk_len, chunk_type = struct.unpack_from("<II", data, 12)
    assert chunk_type == 0x4E4F534A  # "JSON"
    return json.loads(data[20:20 + chunk_len])


def validate_gltf(path) -> dict:
    """The Khronos glTF validator's report on `path` (tests/js/validate.js)."""
    node = shutil.which("node")
    script = JS_DIR / "validate.js"
    if node is None or not (JS_DIR / "node_modules" / "gltf-validator").is_dir():
        pytest.fail("the Khronos glTF validator is not installed: install Node.js, then run "
                    "`npm ci --prefix tests/js` (./run.sh test does this when npm is on PATH)")
    res = subprocess.run([node, str(script), str(path)], capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def draco_decode(path) -> list:
    """The decode of every Draco primitive of ``path`` by draco3dgltf (see tests/js/draco_decode.js)."""
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "draco3dgltf").is_dir():
        pytest.fail("Google's Draco decoder (draco3dgltf) is not installed: install Node.js, then run "
                    "`npm ci --prefix tests/js` (./run.sh test does this when npm is on PATH)")
    res = subprocess.run([node, str(JS_DIR / "draco_decode.js"), str(path)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


# ------------------------------------------------------------------------------------------ GLBs built in memory

def glb(doc, binary: bytes = b"") -> bytes:
    """A GLB file: `doc` (or JSON text as bytes) as its JSON chunk, `binary` as its BIN chunk."""
    text = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    binary += b"\0" * (-len(binary) % 4)
    body = struct.pack("<I4s", len(text), b"JSON") + text
    body += struct.pack("<I4s", len(binary), b"BIN\0") + binary if binary else b""
    return b"glTF" + struct.pack("<II", 2, 12 + len(body)) + body


def triangle_doc(nodes: list, roots: list, uv: bool = False) -> tuple:
    """(JSON, binary) of one real one-triangle mesh (with UVs and no material, as Blender writes them, if `uv`)
    placed by `nodes`, with `roots` as the scene's nodes."""
    binary = TRIANGLE.tobytes() + (UV.tobytes() if uv else b"")
    doc = {"asset": {"version": "2.0"}, "buffers": [{"byteLength": len(binary)}],
           "bufferViews": [{"buffer": 0, "byteLength": 36}] + ([{"buffer": 0, "byteOffset": 36, "byteLength": 24}]
                                                               if uv else []),
           "accessors": [{"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3", "min": [0, 0, 0],
                          "max": [1, 1, 0]}] + ([{"bufferView": 1, "componentType": 5126, "count": 3, "type": "VEC2"}]
                                                if uv else []),
           "meshes": [{"primitives": [{"attributes": {"POSITION": 0, **({"TEXCOORD_0": 1} if uv else {})}}]}],
           "nodes": nodes, "scenes": [{"nodes": roots}], "scene": 0}
    return doc, binary


def declared_doc(nodes: int, triangles: int = 20_480) -> dict:
    """`nodes` root nodes that all place one mesh whose accessors declare `triangles` triangles (no data: only the
    counts are there, as in a file that would be built into gigabytes)."""
    return {"asset": {"version": "2.0"},
            "accessors": [{"componentType": 5126, "count": triangles // 2 + 2, "type": "VEC3"},
                          {"componentType": 5125, "count": 3 * triangles, "type": "SCALAR"}],
            "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
            "nodes": [{"mesh": 0, "translation": [i, 0, 0]} for i in range(nodes)],
            "scenes": [{"nodes": list(range(nodes))}]}


def chain(levels: int, mesh_on_every_node: bool = False) -> list:
    """`levels` nodes, each the child of the one before, each moved 0.1 along x; the mesh on the last (or all)."""
    nodes = [{"children": [i + 1], "translation": [0.1, 0, 0]} for i in range(levels - 1)] + [{"mesh": 0}]
    for node in nodes[:-1] if mesh_on_every_node else []:
        node["mesh"] = 0
    return nodes


def with_uvs(change):
    """A GLB whose primitive has UVs and no material (with_uv_materials gives it one) after `change(doc)`."""
    doc, binary = triangle_doc([{"mesh": 0}], [0], uv=True)
    change(doc)
    return glb(doc, binary)


def setter(path: str, value):
    """A change for with_uvs: sets the field at the dotted `path` ("meshes.0.primitives.0.material") to `value`."""
    def change(doc):
        *parents, last = path.split(".")
        target = doc
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[int(last) if isinstance(target, list) else last] = value
    return change
