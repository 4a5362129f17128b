"""Draco mesh compression of a binary glTF (``KHR_draco_mesh_compression``), through DracoPy (Google's Draco
encoder, Apache-2.0):

    from trellis.export.formats.draco import draco_glb
    small = draco_glb(open("chair.glb", "rb").read())

Every triangle primitive (``mode`` 4, indexed or not) is encoded into one Draco buffer that gets its own
bufferView; the primitive names it in its extension object with the Draco unique id of each attribute. Its
accessors stay (count, componentType, type, min/max) without a bufferView, and describe the *decoded* geometry, as
the extension asks: Draco merges equal vertices, drops unused ones, splits non-manifold ones and reorders vertices
and faces, so counts and bounds are read back from a decode of the buffer just written (which also gives the
unique ids: DracoPy assigns them by the mix of attributes it is given). Instances of one geometry share its
buffer; an accessor that other geometries (or anything else) also read is copied first. The vertex and index data
of the compressed primitives leave the binary chunk; images and every other bufferView stay, repacked at 4-byte
offsets. The extension is listed as used and as required (no uncompressed fallback is kept).

Attributes: POSITION (``position_bits``), NORMAL (``normal_bits``, Draco's octahedral coding), TEXCOORD_0
(``uv_bits``) and TANGENT. DracoPy 2.2 cannot quantise a generic attribute, so TANGENT (VEC4) goes in as a
lossless float32 generic attribute: exact, but about 16 bytes per vertex, most of a normal-mapped file's
geometry. Another attribute, morph targets or sparse accessors on a triangle primitive raise ``ValueError``.

Quantisation: a coordinate is stored on a grid of ``2**bits - 1`` steps over the attribute's largest extent, so
a position moves by at most half a step (14 bits: 1/32766 of the object's size, 0.05 mm on a 1.8 m figure); UVs
at 12 bits move by at most 1/8190, an eighth of a texel of a 1024² texture. ``level`` is Draco's compression level
(0 fastest, 10 smallest).
"""
from __future__ import annotations

import json
import struct

import numpy as np

# read_glb is the shared GLB reader, named here too for the callers that read what draco_glb writes
from ...representations.gltf_scene import COMPONENT_TYPES, accessor_values, read_glb

__all__ = ["EXTENSION", "POSITION_BITS", "UV_BITS", "NORMAL_BITS", "LEVEL", "ATTRIBUTES", "draco_glb",
           "plain_glb", "read_glb", "pack_glb"]

EXTENSION = "KHR_draco_mesh_compression"
# glTF-Transform's defaults for position, UV and normal bits; level 7 is draco_encoder's default
POSITION_BITS, UV_BITS, NORMAL_BITS, LEVEL = 14, 12, 10, 7
ATTRIBUTES = ("POSITION", "NORMAL", "TEXCOORD_0", "TANGENT")       # what a compressed primitive may carry
DRACO_TYPES = {"POSITION": 0, "NORMAL": 1, "TEXCOORD_0": 3, "TANGENT": 4}    # Draco's GeometryAttribute types
TRIANGLES = 4
FLOAT, UNSIGNED_SHORT, UNSIGNED_INT = 5126, 5123, 5125
JSON_CHUNK, BIN_CHUNK = 0x4E4F534A, 0x004E4942


def pack_glb(doc: dict, binary: bytes) -> bytes:
    """A binary glTF of ``doc`` and ``binary``, each chunk padded to 4 bytes (JSON with spaces, BIN with zeros)."""
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<II", len(text), JSON_CHUNK) + text
    if binary:
        binary += b"\0" * (-len(binary) % 4)
        chunks += struct.pack("<II", len(binary), BIN_CHUNK) + binary
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


def own_buffers(doc: dict, binary: bytes) -> list:
    """The buffers accessor_values may read here: the GLB's own (its BIN chunk) alone, as it is the one buffer the
    compressed file is written back into."""
    return [None if "uri" in doc["buffers"][0] else binary]


def check_bits(**bits) -> None:
    for name, value in bits.items():
        lo, hi = (0, 10) if name == "level" else (1, 30)
        if not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"{name} must be an integer from {lo} to {hi}, not {value!r}")


def primitive_key(prim: dict) -> tuple:
    """What makes two primitives the same geometry (their indices and attribute accessors)."""
    return prim.get("indices"), tuple(sorted(prim["attributes"].items()))


