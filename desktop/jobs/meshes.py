"""3-D model inputs of new-look (variant) jobs: what kind of file it is and whether it can be used, from its
first bytes and its header (an OBJ: its v and f lines), before the model is loaded or anything is written.

    ext = check_mesh(("chair.glb", data))       # or a path; ".glb" | ".gltf" | ".obj" | ".ply" | ".stl"

A file is refused (InputError, saying what to do) when it is empty, too large, an image or something else
that is not a 3-D model, damaged, or when its header counts more triangles than the voxeliser accepts (a
scan with 10 M faces is refused here at once instead of being loaded). Damaged includes a PLY shorter than its
header's counts need, and any format's NaN or infinite coordinates or faces naming vertices it lacks: an OBJ's
v and f lines, a PLY's vertex and face rows, an STL's corners and the positions and indices of the meshes a glTF's
scene places (gltf_scene.accessor_values, the library's one accessor reader) are read with numpy straight from the
bytes, quicker and far lighter than loading the model as the job does. An OBJ face naming vertex 0 is refused too (OBJ counts from 1; the loader would quietly read it as
vertex 1); a # comment after a line's values is read as the comment it is. A glTF's count
is what its scene graph places (trellis.representations.gltf_scene): 2 000 nodes reusing one mesh count 2 000
times, and a node hierarchy too deep, too large or no tree is refused with its numbers. The format comes from the
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
from .verdicts import FileVerdicts

MAX_MESH_BYTES = 256 * 1024 * 1024
MESH_FORMATS = (".glb", ".gltf", ".obj", ".ply", ".stl")
_IMAGE_MAGIC = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
                b"BM": "a BMP image", b"II*\x00": "a TIFF image", b"MM\x00*": "a TIFF image"}
_HEAD = 1 << 16          # bytes read to sniff a file and parse a PLY header
VERDICTS = FileVerdicts(remembered=(InputError,))      # check_mesh's verdicts on the last few files
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
    """The format (".glb", ...) of a 3-D model file; InputError when it cannot be used. A path's verdict is
    remembered for the file as it stands (verdicts.FileVerdicts): the page checks at upload and at Generate."""
    if isinstance(source, tuple):
        return check_mesh_now(source)
    return VERDICTS.check(source, check_mesh_now, (max_faces(), MAX_MESH_BYTES))


def check_mesh_now(source) -> str:
    """check_mesh, reading the file whatever was said of it before."""
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
        _check_stl(_stl_corners(_all(data, path), count), name)
        return count
    if ext == ".stl":
        _check_stl(_stl_text_corners(_all(data, path)), name)
        return None
    if ext == ".ply":
        end = head.find(b"end_header")
        if end < 0:
            raise InputError(f"{name} is a damaged PLY file: no end_header in its first {_HEAD // 1024} kB")
        m = re.search(rb"^element\s+face\s+(\d+)", head[:end], re.M)
        faces = int(m.group(1)) if m else 0
        if faces <= max_faces():                    # too many: said as such below, whatever the size
            _check_ply_size(head, end, name, size)
            _check_ply(_all(data, path), end, name)
        return faces
    if ext == ".glb":
        from trellis.representations.gltf_scene import file_buffers, glb_binary

        json_end = 20 + struct.unpack_from("<I", head, 12)[0] if len(head) >= 20 else 0
        doc, faces = _scene_faces(ext, head if json_end <= len(head) else _all(data, path), name)
        _check_gltf(doc, file_buffers(doc, glb_binary(_all(data, path))), name, "GLB")
        return faces
    if ext == ".gltf":
        from trellis.representations.gltf_scene import file_buffers

        raw = _all(data, path)
        doc, faces = _scene_faces(ext, raw, name)
        external = [b.get("uri") for b in doc.get("buffers", []) if not str(b.get("uri", "")).startswith("data:")]
        if external and data is not None:
            raise InputError(f"{name} keeps its geometry in other files ({', '.join(map(str, external))}): upload "
                             f"the model as one .glb file instead")
        _check_gltf(doc, file_buffers(doc, None), name, "glTF")
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
    negative from the end (-1 the last); 0 is none of them. A comment after a line's values is no value (the loader
    drops it too: mesh_input.without_trailing_comments)."""
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
    if (refs == 0).any():
        raise InputError(f"{name} is a damaged OBJ file: a face names vertex 0, but OBJ counts vertices from 1 (-1 "
                         f"for the last); export it again")
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


# ------------------------------------------------------------------------------------------ geometry from the bytes

