"""Former home of ``trellis.utils.export.texture_bake``: importing this module gives that module itself (the same
object, so attributes set on it reach the code that uses them)."""
import sys

from .export import texture_bake as _module

sys.modules[__name__] = _module