def encoded_primitive(doc: dict, binary: bytes, prim: dict, position_bits: int, uv_bits: int, normal_bits: int,
                      level: int) -> tuple[bytes, dict]:
    """(the Draco buffer of ``prim``, what ``decoded`` reads back from it)."""
    import DracoPy

    attrs = prim["attributes"]
    unknown = sorted(set(attrs) - set(ATTRIBUTES))
    if unknown:
        raise ValueError(f"Draco is written for {ATTRIBUTES}; this primitive also has {unknown}")
    if prim.get("targets"):
        raise ValueError("a primitive with morph targets cannot be Draco-compressed here")
    if "POSITION" not in attrs:
        raise ValueError("a triangle primitive without POSITION cannot be Draco-compressed")
    data, buffers = {}, own_buffers(doc, binary)
    for name, index in attrs.items():
        acc = doc["accessors"][index]
        if acc["componentType"] != FLOAT or acc.get("normalized"):
            raise ValueError(f"{name} must be float to be Draco-compressed here (accessor {index})")
        data[name] = accessor_values(doc, buffers, index)
    count = len(data["POSITION"])
    if "indices" in prim:
        faces = accessor_values(doc, buffers, prim["indices"]).astype(np.int64).reshape(-1, 3)
    else:
        faces = np.arange(count - count % 3, dtype=np.int64).reshape(-1, 3)
    if len(faces) == 0:
        raise ValueError("a triangle primitive without a triangle cannot be Draco-compressed")
    if faces.min() < 0 or faces.max() >= count:
        raise ValueError(f"indices reach past the {count} vertices of the primitive")
    # DracoPy takes positions as float32 but insists on float64 for UVs and normals
    options = {"quantization_bits": position_bits, "compression_level": level}
    if "TEXCOORD_0" in data:
        options.update(tex_coord=data["TEXCOORD_0"].astype(np.float64), tex_coord_quantization_bits=uv_bits)
    if "NORMAL" in data:
        options.update(normals=data["NORMAL"].astype(np.float64), normal_quantization_bits=normal_bits)
    if "TANGENT" in data:
        options.update(generic_attributes={"TANGENT": data["TANGENT"].astype(np.float32)})
    buffer = DracoPy.encode(data["POSITION"].astype(np.float32), faces.astype(np.uint32), **options)
    return buffer, decoded(DracoPy.decode(buffer), attrs)


def decoded(mesh, attrs: dict) -> dict:
    """What the accessors of a compressed primitive need from its decoded Draco mesh: {"ids": {semantic: unique
    id}, "arrays": {semantic: [points, width] float32}, "faces": [F, 3], "points": the decoded vertex count}."""
    by_type = {a["attribute_type"]: a for a in mesh.attributes}
    ids, arrays = {}, {}
    for name in attrs:
        found = by_type.get(DRACO_TYPES[name])
        if found is None:
            raise ValueError(f"the Draco buffer lost {name}")
        ids[name] = int(found["unique_id"])
        arrays[name] = np.asarray(found["data"], dtype=np.float32)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    return {"ids": ids, "arrays": arrays, "faces": faces, "points": len(arrays["POSITION"])}


def point_accessor(acc: dict, values: np.ndarray, bounds: bool) -> None:
    """Make accessor ``acc`` describe ``values`` with no data of its own (the Draco buffer holds it)."""
    for key in ("bufferView", "byteOffset"):
        acc.pop(key, None)
    acc["count"] = len(values)
    if bounds or "min" in acc or "max" in acc:
        acc["min"] = values.min(axis=0).tolist()
        acc["max"] = values.max(axis=0).tolist()


def view_references(node, found: set | None = None) -> set:
    """Every bufferView index the glTF JSON ``node`` names (core properties and extensions alike)."""
    found = set() if found is None else found
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "bufferView" and isinstance(value, int):
                found.add(value)
            else:
                view_references(value, found)
    elif isinstance(node, list):
        for value in node:
            view_references(value, found)
    return found


