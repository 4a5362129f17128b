"""USDZ (iOS Quick Look, ``<model-viewer ios-src>``, Reality Composer, Omniverse), written with usd-core.

The package holds one binary layer (usdc, what ARKit asks for) and the texture (PNG or JPEG, the two image
types a usdz may carry). The stage:

* ``upAxis = "Y"`` and ``metersPerUnit = 1``: USD has both as stage metadata and AR viewers read them, so the
  file is y up in metres whatever ``up``/``units`` the other formats got; ``defaultPrim`` is ``/Model``.
* ``/Model`` (an Xform of kind component) with ``/Model/Mesh``: triangles, ``subdivisionScheme = "none"``
  (USD's default is Catmull-Clark, which would round the mesh), ``extent``, per-vertex ``normals`` split at
  creases, and the UVs as the per-vertex primvar ``st`` (USD's st has (0, 0) at the image's lower-left corner,
  the same v-up convention as our UVs: no flip).
* ``/Model/Materials/Baked``: a ``UsdPreviewSurface`` whose ``diffuseColor`` reads the texture through
  ``UsdUVTexture`` (sRGB) and ``UsdPrimvarReader_float2`` (``st``), bound to the mesh with ``MaterialBindingAPI``;
  metallic 0 and roughness 1, or with a PBR material (``pbr.material.PbrMaps``) ``metallic`` and ``roughness``
  read from its metallic-roughness image's B and G (raw), ``opacity`` from the base colour's A where the material
  is not opaque (``opacityThreshold`` its MASK cut-off) and the mesh double-sided where the material is; a baked
  normal map feeds ``normal`` (raw, scale 2, bias -1: a tangent-space map). Geometry only: a light grey
  ``diffuseColor`` and no texture, no ``st``.

Packaged by ``UsdUtils.CreateNewARKitUsdzPackage`` (files aligned as the usdz specification requires).
"""
from __future__ import annotations

import os
import tempfile
from typing import NamedTuple

import numpy as np

from ..assemble import with_normals
from ..normals import DEFAULT_CREASE_ANGLE
from ..placement import turn_to
from .gltf import PLAIN_COLOUR, SUFFIX, encoded_texture, plain_geometry
from .material_maps import base_colour_image

__all__ = ["USDZ_TEXTURE_FORMATS", "ROOT", "MESH", "MATERIAL", "ROOT_LAYER", "UsdMaps", "write_usdz",
           "material_files", "define_stage"]

USDZ_TEXTURE_FORMATS = ("png", "jpeg")
ROOT, MESH, MATERIAL = "/Model", "/Model/Mesh", "/Model/Materials/Baked"
# The package's root layer, whatever the .usdz is called: callers often write it under a temporary name first.
ROOT_LAYER = "model.usdc"


def write_usdz(path, vertices, faces, uvs, texture, geometry_only: bool = False, texture_format: str = "png",
               crease_angle: float | None = DEFAULT_CREASE_ANGLE, split=None, normal_texture=None, pbr=None,
               quad_pairs: int = 0) -> str:
    """Write ``path`` (.usdz) from z-up placed ``vertices`` (metres; ``split``: the normals' split made already,
    ``assemble.with_normals``; ``normal_texture``, ``pbr``: the material's other maps, module doc; ``quad_pairs``:
    leading triangle pairs written as quads, ``define_stage``); returns the path."""
    from pxr import Sdf, UsdUtils
    if not geometry_only and texture_format not in USDZ_TEXTURE_FORMATS:
        raise ValueError(f"a USDZ texture is one of {USDZ_TEXTURE_FORMATS}, not {texture_format!r}")
    path = os.fspath(path)
    if geometry_only:
        v, f, normals = plain_geometry(vertices, faces, crease_angle)
        uv = None
        normal_texture = pbr = None
    else:
        if normal_texture is not None and crease_angle is None:
            raise ValueError("a normal map needs the vertex normals it was baked for (crease_angle=None writes none)")
        v, f, uv, normals = with_normals(vertices, faces, uvs, crease_angle, split)
    # USD memory-maps the usdc it reads: on Windows the folder may still be held for a moment after packaging.
    with tempfile.TemporaryDirectory(prefix="trellis-usdz-", ignore_cleanup_errors=True) as folder:
        layer = os.path.join(folder, ROOT_LAYER)
        image, maps = None, None
        if uv is not None:
            base, suffix = base_colour_image(texture, pbr, texture_format)
            image = "texture" + suffix
            base.save(os.path.join(folder, image))
            maps = material_files(folder, texture_format, normal_texture, pbr)
        define_stage(layer, turn_to(v, "y"), f, uv, None if normals is None else turn_to(normals, "y"), image, maps,
                     quad_pairs)
        if not UsdUtils.CreateNewARKitUsdzPackage(Sdf.AssetPath(layer), path):
            raise RuntimeError(f"usd-core could not package {path}")
    return path


