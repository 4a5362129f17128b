"""A PBR export's result: a ``TexturedMesh`` (its ``texture`` the base colour, RGB, so that every writer, level of
detail and report takes it as it is) that also carries the material's other maps (``pbr``, a ``material.PbrMaps``):
its GLB gets them (``to_glb``, ``save_glb``, and ``save`` through ``formats.write``), and so do the OBJ and USDZ
(``formats.material_maps``)."""
from __future__ import annotations

from ..normals import DEFAULT_CREASE_ANGLE
from ..textured import TexturedMesh
from ..assemble import make_glb_mesh
from .material import PbrMaps

__all__ = ["PbrTexturedMesh", "pbr_textured_mesh"]


class PbrTexturedMesh(TexturedMesh):
    """``TexturedMesh`` plus ``pbr`` (an attribute, like ``split``: the mesh still unpacks to its six arrays)."""

    pbr: PbrMaps | None = None

    def to_glb(self, crease_angle: float | None = DEFAULT_CREASE_ANGLE):
        """As ``TexturedMesh.to_glb``, with the PBR maps in the material."""
        split = self.split.for_faces(self.faces, crease_angle) if self.split is not None else None
        out = make_glb_mesh(self.vertices, self.faces, self.uvs, self.texture, crease_angle=crease_angle,
                            normal_texture=self.normal_map_for(crease_angle), split=split, pbr=self.pbr)
        out.export_info = self.info
        return out


def pbr_textured_mesh(vertices, faces, uvs, base_color, info: dict, normal_texture, pbr: PbrMaps,
                      split=None) -> PbrTexturedMesh:
    """A ``PbrTexturedMesh`` of these arrays with its ``pbr`` maps and its normals' ``split``."""
    out = PbrTexturedMesh(vertices, faces, uvs, base_color, info, normal_texture)
    out.pbr = pbr
    out.split = split
    return out