def renumber_views(node, new_index: dict) -> None:
    """Rewrite every bufferView index in ``node`` through ``new_index``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "bufferView" and isinstance(value, int):
                node[key] = new_index[value]
            else:
                renumber_views(value, new_index)
    elif isinstance(node, list):
        for value in node:
            renumber_views(value, new_index)


def accessor_users(doc: dict) -> dict:
    """accessor index -> who reads it: a triangle primitive's ``primitive_key``, or "other" (any other use)."""
    users = {}
    for mesh in doc.get("meshes", []):
        for prim in mesh.get("primitives", []):
            key = primitive_key(prim) if prim.get("mode", TRIANGLES) == TRIANGLES else "other"
            for index in [prim.get("indices"), *prim["attributes"].values()]:
                if index is not None:
                    users.setdefault(index, []).append(key)
            for target in prim.get("targets", []):
                for index in target.values():
                    users.setdefault(index, []).append("other")
    for skin in doc.get("skins", []):
        if "inverseBindMatrices" in skin:
            users.setdefault(skin["inverseBindMatrices"], []).append("other")
    for animation in doc.get("animations", []):
        for sampler in animation.get("samplers", []):
            for index in (sampler["input"], sampler["output"]):
                users.setdefault(index, []).append("other")
    return users


def triangle_primitives(doc: dict) -> list:
    """The primitives to compress, each geometry given accessors of its own: writers share one accessor between
    meshes (trimesh, the faces of two meshes with equal index arrays), but a compressed accessor describes its
    own decoded geometry and holds no data that another primitive could still read."""
    import copy

    users = accessor_users(doc)
    prims = [p for m in doc.get("meshes", []) for p in m.get("primitives", []) if p.get("mode", TRIANGLES) == TRIANGLES]
    copies = {}                  # (geometry, accessor) -> its copy for that geometry
    for prim in prims:
        key = primitive_key(prim)
        for slot, index in [("indices", prim.get("indices")), *prim["attributes"].items()]:
            if index is None:
                continue
            readers = users[index]
            keeper = "other" if "other" in readers else readers[0]
            if keeper != key:
                if (key, index) not in copies:
                    copies[key, index] = len(doc["accessors"])
                    doc["accessors"].append(copy.deepcopy(doc["accessors"][index]))
                if slot == "indices":
                    prim["indices"] = copies[key, index]
                else:
                    prim["attributes"][slot] = copies[key, index]
    return prims


def draco_glb(data: bytes, *, position_bits: int = POSITION_BITS, uv_bits: int = UV_BITS,
              normal_bits: int = NORMAL_BITS, level: int = LEVEL) -> bytes:
    """``data`` (a binary glTF) with every triangle primitive Draco-compressed (see the module doc); a file with
    no triangle primitive comes back unchanged."""
    check_bits(position_bits=position_bits, uv_bits=uv_bits, normal_bits=normal_bits, level=level)
    doc, binary = read_glb(data)
    prims = triangle_primitives(doc)
    if not prims:
        return data
    views = doc.get("bufferViews", [])
    before = view_references(doc)
    keys = [primitive_key(prim) for prim in prims]       # taken now: a primitive without indices gets some
    encoded = {}                 # primitive key -> (Draco buffer, decode), shared by instances of one geometry
    for prim, key in zip(prims, keys):
        if key not in encoded:
            encoded[key] = encoded_primitive(doc, binary, prim, position_bits, uv_bits, normal_bits, level)
    accessors = doc["accessors"]
    for prim, key in zip(prims, keys):
        _, out = encoded[key]
        for name, index in prim["attributes"].items():
            point_accessor(accessors[index], out["arrays"][name], bounds=name == "POSITION")
        flat = out["faces"].reshape(-1, 1)
        if "indices" in prim:
            acc = accessors[prim["indices"]]
            if out["points"] - 1 > np.iinfo(COMPONENT_TYPES[acc["componentType"]]).max:
                acc["componentType"] = UNSIGNED_INT    # Draco splits non-manifold vertices: the count can grow
        else:                             # the decoded geometry is indexed: instances share one new accessor
            if "indices" not in out:
                out["indices"] = len(accessors)
                accessors.append({"componentType": UNSIGNED_SHORT if out["points"] <= 0xFFFF else UNSIGNED_INT,
                                  "type": "SCALAR"})
            prim["indices"] = out["indices"]
            acc = accessors[prim["indices"]]
        point_accessor(acc, flat, bounds=False)

    # Views only the compressed accessors read leave; the rest keep their order, renumbered.
    dropped = before - view_references(doc)
    kept = [i for i in range(len(views)) if i not in dropped]
    renumber_views(doc, {old: new for new, old in enumerate(kept)})
    payload = [binary[views[i].get("byteOffset", 0):views[i].get("byteOffset", 0) + views[i]["byteLength"]]
               if views[i].get("buffer", 0) == 0 else None for i in kept]
    new_views = [views[i] for i in kept]
    view_of = {}
    for key, (buffer, _) in encoded.items():
        view_of[key] = len(new_views)
        new_views.append({"buffer": 0, "byteLength": len(buffer)})
        payload.append(buffer)
    for prim, key in zip(prims, keys):
        prim.setdefault("extensions", {})[EXTENSION] = {"bufferView": view_of[key],
                                                        "attributes": dict(encoded[key][1]["ids"])}

    out_binary = bytearray()
    for view, part in zip(new_views, payload):
        if part is None:                  # a view of another (external) buffer keeps its offsets
            continue
        out_binary += b"\0" * (-len(out_binary) % 4)
        view["byteOffset"] = len(out_binary)
        out_binary += part
    out_binary += b"\0" * (-len(out_binary) % 4)
    doc["bufferViews"] = new_views
    buffers = doc.setdefault("buffers", [{}])
    buffers[0]["byteLength"] = len(out_binary)
    for key in ("extensionsUsed", "extensionsRequired"):
        if EXTENSION not in doc.setdefault(key, []):
            doc[key].append(EXTENSION)
    return pack_glb(doc, bytes(out_binary))


