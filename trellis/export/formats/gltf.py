"""GLB and OBJ with the export panel's options, written through ``assemble``: the texture's encoding (PNG, JPEG
or WebP) and geometry only (no texture, no UVs).

* **PNG** is lossless (zlib level ``assemble.PNG_COMPRESS_LEVEL``), the default and what ``save_glb`` writes.
* **JPEG** (``JPEG_QUALITY``) is glTF core (``image/jpeg``) and the usual choice for web and e-commerce files.
* **WebP** (``WEBP_QUALITY``, GLB only) needs the ``EXT_texture_webp`` extension, which trimesh writes as
  required (no PNG fallback): viewers without the extension cannot show the file's texture.
* **Geometry only**: seam copies welded back (a UV seam is no edge of the shape), normals split at creases as
  usual; the GLB gets one plain material (light grey, metallic 0, roughness 1: glTF's default material would be
  fully metallic), the OBJ names no material at all.

Vertices come in placed (``placement.place``) and z up; the GLB turns them y up (glTF's axis), the OBJ to the
``up`` it is given.
"""
from __future__ import annotations

import os

import numpy as np

from ..assemble import (NO_SPLIT_ANGLE, glb_bytes, make_glb_mesh, save_glb, texture_image, unsplit_normals,
                        with_normals, write_obj_files)
from ...core.axes import Z_UP_TO_Y_UP
from ..normals import DEFAULT_CREASE_ANGLE, split_vertex_normals
from ..placement import turn_to

__all__ = ["GLB_TEXTURE_FORMATS", "OBJ_TEXTURE_FORMATS", "JPEG_QUALITY", "WEBP_QUALITY", "PLAIN_COLOUR", "SUFFIX",
           "encoded_texture", "welded", "plain_geometry", "glb_mesh", "write_glb", "write_obj"]

GLB_TEXTURE_FORMATS = ("png", "jpeg", "webp")
OBJ_TEXTURE_FORMATS = ("png", "jpeg")       # MTL readers know PNG and JPEG; WebP is rarely read
JPEG_QUALITY = 90     # Pillow's 0-100 scale; the common high-quality setting (Pillow's own default is 75)
WEBP_QUALITY = 90     # lossy WebP, same scale
PLAIN_COLOUR = (204, 204, 204, 255)      # sRGB 0.8 grey: reads as clay in every viewer
SUFFIX = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}     # file suffix of each texture format


def encoded_texture(texture, texture_format: str = "png"):
    """The texture as a PIL image that saves (``img.save(f)``, and trimesh's GLB writer) in ``texture_format``."""
    if texture_format not in GLB_TEXTURE_FORMATS:
        raise ValueError(f"unknown texture format {texture_format!r} (use one of {GLB_TEXTURE_FORMATS})")
    img = texture_image(texture)
    if texture_format != "png" and img is texture:      # a shared image keeps its own format and settings
        img = texture_image(img.copy())
    if texture_format == "jpeg":
        # trimesh's GLB writer keeps an image's own format when it is JPEG (else it writes PNG); Pillow lets
        # encoderinfo set the quality of every later save.
        img.format = "JPEG"
        img.encoderinfo = {"quality": JPEG_QUALITY}
    elif texture_format == "webp":
        img.encoderinfo = {"quality": WEBP_QUALITY}         # trimesh writes WebP when asked for the extension
    return img


