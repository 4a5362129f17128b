"""The reference's export entry points at the reference's path (spec §12): ``to_glb``, ``to_obj``. The export
itself is ``trellis.export``."""
from ..export.options import observation_settings
from ..export.schedule import bake_textured_mesh, to_glb, to_obj

__all__ = ["to_glb", "to_obj", "bake_textured_mesh", "observation_settings"]
