"""The export's UV stage: ``unwrap_uv`` (``unwrap``) chooses among our geometric charts (``geometric``: ``segment``,
``borders``, ``lscm``, ``pack_bitmap``), xatlas in a child process (``xatlas``) and the axis-projected fallback
(``axis_charts``, ``pack_shelf``); ``overlap`` holds every overlap test, ``winding`` keeps charts unmirrored and
``stats`` measures an atlas."""
from .stats import atlas_stats, uv_coverage
from .unwrap import unwrap_uv

__all__ = ["unwrap_uv", "uv_coverage", "atlas_stats"]
