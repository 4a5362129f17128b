"""What a glTF scene graph makes of its meshes, counted from the file's JSON before any geometry is built, and the
one reader of its accessors' values that the library and the app share.

    doc = read_glb_json(data)                       # or read_json(text) for a .gltf
    count = check_scene(doc, max_triangles=4_000_000)
    count.triangles, count.nodes, count.depth       # what a reader would build, from the JSON alone

    doc, binary = read_glb(data)                    # the JSON and the BIN chunk of a whole GLB
    buffers = file_buffers(doc, binary)             # each buffer the file holds (None for another file's)
    for m in placed_meshes(doc):                    # the meshes the scene places, each once
        xyz = accessor_values(doc, buffers, doc["meshes"][m]["primitives"][0]["attributes"]["POSITION"])

A glTF node places its mesh once more wherever it stands, so a file of a few hundred kB whose 2 000 nodes
name one 20 k-triangle mesh is 41 M triangles once flattened. The counts here follow the scene graph the way a
reader walks it (the chosen scene's root nodes, their children, each node's mesh, each primitive's accessor
counts), so such a file is refused with its numbers before a single copy is made. The walk is iterative:
a 1 000-level hierarchy or a node that is its own child is measured or refused, never recursed into.

The fields the walk reads are checked on the way (their JSON types, indices in range, whole non-negative
counts), so a malformed but parseable document gets a GltfError that names the field instead of an
AttributeError or a KeyError deep inside a reader. The glTF 2.0 rules applied: the node hierarchy is a forest
(one parent at most, no cycles, the scene's nodes are roots), primitives default to mode 4 (triangles).

accessor_values reads an accessor where its bufferView says, its byteStride included, as a view of the buffer's
bytes (no copy: a 100 MB GLB's positions are checked without a second 100 MB); normalized integers come back as the
integers stored. What it does not read (sparse accessors, an accessor without a bufferView, an undefined type, a
buffer in another file, values past their bufferView) raises AccessorError, which a lenient caller catches.
"""
from __future__ import annotations

import base64
import json
import struct
from typing import Iterator, NamedTuple

__all__ = ["COMPONENT_TYPES", "MAX_DEPTH", "MAX_NODES", "MAX_PARTS", "VERTICES_PER_TRIANGLE", "WIDTHS",
           "AccessorError", "GltfError", "SceneCount", "accessor_values", "check_scene", "count_scene", "file_buffers",
           "glb_binary", "placed_meshes", "placed_nodes", "read_glb", "read_glb_json", "read_json"]

# Nodes a file may declare: a large CAD assembly has a few thousand parts; a reader makes a graph entry for each.
MAX_NODES = 10_000
# Levels of the node hierarchy: far deeper than rigs and assemblies go (a character's finger tip is ~15 levels
# down), far below Python's recursion limit (1 000) that recursive scene walkers in other libraries reach.
MAX_DEPTH = 256
# Primitives built (declared) or placed (once per node that uses their mesh): each is a mesh object a reader
# makes and moves, and each holds at least one triangle in any real model.
MAX_PARTS = 50_000
# Corners a triangle needs at most: the vertex limit that goes with a triangle limit.
VERTICES_PER_TRIANGLE = 3

_LISTS = ("accessors", "animations", "bufferViews", "buffers", "cameras", "images", "materials", "meshes",
          "nodes", "samplers", "scenes", "skins", "textures")
_TRANSFORMS = {"matrix": 16, "translation": 3, "rotation": 4, "scale": 3}
_TRIANGLE_MODES = (4, 5, 6)                     # triangles, strip, fan; 0-3 are points and lines
# numpy's type of each accessor componentType (glTF stores little-endian), and the values of each accessor type.
COMPONENT_TYPES = {5120: "i1", 5121: "u1", 5122: "<i2", 5123: "<u2", 5125: "<u4", 5126: "<f4"}
WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}


class GltfError(ValueError):
    """A glTF document that is malformed, or whose scene graph places more than is accepted; the message is a
    sentence that follows the file's name."""


