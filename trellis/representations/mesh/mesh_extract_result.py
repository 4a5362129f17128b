"""Container for a mesh produced by the FlexiCubes extraction (TRELLIS_FACTS.md §8 step 10)."""
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["MeshExtractResult"]


class MeshExtractResult:
    """Triangle mesh of one batch item.

    vertices     [V,3] float32, z-up, inside [-0.5, 0.5]^3
    faces        [F,3] int64
    vertex_attrs [V,6] float32 in [0,1] (RGB + 3 normal-map values) or None (decoder without colour)
    face_normal  [F,3,3] unit normal of each face, repeated for its 3 corners (the reference's shape): a view
                 that repeats one stored [F,3] row (a third of the memory: 6.3 M faces 226 -> 75 MB);
                 `face_normal_rows` is that [F,3]
    res          grid resolution the mesh was extracted at
    success      V > 0 and F > 0
    """

    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor,
                 vertex_attrs: Optional[torch.Tensor] = None, res: int = 64):
        self.vertices = vertices
        self.faces = faces.long()
        self.vertex_attrs = vertex_attrs
        self.res = res
        self.success = vertices.shape[0] > 0 and self.faces.shape[0] > 0
        self.face_normal_rows = self.face_normal_rows_of(vertices, self.faces)

    @property
    def device(self) -> torch.device:
        return self.vertices.device

    @property
    def face_normal(self) -> torch.Tensor:
        """[F,3,3]: each face's unit normal for its 3 corners (an expanded view: read it, do not write into it)."""
        return self.face_normal_rows[:, None, :].expand(-1, 3, -1)

    @face_normal.setter
    def face_normal(self, value: torch.Tensor) -> None:
        self.face_normal_rows = (value[:, 0] if value.dim() == 3 else value).contiguous()

    @staticmethod
    def face_normal_rows_of(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """Normalised (v1-v0) x (v2-v0) per face -> [F,3]."""
        if faces.shape[0] == 0:
            return vertices.new_zeros(0, 3)
        v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
        return F.normalize(torch.cross(v1 - v0, v2 - v0, dim=-1), dim=-1)

    @staticmethod
    def comp_face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """Normalised (v1-v0) x (v2-v0) per face, repeated for the 3 corners -> [F,3,3] (contiguous)."""
        n = MeshExtractResult.face_normal_rows_of(vertices, faces)
        return n[:, None, :].expand(-1, 3, -1).contiguous()

    def to(self, device) -> "MeshExtractResult":
        """Copy of this result on `device` (face normals are moved, not recomputed: [F,3])."""
        out = MeshExtractResult.__new__(MeshExtractResult)
        out.vertices = self.vertices.to(device)
        out.faces = self.faces.to(device)
        out.vertex_attrs = None if self.vertex_attrs is None else self.vertex_attrs.to(device)
        out.face_normal_rows = self.face_normal_rows.to(device)
        out.res = self.res
        out.success = self.success
        return out

    def __repr__(self) -> str:
        return (f"MeshExtractResult(V={self.vertices.shape[0]}, F={self.faces.shape[0]}, "
                f"res={self.res}, color={self.vertex_attrs is not None}, success={self.success})")
