"""3-D model inputs of new-look (variant) jobs: what kind of file it is and whether it can be used, from its
first bytes and its header (an OBJ: its v and f lines), before the model is loaded or anything is written.

    ext = check_mesh(("chair.glb", data))       # or a path; ".glb" | ".gltf" | ".obj" | ".ply" | ".stl"

A file is refused (InputError, saying what to do) when it is empty, too large, an image or something else
that is not a 3-D model, damaged, or when its header counts more triangles than the voxeliser accepts (a
scan with 10 M faces is refused here at once instead of being loaded). Damaged includes a PLY shorter than its
header's counts need and an OBJ with NaN or infinite coordinates or faces naming vertices it lacks: its v and f
lines are scanned with numpy, quicker and far lighter than loading it as the job does. A glTF's count is what its
scene graph places (trellis.representations.gltf_scene): 2 000 nodes reusing one mesh count 2 000 times, and a
node hierarchy too deep, too large or no tree is refused with its numbers. The format comes from the
bytes, not the name, so a GLB saved as model.obj still works. Loading and voxelising happen in the job
(trellis.representations.voxels), whose MeshInputError is also an input error: a model whose surfaces
would take too long to voxelise (voxels.MAX_WORK) is refused there, before the model is loaded. Only
regular files are opened (a FIFO named as the model would block the reader).
"""
from __future__ import annotations

import math
import os
import re
import struct

from .job import InputError

MAX_MESH_BYTES = 256 * 1024 * 1024
MESH_FORMATS = (".glb", ".gltf", ".obj", ".ply", ".stl")
_IMAGE_MAGIC = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
                b"BM": "a BMP image", b"II*\x00": "a TIFF image", b"MM\x00*": "a TIFF image"}
_HEAD = 1 << 16          # bytes read to sniff a file and parse a PLY header
# Bytes of each binary PLY property type (a list's count field is one of them too).
PLY_TYPE_BYTES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
                  "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8,
                  "int64": 8, "uint64": 8}


def max_faces() -> int:
    from trellis.representations.mesh_input import MAX_FACES

    return MAX_FACES


def read_source(source) -> tuple:
    """(display name, bytes or None, path or None, size) of a path or a (name, bytes) upload."""
    if isinstance(source, tuple):
        name, data = source
        return os.path.basename(str(name or "model")), bytes(data), None, len(data)
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file" if not os.path.exists(path) else f"{path} is not a file")
    return os.path.basename(path), None, path, os.path.getsize(path)


def _head(data, path, n=_HEAD) -> bytes:
    return data[:n] if data is not None else _read(path, n)


def _all(data, path) -> bytes:
    return data if data is not None else _read(path)


def _read(path, head=None) -> bytes:
    """A path's bytes, opened only when it is a regular file: a FIFO or a device would block the reader."""
    from trellis.representations.mesh_input import MeshInputError, read_regular_file

    try:
        return read_regular_file(path, limit=None, head=head)
    except MeshInputError as err:
        raise InputError(str(err)) from None


def check_mesh(source) -> str:
    """The format (".glb", ...) of a 3-D model file; InputError when it cannot be used."""
    name, data, path, size = read_source(source)
    if size == 0:
        raise InputError(f"{name} is empty (0 bytes)")
    if size > MAX_MESH_BYTES:
        raise InputError(f"{name} is {size / 2 ** 20:.0f} MB, more than the {MAX_MESH_BYTES // 2 ** 20} MB accepted: "
                         f"simplify (decimate) the model first; at 64^3 voxels the detail is lost anyway")
    head = _head(data, path)
    for magic, what in _IMAGE_MAGIC.items():
        if head.startswith(magic):
            raise InputError(f"{name} is {what}, not a 3-D model: give a GLB, OBJ, PLY or STL file (a photo can "
                             f"be the image the new look is taken from)")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        raise InputError(f"{name} is a WebP image, not a 3-D model: give a GLB, OBJ, PLY or STL file")
    try:
        ext = _sniff(head, name, size)
        faces = _claimed_faces(ext, head, data, path, name, size)
    except InputError:
        raise
    except Exception as err:          # a header that lies in some other way: still the input's fault
        raise InputError(f"{name} cannot be read as a 3-D model ({type(err).__name__}: {err}); export it again as "
                         f"GLB, OBJ, PLY or STL") from None
    limit = max_faces()
    if faces is not None and faces > limit:
        raise InputError(f"{name} has {faces:,} triangles, more than the {limit:,} accepted: simplify (decimate) "
                         f"it first; at 64^3 voxels the detail is lost anyway")
    if faces == 0:
        raise InputError(f"{name} has no triangles (a point cloud or an empty scene): a new look needs a surface")
    return ext