class AccessorError(ValueError):
    """An accessor whose values accessor_values does not read; the message names it ("accessor 3 ...")."""


class SceneCount(NamedTuple):
    """What the document builds (every mesh once) and what its scene places (each node's mesh once per node)."""
    triangles: int             # placed by the scene graph
    vertices: int              # placed by the scene graph
    parts: int                 # primitives placed
    instances: int             # nodes that place a mesh
    nodes: int                 # declared
    depth: int                 # levels of the placed hierarchy (a root alone: 1)
    mesh_triangles: int        # of every mesh once, placed or not (a reader builds them all)
    mesh_vertices: int
    mesh_parts: int            # primitives declared


# ------------------------------------------------------------------------------------------ reading

def read_json(raw: bytes) -> dict:
    """The JSON object of a .gltf file (or a GLB's JSON chunk); GltfError when it is no JSON object."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        reason = "JSON nested too deep" if isinstance(err, RecursionError) else str(err)
        raise GltfError(f"is a damaged glTF file: its JSON cannot be read ({reason})") from None
    if not isinstance(doc, dict):
        raise GltfError(f"is a damaged glTF file: its JSON is {_kind(doc)}, not an object")
    return doc


def read_glb_json(data: bytes) -> dict:
    """The JSON object of a GLB file's first chunk (the binary chunk is not read)."""
    if data[:4] != b"glTF":
        raise GltfError("cannot be read as a 3-D model (it has no GLB header); export it again as GLB, OBJ, PLY or STL")
    if len(data) < 20:
        raise GltfError("is a damaged GLB file (too short)")
    length, kind = struct.unpack_from("<I4s", data, 12)
    if kind != b"JSON":
        raise GltfError("is a damaged GLB file (its first chunk is not JSON)")
    if 20 + length > len(data):
        raise GltfError(f"is a damaged GLB file (its JSON chunk says {length:,} bytes, the file holds "
                        f"{len(data) - 20:,}): it was cut short; export it again")
    return read_json(data[20:20 + length])


def read_glb(data: bytes) -> tuple[dict, bytes]:
    """(the JSON object, the BIN chunk or b"") of a whole GLB file: glTF 2.0 and as long as its header says;
    GltfError otherwise."""
    if len(data) >= 12 and data[:4] == b"glTF":
        version, length = struct.unpack_from("<II", data, 4)
        if version != 2:
            raise GltfError(f"is not a binary glTF 2.0 file (its header says version {version}): export it again")
        if length > len(data):
            raise GltfError(f"is a damaged GLB file (its header says {length:,} bytes, the file holds {len(data):,}): "
                            f"it was cut short; export it again")
        data = data if length == len(data) else data[:length]
    return read_glb_json(data), glb_binary(data) or b""


def glb_binary(data: bytes) -> bytes | None:
    """The BIN chunk of a GLB's bytes (the chunk after its JSON); None when it has none."""
    if len(data) < 20:
        return None
    at = 20 + struct.unpack_from("<I", data, 12)[0]
    if at + 8 > len(data) or data[at + 4:at + 8] != b"BIN\x00":
        return None
    return data[at + 8:at + 8 + struct.unpack_from("<I", data, at)[0]]


def file_buffers(doc: dict, binary: bytes | None) -> list:
    """The bytes of each of `doc`'s buffers that the file itself holds: a GLB's BIN chunk (`binary`; None for a
    .gltf) as the first buffer when it has no uri, a data: URI's base64; None for a buffer kept in another file."""
    found = []
    for i, buffer in enumerate(doc.get("buffers", [])):
        uri = buffer.get("uri")
        data = None
        if uri is None and i == 0:
            data = binary
        elif isinstance(uri, str) and uri.startswith("data:") and ";base64," in uri[:200]:
            try:
                data = base64.b64decode(uri.split(",", 1)[1], validate=False)
            except ValueError:
                data = None
        found.append(data)
    return found


