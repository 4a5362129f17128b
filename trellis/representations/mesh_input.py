"""A user's 3-D model read for voxelisation: a trimesh.Trimesh in the pipeline's frame (z up).

    mesh = load_mesh("chair.glb")                  # y up in the file, z up here
    mesh = load_mesh("part.stl")                   # z up in the file and here
    mesh = load_mesh("scan.obj", up="z")           # the caller knows better than the format

The up axis (`up=None` reads it from the format):

* glTF / GLB: y up, as the glTF specification says. This app's own GLBs are written that way
  (`trellis.core.axes.Z_UP_TO_Y_UP`), and reading applies the exact inverse, so a result fed back in
  stands as it stood.
* OBJ: y up, the default of Blender's, Maya's and most DCC tools' OBJ export, and of this app's OBJ.
* STL, PLY: z up, the convention of CAD, 3-D printing and scanners (the reference's variant example is a
  z-up PLY).
* A trimesh.Trimesh or Scene given directly: z up, taken as it is. It has no format to go by, the pipeline
  works in z up, and a mesh this function returned must not turn again when given back. A mesh loaded
  from a glTF or OBJ by the caller's own trimesh.load needs `up="y"`.

Paths come from users (uploads, command lines, lists of files), so nothing is opened that is not a
regular file: a FIFO or a device named as the model, as an OBJ's material library or as a glTF's buffer
would block the reader or never end. Files a model names are looked up in its own folder only, and
materials are never read (voxelisation uses the geometry alone).

A glTF's scene graph is counted from its JSON before anything is built (`gltf_scene.check_scene`): a node
reuses its mesh at no cost in the file, so 2 000 nodes of one mesh are refused with their numbers instead of
being flattened into gigabytes, and a malformed field is named instead of failing somewhere inside trimesh.
A scene is then flattened here with one matrix a node (trimesh's Scene.dump multiplies each node's whole
path again, at a cost growing with the cube of its depth).
"""
from __future__ import annotations

import io
import os
import re
import stat
from typing import NamedTuple, Optional

import numpy as np

from ..core.axes import Y_UP_TO_Z_UP     # (x, y, z) -> (x, -z, y): undoes the GLB export
from . import gltf_scene

__all__ = [
    "MAX_FACES",
    "MAX_FILE_BYTES",
    "MESH_SUFFIXES",
    "UP_BY_FORMAT",
    "Y_UP_TO_Z_UP",
    "MeshInputError",
    "UserMesh",
    "load_mesh",
    "load_mesh_as_is",
    "read_regular_file",
]

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl")
UP_BY_FORMAT = {".glb": "y", ".gltf": "y", ".obj": "y", ".ply": "z", ".stl": "z"}
# A mesh beyond this is a scan or a CAD export that should be simplified first; voxelising it would
# take minutes and gigabytes for a 64^3 answer.
MAX_FACES = 4_000_000
# A model file, or a file it names, larger than this is no model the 4 M-triangle limit lets through.
MAX_FILE_BYTES = 1 << 30


class MeshInputError(ValueError):
    """A mesh that cannot be voxelised, with what is wrong and what to do."""


# ------------------------------------------------------------------------------------------ files

def read_regular_file(path, limit: int | None = MAX_FILE_BYTES, head: int | None = None) -> bytes:
    """The bytes of `path` (the first `head` bytes when given), opened only when it is a regular file:
    MeshInputError for a FIFO, a device, a socket or a folder, and for a file over `limit` bytes;
    FileNotFoundError when there is none."""
    path = os.fspath(path)
    name = os.path.basename(path) or path

    def regular(mode: int) -> None:
        if not stat.S_ISREG(mode):
            raise MeshInputError(f"{name} is not a regular file (a pipe, a device or a folder): give the model's "
                                 f"file")
    regular(os.stat(path).st_mode)
    # Non-blocking: a FIFO swapped in after the check above opens at once instead of waiting for a writer.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        regular(st.st_mode)
        if head is not None:
            return f.read(head)
        if limit is not None and st.st_size > limit:
            raise MeshInputError(f"{name} is {st.st_size / 2 ** 20:,.0f} MB, more than the {limit // 2 ** 20:,} MB "
                                 f"accepted: simplify (decimate) the model first")
        data = f.read()                 # sized from fstat: read(limit + 1) would allocate the whole limit
    if limit is not None and len(data) > limit:
        raise MeshInputError(f"{name} grew past {limit // 2 ** 20:,} MB while it was read")
    return data


