"""Textured mesh export: GLB (spec §15.6) and OBJ + MTL + PNG.

Inputs are in the TRELLIS world frame (z up) with UVs in the OBJ convention (v up, see
``uv.unwrap``) and a texture image stored top row first. Both formats are written y up, the
convention of glTF and of most OBJ importers: (x, y, z) -> (x, z, -y).

Material: PBR with the baked image as base colour, roughness 1 and **metallic 0**. The reference
leaves metallicFactor unset, which glTF reads as 1.0 and makes assets look dark in most viewers
(spec §19.6); we set it on purpose.

Normals: smooth vertex normals split at creases (``normals.split_vertex_normals``, 60° by default), in
the GLB as the primitive's NORMAL and in the OBJ as ``vn``. A crease adds copies of its vertices (with
the same UV), so a file has at least as many vertices as the UV-split mesh given here.
``crease_angle=None`` writes no normals (viewers then shade flat); ``crease_angle`` of ``NO_SPLIT_ANGLE`` (180) or
more splits nothing: one smooth normal per vertex (``unsplit_normals``), so a file keeps the mesh's own vertices
and faces (a user's model baked with ``keep_mesh``).
"""
from __future__ import annotations

import os

import numpy as np

from ..core.axes import Z_UP_TO_Y_UP      # (x, y, z) -> (x, z, -y): the GLB/OBJ are y-up
from .normals import DEFAULT_CREASE_ANGLE, corner_angles, face_normals, split_vertex_normals
from .rows import row_norm

__all__ = ["Z_UP_TO_Y_UP", "PNG_COMPRESS_LEVEL", "NO_SPLIT_ANGLE", "texture_image", "rgba_image",
           "unsplit_normals", "with_normals", "make_glb_mesh", "glb_bytes", "save_glb", "save_obj", "write_obj_files",
           "write_rows"]

# A crease angle from which no edge is a crease: normals are then made without splitting any vertex (even at
# non-manifold edges and vertices, which split_vertex_normals always splits).
NO_SPLIT_ANGLE = 180.0


def _np(x, dtype):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)


# zlib level of the texture PNG (GLB and OBJ): a higher one spends most of a GLB's writing time compressing the
# texture for a slightly smaller file; lossless either way (docs/benchmarks/export.md#assembly).
PNG_COMPRESS_LEVEL = 1


def texture_image(texture):
    """The texture as an RGB PIL image whose saves as PNG (trimesh's GLB export calls ``img.save(f, format="png")``,
    the OBJ writer saves to a .png path) write ``png.encode_png``'s file at PNG_COMPRESS_LEVEL, its rows deflated
    on several cores; other formats save as PIL saves them. Such an image given (``TexturedMesh.png_texture``) is
    returned as it is, so that the files made from it share its one encode."""
    from PIL import Image

    from .png import FastPngImage, fast_png_image
    if isinstance(texture, FastPngImage) and texture.mode == "RGB" and texture.png_level == PNG_COMPRESS_LEVEL:
        return texture
    if isinstance(texture, Image.Image):
        img = texture.convert("RGB")
    else:
        t = np.asarray(texture.detach().cpu().numpy() if hasattr(texture, "detach") else texture)
        if t.dtype != np.uint8:
            t = (np.clip(t, 0, 1) * 255).round().astype(np.uint8)
        img = Image.fromarray(np.ascontiguousarray(t[..., :3]), "RGB")
    return fast_png_image(img, PNG_COMPRESS_LEVEL)


def rgba_image(texture, alpha):
    """The base colour ``texture`` (as ``texture_image`` takes it) with ``alpha`` (uint8 [S,S]) as its A channel: an
    RGBA PIL image saving as ``texture_image``'s do."""
    from PIL import Image

    from .png import fast_png_image
    rgb = np.asarray(texture_image(texture))
    a = np.asarray(alpha, dtype=np.uint8)
    if a.shape != rgb.shape[:2]:
        raise ValueError(f"alpha {a.shape} does not match the texture {rgb.shape[:2]}")
    return fast_png_image(Image.fromarray(np.ascontiguousarray(np.dstack([rgb, a])), "RGBA"), PNG_COMPRESS_LEVEL)