def accessor_values(doc: dict, buffers: list, index: int):
    """Accessor `index` as a [count, width] numpy array of its component type, read from `buffers`
    (file_buffers) where its bufferView says, byteStride included: a read-only view of the bytes, not a copy.
    AccessorError when it is sparse, has no bufferView, has a componentType or type glTF does not define, reads a
    buffer that is None or missing, has a byteStride shorter than its values, or runs past its bufferView."""
    import numpy as np

    accessor = doc["accessors"][index]
    if "sparse" in accessor or "bufferView" not in accessor:
        raise AccessorError(f"accessor {index} is sparse or has no data of its own (no bufferView)")
    kind, width = COMPONENT_TYPES.get(accessor.get("componentType")), WIDTHS.get(accessor.get("type"))
    if kind is None or width is None:
        raise AccessorError(f"accessor {index} has componentType {accessor.get('componentType')!r} and type "
                            f"{accessor.get('type')!r}, not a glTF 2.0 pair")
    dtype = np.dtype(kind)
    view = doc["bufferViews"][accessor["bufferView"]]
    which = view.get("buffer", -1)
    data = buffers[which] if isinstance(which, int) and 0 <= which < len(buffers) else None
    if data is None:
        raise AccessorError(f"accessor {index} reads buffer {which!r}, which this file does not hold")
    count, row = accessor.get("count", 0), dtype.itemsize * width
    stride = view.get("byteStride", row)
    if not isinstance(stride, int) or stride < row:
        raise AccessorError(f"accessor {index} has {row}-byte values but its bufferView's byteStride is {stride!r}")
    if not count:
        return np.zeros((0, width), dtype)
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    end = min(len(data), view.get("byteOffset", 0) + view.get("byteLength", 0))
    if start + (count - 1) * stride + row > end:
        raise AccessorError(f"accessor {index} runs past the end of its bufferView")
    return np.ndarray((count, width), dtype, buffer=data, offset=start, strides=(stride, dtype.itemsize))


# ------------------------------------------------------------------------------------------ counting

def check_scene(doc: dict, max_triangles: int) -> SceneCount:
    """count_scene(doc), and GltfError with the numbers when the document has more than MAX_NODES nodes or
    MAX_DEPTH levels, or builds or places more than `max_triangles` triangles (three vertices a triangle) or
    MAX_PARTS primitives."""
    count = count_scene(doc)
    if count.nodes > MAX_NODES:
        raise GltfError(f"has {count.nodes:,} nodes, more than the {MAX_NODES:,} accepted: join its parts (e.g. "
                        f"Blender's Join) and export it again")
    if count.depth > MAX_DEPTH:
        raise GltfError(f"has a node hierarchy {count.depth:,} levels deep, more than the {MAX_DEPTH:,} accepted: "
                        f"flatten it (apply the parents' transforms) and export it again")
    copies = f" ({count.instances:,} nodes place copies of its meshes' {count.mesh_triangles:,} triangles)"
    for what, built, placed, limit, hint in [
            ("triangles", count.mesh_triangles, count.triangles, max_triangles, "simplify (decimate) it"),
            ("vertices", count.mesh_vertices, count.vertices, VERTICES_PER_TRIANGLE * max_triangles,
             "simplify (decimate) it"),
            ("mesh parts (primitives)", count.mesh_parts, count.parts, MAX_PARTS, "join its parts")]:
        if built > limit:
            raise GltfError(f"has {built:,} {what} in its meshes, more than the {limit:,} accepted: {hint} first")
        if placed > limit:
            raise GltfError(f"places {placed:,} {what} in its scene{copies if what == 'triangles' else ''}, more "
                            f"than the {limit:,} accepted: keep fewer copies of its meshes, or {hint} first")
    return count


