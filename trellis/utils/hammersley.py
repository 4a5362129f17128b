"""Hammersley points (moved to `trellis.core.lowdiscrepancy`; this path stays for existing imports)."""
from ..core.lowdiscrepancy import hammersley_3d, radical_inverse

__all__ = ["hammersley_3d", "radical_inverse"]