def _regular_file_resolver(path: str):
    """A trimesh resolver for the files a model names: inside the model's folder, regular files only."""
    from trimesh.resolvers import FilePathResolver

    class RegularFileResolver(FilePathResolver):
        def get(self, name: str):
            for candidate in (name.strip(), name.strip().lstrip("/"), os.path.split(name)[-1]):
                try:
                    target = self.absolute(candidate)
                except ValueError:              # outside the model's folder
                    continue
                try:
                    return read_regular_file(target)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                except MeshInputError as err:         # a pipe, a device, a folder, too large
                    raise MeshInputError(f"{self.file_name} names another file that cannot be used: {err}") from None
            raise FileNotFoundError(f"{name}: not found beside the model")

        def namespaced(self, namespace: str):
            return RegularFileResolver(os.path.join(self.parent, namespace))

    return RegularFileResolver(path)


# ------------------------------------------------------------------------------------------ loading

def _format(name: str, file_type: str | None) -> str:
    ext = ("." + file_type.lower().lstrip(".")) if file_type else os.path.splitext(name)[1].lower()
    if ext not in MESH_SUFFIXES:
        raise MeshInputError(f"{os.path.basename(name) or 'the file'}: not a 3-D model file; use one of "
                             f"{', '.join(s[1:].upper() for s in MESH_SUFFIXES)}")
    return ext


def _read(source, file_type: str | None, as_is: bool = False):
    """(trimesh geometry, format) of a path or a binary file object; `as_is`: no vertex merged or dropped, and the
    UVs read (materials are still not: their images are not needed)."""
    import trimesh

    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        ext = _format(path, file_type)
        try:
            data = read_regular_file(path)
        except (FileNotFoundError, NotADirectoryError):
            raise MeshInputError(f"{path}: no such file") from None
        except PermissionError:
            raise MeshInputError(f"{path}: permission denied") from None
        resolver, name = _regular_file_resolver(os.path.abspath(path)), os.path.basename(path)
    else:
        if not file_type:
            raise MeshInputError("a 3-D model given as a file object needs its file_type (e.g. 'glb')")
        ext = _format("", file_type)
        data, resolver, name = None, None, "the file"
    if ext in (".glb", ".gltf"):                   # its scene graph counted before trimesh builds anything
        data = source.read() if data is None else data
        data = data.encode("utf-8") if isinstance(data, str) else data
        doc = checked_gltf(data, ext, name)
        if as_is and ext == ".glb":
            data = with_uv_materials(data, doc)
    if ext == ".obj":
        data = source.read() if data is None else data
        data = without_trailing_comments(data.encode("utf-8") if isinstance(data, str) else data)
    stream = source if data is None else io.BytesIO(data)
    extra = {"skip_materials": True} if ext in (".glb", ".gltf", ".obj") and not as_is else {}
    if as_is:
        extra["process"] = False
    try:
        return trimesh.load(stream, file_type=ext[1:], resolver=resolver, **extra), ext
    except MeshInputError:
        raise
    except Exception as err:       # trimesh raises many kinds on a damaged or mislabelled file
        raise MeshInputError(f"{name} cannot be read as a 3-D model ({type(err).__name__}: {err}); export it "
                             f"again as GLB, OBJ, PLY or STL") from None