def count_scene(doc: dict) -> SceneCount:
    """The counts of `doc` (see SceneCount), from its accessors' declared counts, in one pass over its nodes
    (no recursion); GltfError for a malformed document or a node hierarchy that is no forest."""
    if not isinstance(doc, dict):
        raise GltfError(f"is a damaged glTF file: its JSON is {_kind(doc)}, not an object")
    for key in _LISTS:
        _objects(doc, key)
    nodes = doc.get("nodes", [])
    per_mesh = _mesh_counts(doc)
    placed, instances, depth = [0, 0, 0], 0, 0
    for node, level in placed_nodes(doc):
        depth = max(depth, level)
        if "mesh" in nodes[node]:
            placed = [a + b for a, b in zip(placed, per_mesh[nodes[node]["mesh"]])]
            instances += 1
    built = [sum(c[i] for c in per_mesh) for i in range(3)]
    return SceneCount(*placed, instances, len(nodes), depth, *built)


def placed_nodes(doc: dict) -> Iterator[tuple]:
    """(node, level) of each node the scene places (its roots at level 1, then their children, any order), walked
    without recursion; GltfError first for malformed nodes or scenes or a node hierarchy that is no forest."""
    for key in ("meshes", "nodes", "scenes"):
        _objects(doc, key)
    nodes = doc.get("nodes", [])
    parent = _parents(nodes, len(doc.get("meshes", [])))
    stack = [(root, 1) for root in _roots(doc, parent)]
    while stack:                                                # a forest by now: each node is met once
        node, level = stack.pop()
        yield node, level
        stack.extend((child, level + 1) for child in nodes[node].get("children", []))


def placed_meshes(doc: dict) -> list:
    """The indices of the meshes the scene places, in order, each once however many nodes place it."""
    nodes = doc.get("nodes", [])
    return sorted({nodes[node]["mesh"] for node, _ in placed_nodes(doc) if "mesh" in nodes[node]})


def _mesh_counts(doc: dict) -> list:
    """[(triangles, vertices, primitives)] of each mesh, from the accessors' counts."""
    accessors, materials = doc.get("accessors", []), doc.get("materials", [])
    counts = []
    for i, accessor in enumerate(accessors):
        counts.append(_index(accessor.get("count", 0), None, f"accessors[{i}].count"))
    result = []
    for m, mesh in enumerate(doc.get("meshes", [])):
        triangles = vertices = 0
        primitives = _objects(mesh, "primitives", f"meshes[{m}].")
        for p, prim in enumerate(primitives):
            where = f"meshes[{m}].primitives[{p}]"
            attributes = prim.get("attributes", {})
            if not isinstance(attributes, dict):
                raise GltfError(f"is a damaged glTF file: {where}.attributes is {_kind(attributes)}, not an "
                                f"object")
            for name, value in attributes.items():
                _index(value, len(accessors), f"{where}.attributes.{name}", "accessors")
            mode = prim.get("mode", 4)
            if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 6:
                raise GltfError(f"is a damaged glTF file: {where}.mode is {_shown(mode)}, not a primitive mode (0 "
                                f"to 6)")
            if "material" in prim:
                _index(prim["material"], len(materials), f"{where}.material", "materials")
            if "indices" in prim:
                corners = counts[_index(prim["indices"], len(accessors), f"{where}.indices", "accessors")]
            elif "POSITION" in attributes:
                corners = counts[attributes["POSITION"]]
            elif mode in _TRIANGLE_MODES:
                raise GltfError(f"is a damaged glTF file: {where} has triangles but no POSITION attribute")
            else:
                corners = 0
            vertices += counts[attributes["POSITION"]] if "POSITION" in attributes else 0
            if mode in _TRIANGLE_MODES:
                triangles += corners // 3 if mode == 4 else max(corners - 2, 0)
        result.append((triangles, vertices, len(primitives)))
    return result


