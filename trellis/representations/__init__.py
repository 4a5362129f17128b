"""Output representations: Gaussians, meshes (FlexiCubes extraction) and radiance fields."""
from .gaussian import Gaussian
from .radiance_field import Strivec
from .mesh import MeshExtractResult

__all__ = ["Gaussian", "Strivec", "MeshExtractResult"]