# numpy's name of each PLY property type.
PLY_NUMPY_TYPES = {"char": "i1", "uchar": "u1", "int8": "i1", "uint8": "u1", "short": "i2", "ushort": "u2",
                   "int16": "i2", "uint16": "u2", "int": "i4", "uint": "u4", "int32": "i4", "uint32": "u4",
                   "float": "f4", "float32": "f4", "double": "f8", "float64": "f8", "int64": "i8", "uint64": "u8"}


def _not_finite(name: str, kind: str, rows: int, first: int, what: str = "vertices", at: str = "") -> InputError:
    return InputError(f"{name} is a damaged {kind} file: {rows:,} of its {what} have coordinates that are not numbers "
                      f"(NaN) or are infinite, the first is {what[:-1] if what != 'vertices' else 'vertex'} "
                      f"{first:,}{at}; fix them or export it again")


def _check_stl(corners, name: str) -> None:
    """InputError when an STL triangle has a corner that is no finite point (the loader drops it, or fails)."""
    import numpy as np

    if corners is None or not len(corners):
        return
    bad = np.flatnonzero(~np.isfinite(corners).all(axis=1))
    if len(bad):
        raise _not_finite(name, "STL", len(bad), int(bad[0]) + 1, "triangles", " (counting from 1)")


def _stl_corners(raw: bytes, count: int):
    """[T, 9] corners of a binary STL (its size already checked against `count`)."""
    import numpy as np

    rows = np.dtype([("normal", "<f4", (3,)), ("corners", "<f4", (9,)), ("attribute", "<u2")])
    return np.frombuffer(raw, rows, count=count, offset=84)["corners"]


def _stl_text_corners(raw: bytes):
    """[T, 9] corners of an ASCII STL's vertex lines; None when they do not parse as three points a triangle."""
    import numpy as np

    lines = re.findall(rb"^[ \t]*vertex[ \t]+([^\n]*)", raw, re.M)
    try:
        values = np.fromstring(b" ".join(lines), dtype=np.float64, sep=" ")
    except ValueError:
        return None                                 # text these numbers do not parse as: left to the loader
    return values.reshape(-1, 9) if len(values) == 3 * len(lines) and len(lines) % 3 == 0 else None


def _check_ply(raw: bytes, end: int, name: str) -> None:
    """InputError when a PLY's vertices are not finite points or its faces name vertices it lacks (the loader drops
    or fails on them; a negative index it would wrap to another vertex)."""
    import numpy as np

    xyz, faces = _ply_geometry(raw, end)
    if xyz is not None:
        bad = np.flatnonzero(~np.isfinite(xyz).all(axis=1))
        if len(bad):
            raise _not_finite(name, "PLY", len(bad), int(bad[0]), at=" (counting from 0, as PLY does)")
    if xyz is not None and faces is not None and faces.size:
        wrong = np.flatnonzero(((faces < 0) | (faces >= len(xyz))).any(axis=1))
        if len(wrong):
            row = faces[wrong[0]]
            vertex = int(row[(row < 0) | (row >= len(xyz))][0])
            have = f"{len(xyz):,} {'vertex' if len(xyz) == 1 else 'vertices'}"
            raise InputError(f"{name} is a damaged PLY file: face {int(wrong[0]):,} names vertex {vertex:,}, but the "
                             f"file has {have} (0 to {len(xyz) - 1:,}); export it again")