def _parents(nodes: list, meshes: int) -> list:
    """Each node's parent (-1 for none), after checking the nodes' fields; GltfError for a node with two
    parents, its own child, or a cycle."""
    parent = [-1] * len(nodes)
    for i, node in enumerate(nodes):
        if "mesh" in node:
            _index(node["mesh"], meshes, f"nodes[{i}].mesh", "meshes")
        for key, size in _TRANSFORMS.items():
            if key in node and not (isinstance(node[key], list) and len(node[key]) == size
                                    and all(_is_number(x) for x in node[key])):
                raise GltfError(f"is a damaged glTF file: nodes[{i}].{key} is not a list of {size} numbers")
        children = node.get("children", [])
        if not isinstance(children, list):
            raise GltfError(f"is a damaged glTF file: nodes[{i}].children is {_kind(children)}, not a list")
        for c, child in enumerate(children):
            child = _index(child, len(nodes), f"nodes[{i}].children[{c}]", "nodes")
            if child == i:
                raise GltfError(f"is a damaged glTF file: node {i:,} is its own child; the node hierarchy must "
                                f"be a tree")
            if parent[child] == i:
                raise GltfError(f"is a damaged glTF file: node {i:,} lists its child {child:,} twice")
            if parent[child] >= 0:
                raise GltfError(f"is a damaged glTF file: node {child:,} is a child of node {parent[child]:,} and "
                                f"of node {i:,}; a glTF node has one parent at most")
            parent[child] = i
    state = [0] * len(nodes)                    # 0 not seen, 1 on the chain being followed, 2 known to end
    for start in range(len(nodes)):
        chain, node = [], start
        while node >= 0 and state[node] == 0:
            state[node] = 1
            chain.append(node)
            node = parent[node]
        if node >= 0 and state[node] == 1:
            raise GltfError(f"is a damaged glTF file: node {node:,} is its own ancestor (its children lead back "
                            f"to it); the node hierarchy must be a tree")
        for n in chain:
            state[n] = 2
    return parent


def _roots(doc: dict, parent: list) -> list:
    """The root nodes of the scene a reader shows: `scene`, else the first one; none without scenes."""
    scenes = doc.get("scenes", [])
    if "scene" in doc:
        which = _index(doc["scene"], len(scenes), "scene", "scenes")
    elif not scenes:
        return []
    else:
        which = 0
    roots = scenes[which].get("nodes", [])
    if not isinstance(roots, list):
        raise GltfError(f"is a damaged glTF file: scenes[{which}].nodes is {_kind(roots)}, not a list")
    seen = set()
    for r, root in enumerate(roots):
        root = _index(root, len(parent), f"scenes[{which}].nodes[{r}]", "nodes")
        if parent[root] >= 0:
            raise GltfError(f"is a damaged glTF file: node {root:,} is a root of scene {which} and a child of "
                            f"node {parent[root]:,}")
        if root in seen:
            raise GltfError(f"is a damaged glTF file: scene {which} lists node {root:,} twice")
        seen.add(root)
    return roots


# ------------------------------------------------------------------------------------------ field checks

def _objects(owner: dict, key: str, prefix: str = "") -> list:
    """owner[key] when it is a list of JSON objects (an empty list when absent)."""
    value = owner.get(key, [])
    if not isinstance(value, list):
        raise GltfError(f"is a damaged glTF file: {prefix}{key} is {_kind(value)}, not a list")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise GltfError(f"is a damaged glTF file: {prefix}{key}[{i}] is {_kind(item)}, not an object")
    return value


def _index(value, size: int | None, where: str, items: str = "") -> int:
    """`value` when it is a whole number from 0 (an index below `size` of the file's `items` when given)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise GltfError(f"is a damaged glTF file: {where} is {_shown(value)}, not a whole number from 0")
    if size is not None and value >= size:
        held = f"no {items}" if size == 0 else f"only {items} 0 to {size - 1:,}"
        raise GltfError(f"is a damaged glTF file: {where} is {value:,}, but the file has {held}")
    return value


def _shown(value) -> str:
    """A JSON value in a message: a short scalar as written, a list or an object by its kind."""
    return _kind(value) if isinstance(value, (dict, list)) else json.dumps(value)[:40]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true or false", type(None): "null"}.get(
        type(value), "a number")