class UsdMaps(NamedTuple):
    """The material's files beside the layer (names, or None) and its alpha: ``metallic_roughness`` (glTF's
    packing), ``normal`` (tangent space), ``opacity`` (True: the base colour's A is the opacity),
    ``opacity_threshold`` (a MASK's cut-off, else 0), ``double_sided``."""
    metallic_roughness: str | None = None
    normal: str | None = None
    opacity: bool = False
    opacity_threshold: float = 0.0
    double_sided: bool = False


def material_files(folder, texture_format: str, normal_texture=None, pbr=None) -> UsdMaps:
    """``UsdMaps`` of the images saved into ``folder`` (in ``texture_format``) for ``normal_texture`` and ``pbr``."""
    names = {}
    for key, image in (("metallic_roughness", None if pbr is None else pbr.metallic_roughness),
                       ("normal", normal_texture)):
        if image is not None:
            names[key] = key + SUFFIX[texture_format]
            encoded_texture(image, texture_format).save(os.path.join(folder, names[key]))
    alpha = pbr is not None and pbr.writes_alpha
    return UsdMaps(names.get("metallic_roughness"), names.get("normal"), alpha,
                   float(pbr.alpha_cutoff) if alpha and pbr.alpha_mode == "MASK" else 0.0,
                   bool(pbr is not None and pbr.double_sided))


