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
  ``UsdUVTexture`` (sRGB) and ``UsdPrimvarReader_float2`` (``st``), metallic 0, roughness 1, bound to the mesh
  with ``MaterialBindingAPI``. Geometry only: a light grey ``diffuseColor`` and no texture, no ``st``.

Packaged by ``UsdUtils.CreateNewARKitUsdzPackage`` (files aligned as the usdz specification requires).
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from ..assemble import with_normals
from ..normals import DEFAULT_CREASE_ANGLE
from ..placement import turn_to
from .gltf import PLAIN_COLOUR, SUFFIX, encoded_texture, plain_geometry

__all__ = ["USDZ_TEXTURE_FORMATS", "ROOT", "MESH", "MATERIAL", "ROOT_LAYER", "write_usdz", "define_stage"]

USDZ_TEXTURE_FORMATS = ("png", "jpeg")
ROOT, MESH, MATERIAL = "/Model", "/Model/Mesh", "/Model/Materials/Baked"
# The package's root layer, whatever the .usdz is called: callers often write it under a temporary name first.
ROOT_LAYER = "model.usdc"


def write_usdz(path, vertices, faces, uvs, texture, geometry_only: bool = False, texture_format: str = "png",
               crease_angle: float | None = DEFAULT_CREASE_ANGLE, split=None) -> str:
    """Write ``path`` (.usdz) from z-up placed ``vertices`` (metres; ``split``: the normals' split made already,
    ``assemble.with_normals``); returns the path."""
    from pxr import Sdf, UsdUtils
    if not geometry_only and texture_format not in USDZ_TEXTURE_FORMATS:
        raise ValueError(f"a USDZ texture is one of {USDZ_TEXTURE_FORMATS}, not {texture_format!r}")
    path = os.fspath(path)
    if geometry_only:
        v, f, normals = plain_geometry(vertices, faces, crease_angle)
        uv = None
    else:
        v, f, uv, normals = with_normals(vertices, faces, uvs, crease_angle, split)
    # USD memory-maps the usdc it reads: on Windows the folder may still be held for a moment after packaging.
    with tempfile.TemporaryDirectory(prefix="trellis-usdz-", ignore_cleanup_errors=True) as folder:
        layer = os.path.join(folder, ROOT_LAYER)
        image = None
        if uv is not None:
            image = "texture" + SUFFIX[texture_format]
            encoded_texture(texture, texture_format).save(os.path.join(folder, image))
        define_stage(layer, turn_to(v, "y"), f, uv, None if normals is None else turn_to(normals, "y"), image)
        if not UsdUtils.CreateNewARKitUsdzPackage(Sdf.AssetPath(layer), path):
            raise RuntimeError(f"usd-core could not package {path}")
    return path


def define_stage(layer_path, vertices, faces, uvs=None, normals=None, image=None) -> None:
    """Write the stage of the module doc to ``layer_path`` from y-up ``vertices`` in metres; ``image`` is the
    texture's file name beside it (None: the plain material)."""
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
    mesh.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(f), 3, dtype=np.int32)))
    mesh.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(f.ravel()))
    mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    mesh.CreateExtentAttr(Vt.Vec3fArray([Gf.Vec3f(*map(float, v.min(axis=0))), Gf.Vec3f(*map(float, v.max(axis=0)))]))
    if normals is not None:
        mesh.CreateNormalsAttr(Vt.Vec3fArray.FromNumpy(np.ascontiguousarray(normals, dtype=np.float32)))
        mesh.SetNormalsInterpolation(UsdGeom.Tokens.vertex)

    UsdGeom.Scope.Define(stage, MATERIAL.rsplit("/", 1)[0])
    material = UsdShade.Material.Define(stage, MATERIAL)
    surface = UsdShade.Shader.Define(stage, MATERIAL + "/Surface")
    surface.CreateIdAttr("UsdPreviewSurface")
    surface.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(0.0)
    surface.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(1.0)
    colour = surface.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f)
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
        tex = UsdShade.Shader.Define(stage, MATERIAL + "/Texture")
        tex.CreateIdAttr("UsdUVTexture")
        tex.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(image)
        tex.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set("sRGB")
        tex.CreateInput("wrapS", Sdf.ValueTypeNames.Token).Set("repeat")
        tex.CreateInput("wrapT", Sdf.ValueTypeNames.Token).Set("repeat")
        tex.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(reader.ConnectableAPI(), "result")
        colour.ConnectToSource(tex.ConnectableAPI(), "rgb")
    material.CreateSurfaceOutput().ConnectToSource(surface.ConnectableAPI(), "surface")
    UsdShade.MaterialBindingAPI.Apply(mesh.GetPrim()).Bind(material)
    stage.GetRootLayer().Save()