def _ply_geometry(raw: bytes, end: int) -> tuple:
    """([V, 3] x y z, [F, k] vertex indices) of a PLY whose elements up to its vertices and faces have rows of one
    size (a face list of one length, k); None for what this reading does not cover, left to the loader."""
    import numpy as np

    lines = raw[:end].decode("latin-1").splitlines()
    fmt = next((line.split()[1] for line in lines if line.split()[:1] == ["format"] and len(line.split()) > 1), "")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        return None, None
    order = ">" if fmt == "binary_big_endian" else "<"
    elements = []                                   # [name, rows, [(property, type, list count type or None)]]
    for line in lines:
        words = line.split()
        if words[:1] == ["element"] and len(words) >= 3:
            elements.append([words[1], int(words[2]), []])
        elif words[:1] == ["property"] and elements:
            listed = words[1:2] == ["list"]
            if len(words) < (5 if listed else 3):
                return None, None
            kinds = words[2:4] if listed else [words[1], None]
            if any(k is not None and k not in PLY_NUMPY_TYPES for k in kinds):
                return None, None
            elements[-1][2].append((words[-1], kinds[1], kinds[0]) if listed else (words[-1], kinds[0], None))
    newline = raw.find(b"\n", end)
    at = newline + 1
    values = None
    if fmt == "ascii":
        try:
            values = np.fromstring(raw[at:], dtype=np.float64, sep=" ")
        except ValueError:
            return None, None
        at = 0
    xyz = faces = None
    for element, rows, props in elements:
        if xyz is not None and faces is not None:
            break
        lists = [i for i, p in enumerate(props) if p[2] is not None]
        if len(lists) > 1 or (lists and element != "face"):
            return xyz, faces                       # rows of many sizes: not walked here
        width = 0                                   # list length of this element's rows
        if lists and rows:
            before = props[:lists[0]]
            if values is not None:
                first = values[at + len(before)] if at + len(before) < len(values) else -1
            else:
                skip = sum(np.dtype(PLY_NUMPY_TYPES[t]).itemsize for _, t, _ in before)
                kind = order + PLY_NUMPY_TYPES[props[lists[0]][2]]
                first = np.frombuffer(raw, kind, 1, at + skip)[0] if at + skip < len(raw) else -1
            width = int(first)
            if width < 0 or first != width:
                return xyz, faces
        fields = []
        for prop, kind, count_kind in props:
            if count_kind is not None:
                fields += [(" count", order + PLY_NUMPY_TYPES[count_kind]),
                           (prop, order + PLY_NUMPY_TYPES[kind], (width,))]
            else:
                fields.append((prop, order + PLY_NUMPY_TYPES[kind]))
        if values is not None:
            per_row = len(props) + width
            if at + rows * per_row > len(values):
                return xyz, faces
            table = values[at:at + rows * per_row].reshape(rows, per_row)
            columns, c = {}, 0
            for prop, _, count_kind in props:
                n = 1 + width if count_kind is not None else 1
                columns[prop] = table[:, c + (1 if count_kind else 0):c + n]
                if count_kind is not None:
                    columns[" count"] = table[:, c]
                c += n
            at += rows * per_row
        else:
            try:
                dtype = np.dtype(fields)
            except (TypeError, ValueError):         # two properties of one name: left to the loader
                return xyz, faces
            if at + rows * dtype.itemsize > len(raw):
                return xyz, faces
            table = np.frombuffer(raw, dtype, rows, at)
            columns = {prop: table[prop].reshape(rows, -1) for prop in table.dtype.names}
            at += rows * dtype.itemsize
        if lists and rows and not (columns[" count"] == width).all():
            return xyz, faces                       # faces of several sizes: not walked here
        if element == "vertex" and all(k in columns for k in "xyz"):
            xyz = np.concatenate([columns[k] for k in "xyz"], axis=1)
        elif element == "face" and lists and props[lists[0]][0] in ("vertex_indices", "vertex_index"):
            faces = columns[props[lists[0]][0]].astype(np.int64) if values is None else columns[props[lists[0]][0]]
    return xyz, faces


def _check_gltf(doc: dict, buffers: list, name: str, kind: str) -> None:
    """InputError when a mesh the scene places has positions that are not finite (the job refuses them) or triangles
    naming vertices its part lacks; parts whose data is elsewhere, compressed or sparse are left to the loader."""
    import numpy as np

    from trellis.representations.gltf_scene import placed_meshes

    for m in placed_meshes(doc):
        mesh = doc["meshes"][m]
        label = f"mesh {m:,}" + (f" ({str(mesh['name'])[:40]!r})" if mesh.get("name") else "")
        for primitive in mesh.get("primitives", []):
            extensions = primitive.get("extensions")
            if primitive.get("mode", 4) not in (4, 5) or "POSITION" not in primitive.get("attributes", {}) \
                    or (isinstance(extensions, dict) and "KHR_draco_mesh_compression" in extensions):
                continue                            # points, lines, fans or compressed: not the voxeliser's
            count = doc["accessors"][primitive["attributes"]["POSITION"]].get("count", 0)
            positions = _values(doc, buffers, primitive["attributes"]["POSITION"], "VEC3")
            if positions is not None and positions.dtype.kind == "f":
                bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
                if len(bad):
                    raise _not_finite(name, kind, len(bad), int(bad[0]), at=f" of {label} (counting from 0)")
            indices = _values(doc, buffers, primitive["indices"], "SCALAR") if "indices" in primitive else None
            if indices is not None and indices.size and int(indices.max()) >= count:
                raise InputError(f"{name} is a damaged {kind} file: {label} has a triangle naming vertex "
                                 f"{int(indices.max()):,}, but its part has {count:,} vertices (0 to {count - 1:,}); "
                                 f"export it again")


def _values(doc: dict, buffers: list, index: int, kind: str):
    """gltf_scene.accessor_values of an accessor of the type its slot takes (POSITION a VEC3, indices a SCALAR);
    None for another type or what the reader leaves to the loader (sparse, another file's bytes, past its view)."""
    from trellis.representations.gltf_scene import AccessorError, accessor_values

    if doc["accessors"][index].get("type") != kind:
        return None
    try:
        return accessor_values(doc, buffers, index)
    except AccessorError:
        return None
