"""Every file format a ``TexturedMesh`` can be written as, behind one call:

    from trellis.export.formats import write
    write(textured, "chair.usdz", height=0.9, pivot="bottom")
    write(textured, "chair.stl", height=0.9, pivot="bottom", units="mm")
    textured.save("chair.glb", texture_format="jpeg")          # the same, as a method

``write(textured, path, format=None, *, height=None, pivot=None, up=None, units="m", geometry_only=False,
texture_format="png", crease_angle=60, draco=False, print_ready=False, cancel=None)``: ``format`` defaults to the
path's suffix; returns the path written.

=======  ====================================  ============================  ==================================
format   what is in it                          up axis                        units
=======  ====================================  ============================  ==================================
glb      mesh, normals, UVs, PBR material with  y (glTF)                       metres (glTF)
         the texture as PNG, JPEG or WebP
obj      + .mtl and .png/.jpg beside it (and    y by default, or z             ``units``: none in the file
         the material's maps)
stl      binary STL, geometry only              z by default, or y             ``units``: none in the file
3mf      3MF core, geometry only                z by default (3MF's build      ``units``, named in the file
                                                volume), or y                  (``unit="meter"|"millimeter"``)
usdz     usdc + texture (PNG or JPEG),          y (stage ``upAxis``)           metres (``metersPerUnit = 1``)
         UsdPreviewSurface
=======  ====================================  ============================  ==================================

Options (``placement`` has the exact rules):

* ``height``: the object's real height in metres (its vertical extent is scaled to exactly this); None keeps
  the size (the pipeline's object fits the unit cube: about 1 m).
* ``pivot``: ``"center"`` (bounding-box centre at the origin), ``"bottom"`` (centre of the box's base at the
  origin: it stands on the ground) or None (the pipeline's origin).
* ``up``: ``"y"`` or ``"z"`` for the formats whose axis is free (OBJ, STL, 3MF); GLB and USDZ are y up by their
  specifications and ignore it, so one setting can serve a whole set of files.
* ``units``: ``"m"`` or ``"mm"`` for OBJ, STL and 3MF; GLB and USDZ are metres by their specifications.
* ``geometry_only``: no texture, no UVs (GLB: a plain grey material; OBJ: no material file; USDZ: a plain grey
  UsdPreviewSurface). STL and 3MF are always geometry only.
* ``texture_format``: ``"png"`` (lossless, default), ``"jpeg"`` (``gltf.JPEG_QUALITY``), ``"webp"`` (GLB only,
  through the required extension ``EXT_texture_webp``).
* ``crease_angle``: normals split at creases of more than this many degrees; None writes no normals.
* ``draco``: the GLB's geometry Draco-compressed (``draco``: ``KHR_draco_mesh_compression``, required by the file);
  the other formats ignore it.
* ``print_ready``: the STL and 3MF made one closed body with a flat base (``print_solid``); the others ignore it.
* ``cancel`` (``core.callbacks.CancelCheck``): asked between the steps before the file is opened (texture encode,
  print solid, placing), so that a ``Cancelled`` leaves no file behind.

A ``TexturedMesh`` baked with its normal map (``bake_textured_mesh(normal_map=True)``) carries it into the GLB, with
the tangents it was baked in (``TANGENT``), and into the OBJ and USDZ (whose readers make their own tangents). A PBR
export (``pbr.PbrTexturedMesh``, TRELLIS.2) carries its metallic-roughness map and its alpha into the GLB the same
way, and into the OBJ (the MTL's PBR extension) and the USDZ (``UsdPreviewSurface``'s metallic, roughness and
opacity): ``material_maps`` says how. STL and 3MF are geometry only.

A quad mesh (``quads``; its ``quad_pairs`` attribute) keeps its quads in the OBJ (``f a b c d``) and the USDZ
(``faceVertexCounts`` of 4); the GLB holds them as consecutive triangle pairs named in the mesh's ``extras``
(``quad_files``); STL and 3MF are triangles.

FBX is not offered: no licence-clean package that installs from wheels on Windows writes it.
"""
from __future__ import annotations

import os
from typing import NamedTuple

from ...core.callbacks import CancelCheck, check
from ..normals import DEFAULT_CREASE_ANGLE
from ..placement import UNITS, UP_AXES, place

__all__ = ["FormatSpec", "FORMATS", "format_of", "write", "plain_glb"]


class FormatSpec(NamedTuple):
    suffix: str
    default_up: str                 # the file's up axis when the caller does not choose one
    free_axes: bool                 # False: up and units are fixed by the format's specification
    texture_formats: tuple          # () for the geometry-only formats