def unsplit_normals(vertices, faces) -> np.ndarray:
    """[V, 3] unit normals, one per vertex, no vertex split: the angle-weighted normals of the faces at the vertex's
    position (the copies of a point along a UV seam then agree); where those cancel out (the two sides of a
    double-sided sheet share the position), of the vertex's own faces; +z for a vertex no face with area uses."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    fn, has_area = face_normals(v, f)
    weight = (corner_angles(v, f) * has_area[:, None]).reshape(-1)
    contrib = np.repeat(fn, 3, axis=0) * weight[:, None]              # per corner, in face order
    corner_vertex = f.reshape(-1)

    def summed(ids, n):
        return np.stack([np.bincount(ids, contrib[:, j], minlength=n) for j in range(3)], axis=1)

    own = summed(corner_vertex, len(v))
    _, point = np.unique(v, axis=0, return_inverse=True)
    point = point.reshape(-1)
    n_points = int(point.max()) + 1 if len(point) else 0
    at_point = summed(point[corner_vertex], n_points)[point]
    total = np.bincount(point[corner_vertex], weight, minlength=n_points)[point]
    # relative to the weights summed: two sides of one sheet cancel to rounding noise, a sharp tip does not
    cancels = row_norm(at_point) <= 1e-6 * total
    out = np.where(cancels[:, None], own, at_point)
    length = row_norm(out)
    none = length <= 1e-300
    out[none], length[none] = (0.0, 0.0, 1.0), 1.0
    return out / length[:, None]


def with_normals(vertices, faces, uvs, crease_angle, split=None):
    """(vertices, faces, uvs, normals or None), z up; vertices split at creases when normals are made (never from
    ``NO_SPLIT_ANGLE`` on); ``split``: ``split_vertex_normals``' result for these faces at ``crease_angle``, made
    already."""
    v = _np(vertices, np.float64).reshape(-1, 3)
    f = _np(faces, np.int64).reshape(-1, 3)
    uv = _np(uvs, np.float64).reshape(-1, 2)
    if len(uv) != len(v):
        raise ValueError(f"{len(uv)} UVs for {len(v)} vertices")
    if crease_angle is None:
        return v, f, uv, None
    if crease_angle >= NO_SPLIT_ANGLE:
        return v, f, uv, unsplit_normals(v, f)
    source, f, normals = split if split is not None else split_vertex_normals(v, f, crease_angle)
    return v[source], f, uv[source], normals


def make_glb_mesh(vertices, faces, uvs, texture_uint8, double_sided: bool = False,
                  crease_angle: float | None = DEFAULT_CREASE_ANGLE, normal_texture=None, split=None, pbr=None):
    """A ``trimesh.Trimesh`` ready for ``glb_bytes`` / ``save_glb``: y-up vertices, UVs, vertex normals split
    at ``crease_angle`` degrees (None: no normals), PBR material; with ``normal_texture`` (a tangent-space map
    baked for these normals, ``bake.normal_map``) also the material's normal texture and the tangents it was
    baked in (``TANGENT``); ``split``: as ``with_normals``. ``pbr`` (a ``pbr.material.PbrMaps``): the material
    gets its metallic-roughness texture (metallicFactor and roughnessFactor 1), its alpha mode (the base colour
    texture then RGBA with its alpha, except for OPAQUE) and its double-sidedness."""
    import trimesh
    from trimesh.visual.material import PBRMaterial
    v, f, uv, normals = with_normals(vertices, faces, uvs, crease_angle, split)
    v = v @ Z_UP_TO_Y_UP
    with_alpha = pbr is not None and pbr.writes_alpha
    material = PBRMaterial(
        name="baked",
        baseColorTexture=rgba_image(texture_uint8, pbr.alpha) if with_alpha else texture_image(texture_uint8),
        baseColorFactor=np.array([255, 255, 255, 255], dtype=np.uint8),
        metallicFactor=0.0 if pbr is None else 1.0,
        roughnessFactor=1.0,
        doubleSided=bool(double_sided or (pbr is not None and pbr.double_sided)),
    )
    if pbr is not None:
        material.metallicRoughnessTexture = texture_image(pbr.metallic_roughness)
        material.alphaMode = pbr.alpha_mode
        if pbr.alpha_mode == "MASK":
            material.alphaCutoff = float(pbr.alpha_cutoff)
    visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    # process=False: keep the seam-duplicated vertices and the face order as given.
    mesh = trimesh.Trimesh(vertices=v.astype(np.float32), faces=f, visual=visual, process=False)
    if normals is not None:
        # Set after construction: trimesh then keeps them as given and its glTF export writes NORMAL
        # (it does when vertex normals are in the mesh's cache).
        mesh.vertex_normals = normals @ Z_UP_TO_Y_UP
    if normal_texture is not None:
        if normals is None:
            raise ValueError("a normal map needs the vertex normals it was baked for (crease_angle=None writes none)")
        from .tangents import vertex_tangents
        baked = getattr(pbr, "tangents", None) if split is not None else None
        if baked is not None and len(baked) == len(v):
            # the frames the map was baked in, of this very split (z up; placing scales and moves, keeps them)
            tangents = np.concatenate([baked[:, :3] @ Z_UP_TO_Y_UP, baked[:, 3:]], 1).astype(np.float32)
        else:
            tangents = vertex_tangents(v, f, uv, normals @ Z_UP_TO_Y_UP)
        # in the file's axes (v is y up already): a rotation keeps the frames and their handedness
        mesh.vertex_attributes[TANGENT] = tangents
        material.normalTexture = texture_image(normal_texture)
    return mesh


# trimesh writes a custom vertex attribute under its name with "_" in front (glTF's rule for application-specific
# attributes); glb_bytes gives this one glTF's own semantic name.
TANGENT = "TANGENT"


def glb_bytes(mesh, **export_options) -> bytes:
    """Binary glTF of a mesh from ``make_glb_mesh`` (``export_options`` go to trimesh's GLB export)."""
    material = getattr(getattr(mesh, "visual", None), "material", None)
    if material is not None and not export_options.get("extension_webp"):
        from .png import encode_side_by_side
        images = (getattr(material, name, None) for name in
                  ("baseColorTexture", "metallicRoughnessTexture", "normalTexture"))
        # the ones trimesh saves as PNG (it keeps a JPEG a JPEG), encoded together before it saves them one by one
        encode_side_by_side([img for img in images if getattr(img, "format", None) != "JPEG"])
    data = mesh.export(file_type="glb", **export_options)
    if TANGENT in getattr(mesh, "vertex_attributes", {}):
        data = rename_glb_attribute(data, "_" + TANGENT, TANGENT)
    return data


def rename_glb_attribute(data: bytes, old: str, new: str) -> bytes:
    """The GLB ``data`` with every primitive attribute ``old`` named ``new`` (the JSON chunk rewritten, padded
    with spaces to 4 bytes as the format asks; the binary chunk untouched)."""
    import json
    import struct

    magic, version, _ = struct.unpack_from("<4sII", data, 0)
    json_len, json_type = struct.unpack_from("<I4s", data, 12)
    if magic != b"glTF" or json_type != b"JSON":
        raise ValueError("not a binary glTF with its JSON chunk first")
    doc = json.loads(data[20:20 + json_len])
    for m in doc.get("meshes", []):
        for prim in m.get("primitives", []):
            attrs = prim.get("attributes", {})
            if old in attrs:
                attrs[new] = attrs.pop(old)
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    rest = data[20 + json_len:]
    total = 12 + 8 + len(text) + len(rest)
    return struct.pack("<4sII", magic, version, total) + struct.pack("<I4s", len(text), b"JSON") + text + rest


def save_glb(mesh, path) -> str:
    """Write a mesh from ``make_glb_mesh`` as binary glTF; returns the path."""
    path = os.fspath(path)
    data = glb_bytes(mesh)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def save_obj(vertices, faces, uvs, texture, path,
             crease_angle: float | None = DEFAULT_CREASE_ANGLE) -> str:
    """Write ``path`` (.obj) with ``<stem>.mtl`` and ``<stem>.png`` beside it; returns the OBJ path.

    Vertices go out y up like the GLB; one ``vt`` and one ``vn`` per vertex (UV seams and creases are
    already duplicated), so faces read ``f a/a/a b/b/b c/c/c`` (``f a/a ...`` with
    ``crease_angle=None``, which writes no normals).
    """
    v, f, uv, normals = with_normals(vertices, faces, uvs, crease_angle)
    return write_obj_files(path, v @ Z_UP_TO_Y_UP, f, uv, None if normals is None else normals @ Z_UP_TO_Y_UP,
                           texture_image(texture))


def write_obj_files(path, vertices, faces, uvs=None, normals=None, image=None, image_suffix: str = ".png",
                    maps=()) -> str:
    """Write ``path`` (.obj) from arrays already in the file's axes and units; returns the OBJ path.

    With ``image`` (a PIL image, saved with its own ``encoderinfo``) and ``uvs`` also ``<stem>.mtl`` and
    ``<stem><image_suffix>``; without, a geometry-only OBJ that names no material. ``normals`` (one per
    vertex) are optional. ``maps``: the material's other maps (``formats.material_maps.ObjMap``: keywords, tag,
    image, suffix), each saved as ``<stem><tag><suffix>`` and named by its keywords in the MTL.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    stem = os.path.splitext(name)[0]
    textured = image is not None and uvs is not None
    f = np.asarray(faces, dtype=np.int64) + 1
    corners = 1 + textured + (normals is not None)          # indices per face corner: v, vt, vn
    if textured:
        mtl_name, image_name = stem + ".mtl", stem + image_suffix
        image.save(os.path.join(folder, image_name))
        lines = []
        for keywords, tag, map_image, suffix in maps:
            map_name = stem + tag + suffix
            map_image.save(os.path.join(folder, map_name))
            lines += [f"{keyword} {map_name}\n" for keyword in keywords]
        with open(os.path.join(folder, mtl_name), "w", encoding="ascii", newline="\n") as fh:
            fh.write("# Trellis Desktop\nnewmtl baked\n"
                     "Ka 1.000 1.000 1.000\nKd 1.000 1.000 1.000\nKs 0.000 0.000 0.000\n"
                     "d 1.0\nillum 1\n"
                     f"map_Kd {image_name}\n" + "".join(lines))
    with open(path, "w", encoding="ascii", newline="\n") as fh:
        fh.write(f"# Trellis Desktop\nmtllib {mtl_name}\no mesh\n" if textured else "# Trellis Desktop\no mesh\n")
        write_rows(fh, "v %.6f %.6f %.6f\n", vertices)
        if textured:
            write_rows(fh, "vt %.6f %.6f\n", uvs)
        if normals is not None:
            write_rows(fh, "vn %.6f %.6f %.6f\n", normals)
        if textured:
            fh.write("usemtl baked\n")
        # "a/a/a" (v/vt/vn), "a/a" (v/vt), "a//a" (v//vn) or "a": one index per vertex, repeated per slot.
        corner = {1: "%d", 2: "%d/%d" if textured else "%d//%d", 3: "%d/%d/%d"}[corners]
        write_rows(fh, f"f {corner} {corner} {corner}\n", np.repeat(f, corners, axis=1))
    return path


def write_rows(fh, line: str, rows: np.ndarray, chunk: int = 65536) -> None:
    """``rows`` [N, k] as N lines of the %-format ``line``: what np.savetxt writes, several times faster (one
    format operation per chunk of rows instead of one per row)."""
    rows = np.asarray(rows)
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        fh.write((line * len(part)) % tuple(part.ravel().tolist()))