def _sniff(head: bytes, name: str, size: int) -> str:
    if head.startswith(b"glTF"):
        return ".glb"
    if head.startswith(b"ply"):
        return ".ply"
    if size >= 84 and size == 84 + 50 * struct.unpack_from("<I", head, 80)[0]:
        return ".stl"                                 # binary STL: its triangle count gives its size
    text = head.lstrip()
    if text.startswith(b"solid"):
        return ".stl"
    if text.startswith(b"{") and b'"asset"' in head:
        return ".gltf"
    suffix = os.path.splitext(name)[1].lower()
    if suffix == ".stl" and size >= 84:
        return ".stl"                                 # binary, with a wrong size: checked below
    if suffix == ".obj" or re.search(rb"^\s*(v|f|vn|vt|o|g|mtllib)\s", head, re.M):
        if b"\x00" in head:
            raise InputError(f"{name} is not a 3-D model file (binary data, not OBJ text)")
        return ".obj"
    raise InputError(f"{name} is not a 3-D model file this app reads: use GLB, OBJ, PLY or STL")


def _claimed_faces(ext: str, head: bytes, data, path, name: str, size: int):
    """The triangle count the file states (header or a quick scan); None when it does not say."""
    if ext == ".stl" and not head.lstrip().startswith(b"solid"):
        count = struct.unpack_from("<I", head, 80)[0] if len(head) >= 84 else 0
        if count > max_faces():
            return count
        if size != 84 + 50 * count:
            raise InputError(f"{name} is a damaged STL file: it says {count:,} triangles but holds {size:,} bytes "
                             f"(expected {84 + 50 * count:,}); export it again")
        return count
    if ext == ".ply":
        end = head.find(b"end_header")
        if end < 0:
            raise InputError(f"{name} is a damaged PLY file: no end_header in its first {_HEAD // 1024} kB")
        m = re.search(rb"^element\s+face\s+(\d+)", head[:end], re.M)
        faces = int(m.group(1)) if m else 0
        if faces <= max_faces():                    # too many: said as such below, whatever the size
            _check_ply_size(head, end, name, size)
        return faces
    if ext == ".glb":
        json_end = 20 + struct.unpack_from("<I", head, 12)[0] if len(head) >= 20 else 0
        return _scene_faces(ext, head if json_end <= len(head) else _all(data, path), name)[1]
    if ext == ".gltf":
        doc, faces = _scene_faces(ext, _all(data, path), name)
        external = [b.get("uri") for b in doc.get("buffers", []) if not str(b.get("uri", "")).startswith("data:")]
        if external and data is not None:
            raise InputError(f"{name} keeps its geometry in other files ({', '.join(map(str, external))}): upload "
                             f"the model as one .glb file instead")
        return faces
    if ext == ".obj":
        text = _all(data, path)
        _check_obj(text, name)
        return text.count(b"\nf ") + text.startswith(b"f ")
    return None