# A v / vt / vn / f line's values, then a # comment: trimesh reads the comment as values and fails.
_TRAILING_COMMENT = re.compile(rb"^([ \t]*(?:v|vt|vn|f)[ \t][^#\n]*)#[^\n]*", re.M)


def without_trailing_comments(data: bytes) -> bytes:
    """An OBJ's bytes with the comments after a vertex's or a face's values removed (a comment ends its line)."""
    return _TRAILING_COMMENT.sub(rb"\1", data) if b"#" in data else data


def checked_gltf(data: bytes, ext: str, name: str = "the file") -> dict:
    """The JSON of a GLB's or a .gltf's `data`, after gltf_scene.check_scene with MAX_FACES: MeshInputError,
    starting with `name`, for a malformed document or one whose scene graph places too much."""
    try:
        doc = gltf_scene.read_glb_json(data) if ext == ".glb" else gltf_scene.read_json(data)
        gltf_scene.check_scene(doc, MAX_FACES)
    except gltf_scene.GltfError as err:
        raise MeshInputError(f"{name} {err}") from None
    return doc


def placed_parts(scene) -> list:
    """(mesh, vertices, faces) of each triangle mesh a trimesh.Scene places, in its graph's order, moved as
    Scene.dump() moves them (faces reversed where a transform mirrors) but with one matrix a node, each from its
    parent's, and no copy of the meshes."""
    import trimesh
    from trimesh.transformations import flips_winding, transform_points
    from trimesh.util import allclose

    forest = scene.graph.transforms
    parents, edges, world = forest.parents, forest.edge_data, {}

    def matrix(node):
        chain = []
        while node not in world:
            parent = parents.get(node)
            if parent is None or parent == node:         # a root: the base frame, or a node hung nowhere
                world[node] = np.eye(4)
                break
            chain.append(node)
            if len(chain) > len(parents):
                raise MeshInputError("the scene's transforms form a loop: a part is its own parent")
            node = parent
        for child in reversed(chain):
            parent = parents[child]
            world[child] = world[parent] @ np.asarray(edges[(parent, child)].get("matrix", np.eye(4)), np.float64)
        return world[chain[0]] if chain else world[node]

    parts = []
    for node in scene.graph.nodes_geometry:
        mesh = scene.geometry.get(forest.node_data[node]["geometry"])
        if not isinstance(mesh, trimesh.Trimesh):
            continue
        m = matrix(node)
        vertices, faces = np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)
        if not allclose(m, np.eye(4), 1e-8):                      # trimesh's own tests, as Scene.dump makes them
            vertices = transform_points(vertices, m)
            if not allclose(m[:3, :3], np.eye(3), 1e-6) and flips_winding(m):
                faces = np.ascontiguousarray(faces[:, ::-1])
        parts.append((mesh, vertices, faces))
    return parts


def load_mesh(source, up: str | None = None, file_type: str | None = None):
    """A trimesh.Trimesh in the pipeline's frame (z up) from a path (GLB, glTF, OBJ, PLY, STL), a binary file
    object with its `file_type`, a Trimesh or a Scene (all its meshes, placed by the scene's transforms).

    `up`: "y" or "z", the up axis of the source; None reads it from the format (UP_BY_FORMAT; z for a Trimesh
    or Scene given directly, see the module's docstring). `file_type` ("glb", ".obj", ...) overrides a path's
    suffix, for a file whose bytes say another format than its name."""
    import trimesh

    if up not in (None, "y", "z"):
        raise ValueError(f"up must be None, 'y' or 'z', not {up!r}")
    fmt = None
    if not isinstance(source, trimesh.parent.Geometry):         # a path or a file object
        source, fmt = _read(source, file_type)
    if isinstance(source, trimesh.Scene):
        parts = placed_parts(source)
        if not parts:
            raise MeshInputError("the scene holds no triangle mesh (only points, lines or nothing)")
        offsets = np.cumsum([0] + [len(v) for _, v, _ in parts[:-1]])
        source = trimesh.Trimesh(vertices=np.concatenate([v for _, v, _ in parts]),
                                 faces=np.concatenate([f + o for (_, _, f), o in zip(parts, offsets)]), process=False)
    if not isinstance(source, trimesh.Trimesh):
        raise MeshInputError(f"the file holds a {type(source).__name__}, not a triangle mesh: a shape needs "
                             f"faces, not only points or lines")
    if (up or UP_BY_FORMAT.get(fmt, "z")) == "y":
        vertices = np.asarray(source.vertices, dtype=np.float64) @ Y_UP_TO_Z_UP
        source = trimesh.Trimesh(vertices=vertices, faces=source.faces, process=False)
    return source