def plain_glb(data: bytes) -> bytes:
    """``data`` (a binary glTF) with every Draco-compressed primitive decoded back into plain accessors, for a
    viewer without a Draco decoder of its own (a browser's that would fetch one from the internet); the Draco
    buffers leave. A file without the extension comes back unchanged."""
    import DracoPy

    doc, binary = read_glb(data)
    prims = [p for mesh in doc.get("meshes", []) for p in mesh.get("primitives", [])
             if EXTENSION in p.get("extensions", {})]
    if not prims:
        return data
    views, accessors = doc["bufferViews"], doc["accessors"]
    meshes, filled = {}, {}               # Draco view -> its decode; accessor -> its new view (instances share)
    out, new_views = bytearray(), []

    def add_view(values: np.ndarray) -> int:
        out.extend(b"\0" * (-len(out) % 4))
        new_views.append({"buffer": 0, "byteOffset": len(out), "byteLength": values.nbytes})
        out.extend(values.tobytes())
        return len(new_views) - 1
    for prim in prims:
        ext = prim["extensions"].pop(EXTENSION)
        if not prim["extensions"]:
            del prim["extensions"]
        if ext["bufferView"] not in meshes:
            view = views[ext["bufferView"]]
            start = view.get("byteOffset", 0)
            mesh = DracoPy.decode(binary[start:start + view["byteLength"]])
            meshes[ext["bufferView"]] = ({int(a["unique_id"]): np.asarray(a["data"], np.float32)
                                          for a in mesh.attributes}, np.asarray(mesh.faces, np.uint32).reshape(-1))
        by_id, faces = meshes[ext["bufferView"]]
        arrays = {index: by_id[ext["attributes"][name]] for name, index in prim["attributes"].items()}
        if "indices" in prim:
            arrays[prim["indices"]] = faces
        for index, values in arrays.items():
            if index not in filled:
                filled[index] = add_view(np.ascontiguousarray(values))
                acc = accessors[index]
                acc.update(bufferView=filled[index], byteOffset=0, count=len(values),
                           componentType=UNSIGNED_INT if values.dtype == np.uint32 else FLOAT)
    # Every other view keeps its bytes, moved behind the decoded ones; the Draco views leave.
    draco_views = set(meshes)
    kept = [i for i in range(len(views)) if i not in draco_views]
    renumber = {old: len(new_views) + new for new, old in enumerate(kept)}
    for i in kept:
        view = dict(views[i])
        if view.get("buffer", 0) == 0:
            out.extend(b"\0" * (-len(out) % 4))
            start = view.get("byteOffset", 0)
            part = binary[start:start + view["byteLength"]]
            view["byteOffset"] = len(out)
            out.extend(part)
        new_views.append(view)
    # Images and the accessors not decoded here name the moved views; the decoded ones name their new views.
    renumber_views({k: v for k, v in doc.items() if k not in ("bufferViews", "accessors")}, renumber)
    for index, acc in enumerate(accessors):
        if index not in filled and "bufferView" in acc:
            acc["bufferView"] = renumber[acc["bufferView"]]
    out.extend(b"\0" * (-len(out) % 4))
    doc["bufferViews"] = new_views
    doc["buffers"][0]["byteLength"] = len(out)
    for key in ("extensionsUsed", "extensionsRequired"):
        if key in doc:
            doc[key] = [e for e in doc[key] if e != EXTENSION]
            if not doc[key]:
                del doc[key]
    return pack_glb(doc, bytes(out))
