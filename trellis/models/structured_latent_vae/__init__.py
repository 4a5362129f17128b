from .decoder_gs import SLatGaussianDecoder
from .decoder_mesh import SLatMeshDecoder
from .decoder_rf import SLatRadianceFieldDecoder

__all__ = ["SLatGaussianDecoder", "SLatMeshDecoder", "SLatRadianceFieldDecoder"]