def with_uv_materials(data: bytes, doc: dict | None = None) -> bytes:
    """A GLB whose primitives with UVs (TEXCOORD_0) but no material get a plain one: trimesh keeps a primitive's UVs
    only with a material, and Blender's glTF export without materials writes them so. Anything else unchanged.
    `doc`: its JSON as `checked_gltf` returned it (changed here), else read and checked here (MeshInputError)."""
    import json
    import struct

    if len(data) < 20 or data[:4] != b"glTF" or data[16:20] != b"JSON":
        return data
    length = struct.unpack_from("<I", data, 12)[0]
    doc = checked_gltf(data, ".glb") if doc is None else doc
    bare = [p for m in doc.get("meshes", []) for p in m.get("primitives", [])
            if "TEXCOORD_0" in p.get("attributes", {}) and "material" not in p]
    if not bare:
        return data
    doc.setdefault("materials", []).append({"name": "plain"})
    for primitive in bare:
        primitive["material"] = len(doc["materials"]) - 1
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    rest = data[20 + length:]
    return struct.pack("<4sII", b"glTF", 2, 20 + len(text) + len(rest)) + struct.pack("<I4s", len(text), b"JSON") \
        + text + rest


class UserMesh(NamedTuple):
    """A user's model as its file holds it, turned to the pipeline's frame (z up) exactly."""
    vertices: np.ndarray           # [V, 3] float64: the file's values, axes permuted (no rounding)
    faces: np.ndarray              # [F, 3] int64, in the file's order
    uvs: Optional[np.ndarray]      # [V, 2] float64 as trimesh reads them (v up), None where a part has none
    up: str                        # the file's up axis, "y" or "z"
    meshes: int                    # the meshes of the file joined here


def load_mesh_as_is(source, up: str | None = None, file_type: str | None = None) -> UserMesh:
    """The model of `source` (as `load_mesh` takes it) with nothing merged, dropped or reordered: a scene's meshes
    joined in the file's order, each placed by the scene's transforms, with their UVs when every one has some."""
    import trimesh

    if up not in (None, "y", "z"):
        raise ValueError(f"up must be None, 'y' or 'z', not {up!r}")
    fmt = None
    if not isinstance(source, trimesh.parent.Geometry):
        source, fmt = _read(source, file_type, as_is=True)
    parts = placed_parts(source) if isinstance(source, trimesh.Scene) else \
        [(source, np.asarray(source.vertices, np.float64), np.asarray(source.faces, np.int64))] \
        if isinstance(source, trimesh.Trimesh) else []
    if not parts:
        raise MeshInputError("the file holds no triangle mesh (only points, lines or nothing)")
    vertices, faces, uvs, offset = [], [], [], 0
    for part, v, f in parts:
        vertices.append(v)
        faces.append(f + offset)
        uv = getattr(part.visual, "uv", None)
        uvs.append(None if uv is None or len(uv) != len(v) else np.asarray(uv, dtype=np.float64))
        offset += len(v)
    axis = up or UP_BY_FORMAT.get(fmt, "z")
    v = np.concatenate(vertices)
    if axis == "y":
        v = v @ Y_UP_TO_Z_UP
    uv = None if any(u is None for u in uvs) else np.concatenate(uvs)
    return UserMesh(v, np.concatenate(faces), uv, axis, len(parts))