def _check_ply_size(head: bytes, end: int, name: str, size: int) -> None:
    """InputError when a PLY file is shorter than its header's elements need: each row's properties at their size
    (binary) or a character and a separator each (ASCII); a list counts its length field only, as it may be empty,
    but a face's corners count three at least."""
    lines = head[:end].decode("latin-1").splitlines()
    binary = any(line.split()[:2] in (["format", "binary_little_endian"], ["format", "binary_big_endian"])
                 for line in lines)
    elements = []                                   # [name, rows, bytes a row needs at least]
    for line in lines:
        words = line.split()
        if words[:1] == ["element"] and len(words) >= 3:
            elements.append([words[1], int(words[2]), 0])
        elif words[:1] == ["property"] and len(words) >= 2 and elements:
            listed = words[1] == "list" and len(words) >= 5
            kinds = words[2:4] if listed else words[1:2]
            if binary and not all(k in PLY_TYPE_BYTES for k in kinds):
                return                              # a type this check does not know: left to the loader
            corners = listed and elements[-1][0] == "face" and words[4] in ("vertex_indices", "vertex_index")
            sizes = [PLY_TYPE_BYTES[k] for k in kinds] if binary else [2] * len(kinds)
            elements[-1][2] += sizes[0] + (3 * sizes[-1] if corners else 0)
    newline = head.find(b"\n", end)
    body = size - (newline + 1 if newline >= 0 else size)
    need = sum(rows * row for _, rows, row in elements) - (0 if binary else 1)   # the last ASCII row: no newline
    if need > body:
        said = " and ".join(f"element {what} {rows:,}" for what, rows, _ in elements)
        raise InputError(f"{name} is a damaged PLY file: its header says {said}, at least {need:,} bytes of data, "
                         f"but {body:,} bytes follow the header; export it again")


def _check_obj(text: bytes, name: str) -> None:
    """InputError when an OBJ's vertices are not finite numbers or its faces name vertices it does not have (the
    loader would fail on them, or drop the faces, only in the job). Indices as the loader takes them: 1..n, or
    negative from the end (-1 the last)."""
    import numpy as np

    vertices = re.findall(rb"^v[ \t]+([^\n#]*)", text, re.M)
    faces = re.findall(rb"^f[ \t]+([^\n#]*)", text, re.M)
    try:
        coords = np.fromstring(b" ".join(vertices), dtype=np.float64, sep=" ")
        # The vertex of each corner: what comes before its first slash (1/2/3 -> 1).
        refs = np.fromstring(re.sub(rb"/[^ \t\r]*", b"", b" ".join(faces)), dtype=np.float64, sep=" ")
    except ValueError:
        return                                      # text these numbers do not parse as: left to the loader
    if not np.isfinite(coords).all():
        bad = [i for i, line in enumerate(vertices, 1) if not all(math.isfinite(float(x)) for x in line.split())]
        raise InputError(f"{name} is a damaged OBJ file: {len(bad):,} of its vertices have coordinates that are not "
                         f"numbers (NaN) or are infinite, the first is vertex {bad[0]:,}; fix them or export it again")
    odd = refs[refs != np.round(refs)]
    if len(odd):
        raise InputError(f"{name} is a damaged OBJ file: a face names vertex {odd[0]:g}, not a whole number; export "
                         f"it again")
    wrong = refs[np.abs(refs) > len(vertices)]
    if len(wrong):
        have = f"{len(vertices):,} {'vertex' if len(vertices) == 1 else 'vertices'}"
        raise InputError(f"{name} is a damaged OBJ file: a face names vertex {wrong[0]:,.0f}, but the file has "
                         f"{have}; export it again")


def _scene_faces(ext: str, raw: bytes, name: str) -> tuple:
    """(JSON, triangles its scene graph places) of a GLB's or a .gltf's bytes (a GLB's up to its JSON chunk's end),
    checked by gltf_scene.check_scene: InputError for a malformed document or one past a limit."""
    from trellis.representations import gltf_scene

    try:
        doc = gltf_scene.read_glb_json(raw) if ext == ".glb" else gltf_scene.read_json(raw)
        return doc, gltf_scene.check_scene(doc, max_faces()).triangles
    except gltf_scene.GltfError as err:
        raise InputError(f"{name} {err}") from None
