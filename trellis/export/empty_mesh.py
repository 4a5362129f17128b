"""The one error of an export given a mesh with no faces: a job reports it as an empty result (what to try), never
as an unexpected error."""
from __future__ import annotations

__all__ = ["EmptyMeshError"]


class EmptyMeshError(ValueError):
    """The mesh to export has no faces: the decoder made no surface (NaN or out-of-range values from damaged weights
    or a precision overflow, or nothing the surface extraction keeps)."""
