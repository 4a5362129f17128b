"""Trellis Desktop's clean-room implementation of TRELLIS image-to-3D inference."""
__version__ = "0.1.0"
