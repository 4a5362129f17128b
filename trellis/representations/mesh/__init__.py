"""Mesh representation: FlexiCubes extraction result and the sparse extractor."""
from .mesh_extract_result import MeshExtractResult
from .flexicubes import extract_mesh

__all__ = ["MeshExtractResult", "extract_mesh"]
