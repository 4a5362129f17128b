"""Cooperative cancellation (moved to `trellis.core.callbacks`; this path stays for existing imports)."""
from ..core.callbacks import CancelCheck, Cancelled, check

__all__ = ["CancelCheck", "Cancelled", "check"]
