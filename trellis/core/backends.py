"""Which attention / sparse-conv implementation runs, chosen from the reference's environment variables.

(The renderers' optional GPU kernels are chosen by `trellis.fastpaths`, the other half of the backend
choice: it stays at that documented path, see its docstring.)

The reference reads ATTN_BACKEND, SPARSE_ATTN_BACKEND, SPARSE_BACKEND and SPCONV_ALGO once at import.
We honour the same names so that scripts written for it keep working, but our default needs nothing
but PyTorch. A value we do not know is refused with a message that lists the accepted ones: the
reference silently ignores typos, which hides why a run is slow.
"""
from __future__ import annotations

import os

__all__ = ["DENSE_BACKENDS", "VARLEN_BACKENDS", "SPARSE_CONV_BACKENDS", "SPCONV_ALGOS", "normalise", "get",
           "set_backend", "reload_from_env"]

# Canonical names. "auto" picks the fastest built-in path for the device of each call.
DENSE_BACKENDS = ("auto", "sdpa", "cudnn", "naive", "flash_attn", "xformers")
VARLEN_BACKENDS = ("auto", "torch_varlen", "cudnn", "sdpa", "naive", "flash_attn", "xformers")
SPARSE_CONV_BACKENDS = ("auto", "torch", "spconv")
SPCONV_ALGOS = ("auto", "native", "implicit_gemm")

_ALIASES = {
    "flash-attn": "flash_attn",
    "flashattn": "flash_attn",
    "flash_attention": "flash_attn",
    "varlen": "torch_varlen",
    "torch-varlen": "torch_varlen",
    "pytorch": "torch",
}


def normalise(name: str, value: str | None, allowed: tuple[str, ...], default: str = "auto") -> str:
    """Return the canonical backend name for `value`, or raise ValueError naming the variable."""
    if value is None or value.strip() == "":
        return default
    canon = value.strip().lower()
    canon = _ALIASES.get(canon, canon)
    if canon not in allowed:
        raise ValueError(
            f"{name}={value!r} is not a known value; use one of: {', '.join(allowed)} "
            f"(or unset {name} to let Trellis choose)."
        )
    return canon


def _from_env() -> dict[str, str]:
    dense = normalise("ATTN_BACKEND", os.environ.get("ATTN_BACKEND"), DENSE_BACKENDS)
    sparse_raw = os.environ.get("SPARSE_ATTN_BACKEND")
    if sparse_raw:
        sparse = normalise("SPARSE_ATTN_BACKEND", sparse_raw, VARLEN_BACKENDS)
    else:
        # Like the reference: the sparse choice falls back to the dense one when unset.
        sparse = dense
    return {
        "dense": dense,
        "varlen": sparse,
        "sparse_conv": normalise("SPARSE_BACKEND", os.environ.get("SPARSE_BACKEND"), SPARSE_CONV_BACKENDS),
        "spconv_algo": normalise("SPCONV_ALGO", os.environ.get("SPCONV_ALGO"), SPCONV_ALGOS),
    }


_current = _from_env()


def get(kind: str) -> str:
    return _current[kind]


def set_backend(kind: str, value: str) -> None:
    """Change a backend at run time (tests and benchmarks use this; the app exposes it as a setting)."""
    allowed = {"dense": DENSE_BACKENDS, "varlen": VARLEN_BACKENDS,
               "sparse_conv": SPARSE_CONV_BACKENDS, "spconv_algo": SPCONV_ALGOS}[kind]
    _current[kind] = normalise(kind, value, allowed)


def reload_from_env() -> None:
    _current.update(_from_env())