def welded(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    """``vertices``, ``faces`` with the UV seams' copies of a point merged into one vertex."""
    from ..cleanup.weld import merge_duplicate_vertices
    v, f = merge_duplicate_vertices(np.asarray(vertices), np.asarray(faces, dtype=np.int64).reshape(-1, 3))
    return np.asarray(v, dtype=np.float64), f


def plain_geometry(vertices, faces, crease_angle: float | None = DEFAULT_CREASE_ANGLE):
    """(vertices, faces, normals or None) of the welded shape, vertices split at creases when normals are made (as
    ``assemble.with_normals``: never from ``NO_SPLIT_ANGLE`` on)."""
    v, f = welded(vertices, faces)
    if crease_angle is None:
        return v, f, None
    if crease_angle >= NO_SPLIT_ANGLE:
        return v, f, unsplit_normals(v, f)
    source, f, normals = split_vertex_normals(v, f, crease_angle)
    return v[source], f, normals


def plain_material():
    """The geometry-only GLB's material: ``PLAIN_COLOUR``, metallic 0, roughness 1, no texture."""
    from trimesh.visual.material import PBRMaterial
    return PBRMaterial(name="plain", baseColorFactor=np.array(PLAIN_COLOUR, dtype=np.uint8),
                       metallicFactor=0.0, roughnessFactor=1.0)


def glb_mesh(vertices, faces, uvs, texture, geometry_only: bool = False, texture_format: str = "png",
             crease_angle: float | None = DEFAULT_CREASE_ANGLE, normal_texture=None, split=None, pbr=None):
    """A ``trimesh.Trimesh`` ready for ``assemble.glb_bytes`` from z-up ``vertices`` (``normal_texture``: a
    tangent-space normal map baked for these normals, written in ``texture_format`` too; ``split``: the normals'
    split made already, ``assemble.with_normals``; ``pbr``: the PBR maps, ``assemble.make_glb_mesh``). A base
    colour with alpha stays PNG where ``texture_format`` is JPEG (which has no alpha)."""
    if not geometry_only:
        mesh = make_glb_mesh(vertices, faces, uvs, texture, crease_angle=crease_angle, normal_texture=normal_texture,
                             split=split, pbr=pbr)
        if texture_format != "png":
            material = mesh.visual.material
            if pbr is None or not pbr.writes_alpha:
                material.baseColorTexture = encoded_texture(texture, texture_format)
            elif texture_format == "webp":
                material.baseColorTexture.encoderinfo = {"quality": WEBP_QUALITY}
            if normal_texture is not None:
                material.normalTexture = encoded_texture(normal_texture, texture_format)
            if pbr is not None:
                material.metallicRoughnessTexture = encoded_texture(pbr.metallic_roughness, texture_format)
        return mesh
    import trimesh
    v, f, normals = plain_geometry(vertices, faces, crease_angle)
    visual = trimesh.visual.TextureVisuals(material=plain_material())
    mesh = trimesh.Trimesh(vertices=(v @ Z_UP_TO_Y_UP).astype(np.float32), faces=f, visual=visual, process=False)
    if normals is not None:
        mesh.vertex_normals = normals @ Z_UP_TO_Y_UP       # kept as given, written as NORMAL (see assemble)
    return mesh


def write_glb(path, vertices, faces, uvs, texture, geometry_only: bool = False, texture_format: str = "png",
              crease_angle: float | None = DEFAULT_CREASE_ANGLE, normal_texture=None, draco: bool = False,
              split=None, pbr=None) -> str:
    """Write ``path`` as binary glTF (y up) from z-up placed ``vertices``; ``draco``: its geometry compressed
    (``draco.draco_glb``); ``split``, ``pbr``: as ``glb_mesh``. Returns the path."""
    mesh = glb_mesh(vertices, faces, uvs, texture, geometry_only, texture_format, crease_angle,
                    None if geometry_only else normal_texture, split, None if geometry_only else pbr)
    webp = not geometry_only and texture_format == "webp"
    if not webp and not draco:
        return save_glb(mesh, path)
    data = glb_bytes(mesh, extension_webp=True) if webp else glb_bytes(mesh)
    if draco:
        from .draco import draco_glb
        data = draco_glb(data)
    path = os.fspath(path)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def write_obj(path, vertices, faces, uvs, texture, up: str = "y", geometry_only: bool = False,
              texture_format: str = "png", crease_angle: float | None = DEFAULT_CREASE_ANGLE, split=None,
              normal_texture=None, pbr=None) -> str:
    """Write ``path`` (.obj; with a texture also ``<stem>.mtl`` and ``<stem>.png|.jpg``) from z-up placed
    ``vertices``, turned to ``up`` (``split``: as ``glb_mesh``); ``normal_texture`` and ``pbr`` (the PBR maps)
    add the MTL's maps of ``material_maps``. Returns the OBJ path."""
    if geometry_only:
        v, f, normals = plain_geometry(vertices, faces, crease_angle)
        return write_obj_files(path, turn_to(v, up), f, normals=None if normals is None else turn_to(normals, up))
    if texture_format not in OBJ_TEXTURE_FORMATS:
        raise ValueError(f"an OBJ texture is one of {OBJ_TEXTURE_FORMATS}, not {texture_format!r}")
    from .material_maps import obj_maps
    if normal_texture is not None and crease_angle is None:
        raise ValueError("a normal map needs the vertex normals it was baked for (crease_angle=None writes none)")
    v, f, uv, normals = with_normals(vertices, faces, uvs, crease_angle, split)
    return write_obj_files(path, turn_to(v, up), f, uv, None if normals is None else turn_to(normals, up),
                           encoded_texture(texture, texture_format), SUFFIX[texture_format],
                           obj_maps(pbr, normal_texture, texture_format))
