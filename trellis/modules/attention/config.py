"""Backend choice (moved to `trellis.core.backends`, which the sparse conv shares; this path stays for
existing imports)."""
from ...core.backends import (DENSE_BACKENDS, SPARSE_CONV_BACKENDS, SPCONV_ALGOS, VARLEN_BACKENDS, get,
                              normalise, reload_from_env, set_backend)

__all__ = ["DENSE_BACKENDS", "VARLEN_BACKENDS", "SPARSE_CONV_BACKENDS", "SPCONV_ALGOS", "normalise", "get",
           "set_backend", "reload_from_env"]
