"""A PBR material's maps (``pbr.material.PbrMaps``, TRELLIS.2's export) and a baked normal map as the formats other
than GLB carry them:

* **OBJ** (the MTL's PBR extension, as Blender, three.js and tinyobjloader read it): ``map_Pr`` roughness and
  ``map_Pm`` metallic as single-channel images (glTF packs them in one image's G and B; MTL readers take a scalar
  map's luminance), ``norm`` and ``map_Bump`` the tangent-space normal map (``norm`` is the extension's keyword,
  ``map_Bump`` the one Blender reads as a normal map), ``map_d`` the alpha where the material is not opaque, as a
  grey-and-alpha image (readers take either its luminance or its alpha channel: both hold it). ``map_Kd`` stays
  the RGB base colour.
* **USDZ** (``usdz``): one ``UsdUVTexture`` per image; ``metallic`` from the metallic-roughness image's B output,
  ``roughness`` from its G (glTF's packing, read raw), ``normal`` through the reader's scale 2 and bias -1,
  ``opacity`` from the base colour's A (RGBA then) with ``opacityThreshold`` the cut-off of a MASK material.

Each image file is named after the base colour's file with a tag (``OBJ_MAP_TAGS``): ``model_roughness.png`` ...
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..assemble import PNG_COMPRESS_LEVEL, rgba_image, texture_image
from .gltf import JPEG_QUALITY, SUFFIX, encoded_texture

__all__ = ["OBJ_MAP_TAGS", "ObjMap", "channel_image", "alpha_image", "base_colour_image", "obj_maps"]

# the tags of an OBJ's map files beside its base colour: <stem><tag><suffix>
OBJ_MAP_TAGS = ("_roughness", "_metallic", "_normal", "_alpha")


class ObjMap(NamedTuple):
    """One MTL map: the ``keywords`` naming it (each on its own line), its file's ``tag``, ``image`` and
    ``suffix``."""
    keywords: tuple
    tag: str
    image: object
    suffix: str


def channel_image(rgb, channel: int, texture_format: str = "png"):
    """Channel ``channel`` of a uint8 [S,S,3] image as a grey ("L") PIL image saving in ``texture_format`` (PNG
    or JPEG)."""
    from PIL import Image

    from ..png import fast_png_image
    grey = Image.fromarray(np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[..., channel]), "L")
    if texture_format == "png":
        return fast_png_image(grey, PNG_COMPRESS_LEVEL)
    grey.format, grey.encoderinfo = "JPEG", {"quality": JPEG_QUALITY}      # as ``gltf.encoded_texture``'s
    return grey


def alpha_image(alpha):
    """uint8 [S,S] alpha as a grey-and-alpha ("LA") PNG image, both channels the alpha."""
    from PIL import Image
    a = np.ascontiguousarray(np.asarray(alpha, dtype=np.uint8))
    return Image.fromarray(np.ascontiguousarray(np.dstack([a, a])), "LA")


def base_colour_image(texture, pbr, texture_format: str = "png"):
    """(image, suffix) of the base colour: RGBA PNG with ``pbr``'s alpha where it writes one (JPEG has no alpha),
    else ``texture`` in ``texture_format``."""
    if pbr is not None and pbr.writes_alpha:
        return rgba_image(texture, pbr.alpha), SUFFIX["png"]
    return encoded_texture(texture, texture_format), SUFFIX[texture_format]


def obj_maps(pbr, normal_texture, texture_format: str = "png") -> list:
    """The MTL's ``ObjMap``s besides ``map_Kd`` of a material with ``pbr`` maps (or None) and ``normal_texture``
    (a tangent-space normal map, or None); [] for neither."""
    suffix = SUFFIX[texture_format]
    out = []
    if pbr is not None:
        mr = pbr.metallic_roughness
        out += [ObjMap(("map_Pr",), OBJ_MAP_TAGS[0], channel_image(mr, 1, texture_format), suffix),
                ObjMap(("map_Pm",), OBJ_MAP_TAGS[1], channel_image(mr, 2, texture_format), suffix)]
    if normal_texture is not None:
        normal = texture_image(normal_texture)
        if texture_format != "png":
            normal = encoded_texture(normal_texture, texture_format)
        out.append(ObjMap(("norm", "map_Bump"), OBJ_MAP_TAGS[2], normal, suffix))
    if pbr is not None and pbr.writes_alpha:
        out.append(ObjMap(("map_d",), OBJ_MAP_TAGS[3], alpha_image(pbr.alpha), SUFFIX["png"]))    # lossless cut-out
    return out