FORMATS = {
    "glb": FormatSpec(".glb", "y", False, ("png", "jpeg", "webp")),
    "obj": FormatSpec(".obj", "y", True, ("png", "jpeg")),
    "stl": FormatSpec(".stl", "z", True, ()),
    "3mf": FormatSpec(".3mf", "z", True, ()),
    "usdz": FormatSpec(".usdz", "y", False, ("png", "jpeg")),
}


def format_of(path, format: str | None = None) -> str:
    """``format`` (checked) or the one that ``path``'s suffix names."""
    name = (format or os.path.splitext(os.fspath(path))[1].lstrip(".")).lower()
    if name not in FORMATS:
        raise ValueError(f"unknown export format {name!r} (use one of {tuple(FORMATS)})")
    return name


def write(textured, path, format: str | None = None, *, height: float | None = None, pivot: str | None = None,
          up: str | None = None, units: str = "m", geometry_only: bool = False, texture_format: str = "png",
          crease_angle: float | None = DEFAULT_CREASE_ANGLE, draco: bool = False, print_ready: bool = False,
          cancel: CancelCheck = None) -> str:
    """Write ``textured`` (a ``TexturedMesh``) to ``path`` in ``format``; returns the path (see the module doc)."""
    check(cancel)
    name = format_of(path, format)
    spec = FORMATS[name]
    if up is not None and up not in UP_AXES:
        raise ValueError(f"unknown up axis {up!r} (use one of {UP_AXES} or None)")
    if units not in UNITS:
        raise ValueError(f"unknown units {units!r} (use one of {tuple(UNITS)})")
    textured_file = bool(spec.texture_formats) and not geometry_only
    if textured_file and texture_format not in spec.texture_formats:
        raise ValueError(f"a {name.upper()} texture is one of {spec.texture_formats}, not {texture_format!r}")
    if not spec.free_axes:
        up, units = spec.default_up, "m"
    up = up or spec.default_up
    vertices, faces, uvs, texture = textured.vertices, textured.faces, textured.uvs, textured.texture
    if textured_file and texture_format == "png" and hasattr(textured, "png_texture"):
        texture = textured.png_texture()          # one PNG encode for every file of this mesh
        check(cancel)
    if print_ready and name in ("stl", "3mf"):
        from .print_solid import print_solid
        vertices, faces = print_solid(vertices, faces)         # cut flat before placing: the base at the pivot
        check(cancel)
    # Placed in the pipeline's z-up frame: each writer turns the points (and the normals made from them).
    vertices = place(vertices, height, pivot, units)
    common = dict(geometry_only=geometry_only, texture_format=texture_format, crease_angle=crease_angle)
    # the textured mesh's own normals' split, made once for all its files (placing scales and moves: the same split);
    # geometry-only files weld the seams first and make their own
    shared = getattr(textured, "split", None)
    split = shared.for_faces(faces, crease_angle) if shared is not None and textured_file else None
    # a quad mesh (quads.triangulate_quads) holds its quads as leading triangle pairs: OBJ and USDZ write them back
    quad_pairs = 0 if print_ready else int(getattr(textured, "quad_pairs", 0) or 0)
    check(cancel)                                  # the last chance: from here on the file is written
    if name == "glb":
        from .gltf import write_glb
        normal = None if geometry_only else textured.normal_map_for(crease_angle)
        out = write_glb(path, vertices, faces, uvs, texture, normal_texture=normal, draco=draco, split=split,
                        pbr=getattr(textured, "pbr", None), **common)       # a PBR export's maps (pbr.textured)
        if quad_pairs and not draco:          # Draco's encoder reorders the triangles: no pairs to name
            from .quad_files import glb_with_quad_extras
            glb_with_quad_extras(out, quad_pairs)
        return out
    if name in ("obj", "usdz"):
        # the material's other maps, as each format carries them (material_maps)
        maps = {} if geometry_only else dict(normal_texture=textured.normal_map_for(crease_angle),
                                             pbr=getattr(textured, "pbr", None))
        if name == "obj":
            from .gltf import write_obj
            out = write_obj(path, vertices, faces, uvs, texture, up=up, split=split, **maps, **common)
            if quad_pairs:
                from .quad_files import obj_with_quads
                obj_with_quads(out, quad_pairs)
            return out
        from .usdz import write_usdz
        return write_usdz(path, vertices, faces, uvs, texture, split=split, quad_pairs=quad_pairs, **maps, **common)
    from .print3d import write_3mf, write_stl
    solid = print_ready                 # checked in the file's precision before it is written
    if name == "stl":
        return write_stl(path, vertices, faces, up, solid=solid)
    return write_3mf(path, vertices, faces, up, units, solid=solid)


def plain_glb(data: bytes) -> bytes:
    """A GLB's bytes with its Draco-compressed primitives decoded into plain accessors (draco.plain_glb); the same
    object when it has none."""
    from .draco import plain_glb as decoded

    return decoded(data)
