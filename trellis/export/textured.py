"""The export's result: a baked, UV-mapped, textured mesh, and the files written from it (one assembly path for
``to_glb``, ``to_obj`` and the app)."""
from __future__ import annotations

import threading
from typing import NamedTuple

from .assemble import make_glb_mesh, save_glb, save_obj, texture_image
from .normals import DEFAULT_CREASE_ANGLE

__all__ = ["TexturedFields", "TexturedMesh"]

_IMAGE_LOCK = threading.Lock()


class TexturedFields(NamedTuple):
    """The arrays of a ``TexturedMesh`` (what it unpacks to)."""
    vertices: object      # [V, 3] float32, z up (the TRELLIS world frame)
    faces: object         # [F, 3] int64
    uvs: object           # [V, 2] float32, v up
    texture: object       # [T, T, 3] uint8, top row first; None for a mesh of geometry-only files
    info: dict            # per-stage seconds, face counts, the UV method, the observed share
    normal_texture: object = None   # [T, T, 3] uint8 tangent-space normal map (bake.normal_map), or None


class TexturedMesh(TexturedFields):
    """What ``bake_textured_mesh`` returns. ``split`` (an attribute, not a field: the mesh unpacks to its six
    arrays): the ``normals.SharedSplit`` of its vertices and faces that its files take their normals from, or None."""

    split = None

    def png_texture(self):
        """The texture as one ``png.FastPngImage`` for every file written from this mesh (made on the first call):
        its PNG is encoded once, however many files embed it and in whichever threads they are written."""
        with _IMAGE_LOCK:
            image = self.__dict__.get("texture_png")
            if image is None:
                image = self.__dict__["texture_png"] = texture_image(self.texture)
            return image

    def share_texture(self, source: "TexturedMesh") -> "TexturedMesh":
        """This mesh with its files embedding ``source``'s texture image where both hold the very same texture array
        (levels of detail made from ``source``): one PNG encode for all of them. Returns this mesh."""
        if source.texture is self.texture and self.texture is not None:     # None: a mesh without a texture
            image = source.png_texture()
            with _IMAGE_LOCK:
                self.__dict__["texture_png"] = image
        return self

    def to_glb(self, crease_angle: float | None = DEFAULT_CREASE_ANGLE):
        """A ``trimesh.Trimesh`` ready for ``.export("x.glb")`` (y up, PBR material, normals split at
        ``crease_angle`` degrees); ``.export_info`` holds ``info`` (an attribute: trimesh would write
        ``metadata`` into the file)."""
        split = self.split.for_faces(self.faces, crease_angle) if self.split is not None else None
        out = make_glb_mesh(self.vertices, self.faces, self.uvs, self.texture, crease_angle=crease_angle,
                            normal_texture=self.normal_map_for(crease_angle), split=split)
        out.export_info = self.info
        return out

    def normal_map_for(self, crease_angle):
        """The normal map, checked against the normals a file is written with (it is baked in their frames)."""
        if self.normal_texture is None:
            return None
        baked = self.info.get("normal_map", {}).get("crease_angle", DEFAULT_CREASE_ANGLE)
        if crease_angle != baked:
            raise ValueError(f"the normal map was baked for normals split at {baked} degrees, not {crease_angle}")
        return self.normal_texture

    def save_glb(self, path, crease_angle: float | None = DEFAULT_CREASE_ANGLE) -> str:
        """Write ``path`` as binary glTF; returns it."""
        return save_glb(self.to_glb(crease_angle), path)

    def save(self, path, **options) -> str:
        """Write ``path`` in the format its suffix names (.glb, .obj, .stl, .3mf, .usdz), with ``options`` of
        ``formats.write`` (height, pivot, up, units, geometry_only, texture_format, crease_angle, cancel); returns
        it."""
        from .formats import write
        return write(self, path, **options)

    def save_obj(self, path, crease_angle: float | None = DEFAULT_CREASE_ANGLE) -> str:
        """Write ``path`` (.obj) with ``<stem>.mtl`` and ``<stem>.png`` beside it; returns the OBJ path."""
        return save_obj(self.vertices, self.faces, self.uvs, self.texture, path, crease_angle=crease_angle)
