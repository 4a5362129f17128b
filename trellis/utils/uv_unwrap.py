"""Former home of ``trellis.utils.export.uv_unwrap``: importing this module gives that module itself (the same
object, so attributes set on it reach the code that uses them)."""
import sys

from .export import uv_unwrap as _module

sys.modules[__name__] = _module