def define_stage(layer_path, vertices, faces, uvs=None, normals=None, image=None, maps: UsdMaps | None = None,
                 quad_pairs: int = 0) -> None:
    """Write the stage of the module doc to ``layer_path`` from y-up ``vertices`` in metres; ``image`` is the
    texture's file name beside it (None: the plain material); ``maps``: the material's other files
    (``material_files``); ``quad_pairs``: the leading triangle pairs that are quads (``quads.merge_pairs``)."""
    from pxr import Gf, Kind, Sdf, Usd, UsdGeom, UsdShade, Vt
    stage = Usd.Stage.CreateNew(os.fspath(layer_path))
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    root = UsdGeom.Xform.Define(stage, ROOT)
    stage.SetDefaultPrim(root.GetPrim())
    Usd.ModelAPI(root.GetPrim()).SetKind(Kind.Tokens.component)

    v = np.ascontiguousarray(vertices, dtype=np.float32)
    f = np.ascontiguousarray(faces, dtype=np.int32).reshape(-1, 3)
    mesh = UsdGeom.Mesh.Define(stage, MESH)
    mesh.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(v))
    if quad_pairs:
        from ..quads.triangulate import merge_pairs
        from ..quads.triangulate import corner_keys
        keys = corner_keys(v) if uvs is None else corner_keys(v, uvs)
        counts, flat = (a.astype(np.int32) for a in merge_pairs(f, quad_pairs, keys))
    else:
        counts, flat = np.full(len(f), 3, dtype=np.int32), f.ravel()
    mesh.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(counts))
    mesh.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(np.ascontiguousarray(flat)))
    mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    mesh.CreateExtentAttr(Vt.Vec3fArray([Gf.Vec3f(*map(float, v.min(axis=0))), Gf.Vec3f(*map(float, v.max(axis=0)))]))
    if maps is not None and maps.double_sided:
        mesh.CreateDoubleSidedAttr(True)
    if normals is not None:
        mesh.CreateNormalsAttr(Vt.Vec3fArray.FromNumpy(np.ascontiguousarray(normals, dtype=np.float32)))
        mesh.SetNormalsInterpolation(UsdGeom.Tokens.vertex)

    UsdGeom.Scope.Define(stage, MATERIAL.rsplit("/", 1)[0])
    material = UsdShade.Material.Define(stage, MATERIAL)
    surface = UsdShade.Shader.Define(stage, MATERIAL + "/Surface")
    surface.CreateIdAttr("UsdPreviewSurface")
    metallic = surface.CreateInput("metallic", Sdf.ValueTypeNames.Float)
    roughness = surface.CreateInput("roughness", Sdf.ValueTypeNames.Float)
    colour = surface.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f)
    maps = maps or UsdMaps()
    if maps.metallic_roughness is None or image is None or uvs is None:
        metallic.Set(0.0)
        roughness.Set(1.0)
    if image is None or uvs is None:
        # The same grey as the plain GLB: its sRGB value made linear, as diffuseColor is linear.
        srgb = PLAIN_COLOUR[0] / 255
        linear = ((srgb + 0.055) / 1.055) ** 2.4
        colour.Set(Gf.Vec3f(linear, linear, linear))
    else:
        st = UsdGeom.PrimvarsAPI(mesh).CreatePrimvar("st", Sdf.ValueTypeNames.TexCoord2fArray,
                                                     UsdGeom.Tokens.vertex)
        st.Set(Vt.Vec2fArray.FromNumpy(np.ascontiguousarray(uvs, dtype=np.float32).reshape(-1, 2)))
        reader = UsdShade.Shader.Define(stage, MATERIAL + "/StReader")
        reader.CreateIdAttr("UsdPrimvarReader_float2")
        reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("st")

        def texture_reader(name, file, colour_space, scale=None, bias=None):
            tex = UsdShade.Shader.Define(stage, MATERIAL + "/" + name)
            tex.CreateIdAttr("UsdUVTexture")
            tex.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(file)
            tex.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set(colour_space)
            tex.CreateInput("wrapS", Sdf.ValueTypeNames.Token).Set("repeat")
            tex.CreateInput("wrapT", Sdf.ValueTypeNames.Token).Set("repeat")
            tex.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(reader.ConnectableAPI(), "result")
            if scale is not None:
                tex.CreateInput("scale", Sdf.ValueTypeNames.Float4).Set(Gf.Vec4f(*scale))
                tex.CreateInput("bias", Sdf.ValueTypeNames.Float4).Set(Gf.Vec4f(*bias))
            return tex

        tex = texture_reader("Texture", image, "sRGB")
        colour.ConnectToSource(tex.ConnectableAPI(), "rgb")
        if maps.opacity:
            tex.CreateOutput("a", Sdf.ValueTypeNames.Float)
            surface.CreateInput("opacity", Sdf.ValueTypeNames.Float).ConnectToSource(tex.ConnectableAPI(), "a")
            surface.CreateInput("opacityThreshold", Sdf.ValueTypeNames.Float).Set(float(maps.opacity_threshold))
        if maps.metallic_roughness is not None:
            mr = texture_reader("MetallicRoughness", maps.metallic_roughness, "raw")
            for channel in ("g", "b"):
                mr.CreateOutput(channel, Sdf.ValueTypeNames.Float)
            metallic.ConnectToSource(mr.ConnectableAPI(), "b")          # glTF's packing: B metallic, G roughness
            roughness.ConnectToSource(mr.ConnectableAPI(), "g")
        if maps.normal is not None:
            # the map's [0, 1] texels to a tangent-space vector in [-1, 1]
            nm = texture_reader("Normal", maps.normal, "raw", (2.0, 2.0, 2.0, 1.0), (-1.0, -1.0, -1.0, 0.0))
            nm.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
            surface.CreateInput("normal", Sdf.ValueTypeNames.Normal3f).ConnectToSource(nm.ConnectableAPI(), "rgb")
    material.CreateSurfaceOutput().ConnectToSource(surface.ConnectableAPI(), "surface")
    UsdShade.MaterialBindingAPI.Apply(mesh.GetPrim()).Bind(material)
    stage.GetRootLayer().Save()
