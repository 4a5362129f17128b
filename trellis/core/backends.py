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

__all__ = ["DENSE_BACKENDS", "VARLEN_BACKENDS", "SPARSE_CONV_BACKENDS", "SPCONV_ALGOS", "VARIABLES", "normalise",
           "get", "source", "set_backend", "reload_from_env", "describe_attention", "attention_override_line"]

# Canonical names. "auto" picks the fastest built-in path for the device of each call.
DENSE_BACKENDS = ("auto", "sdpa", "cudnn", "naive", "flash_attn", "xformers")
VARLEN_BACKENDS = ("auto", "torch_varlen", "cudnn", "sdpa", "naive", "flash_attn", "xformers")
SPARSE_CONV_BACKENDS = ("auto", "torch", "spconv")
SPCONV_ALGOS = ("auto", "native", "implicit_gemm")

# The environment variable behind each kind (the reference's names).
VARIABLES = {"dense": "ATTN_BACKEND", "varlen": "SPARSE_ATTN_BACKEND", "sparse_conv": "SPARSE_BACKEND",
             "spconv_algo": "SPCONV_ALGO"}

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


def _sources_from_env() -> dict[str, str]:
    """Who set each kind: "default", or the variable (SPARSE_ATTN_BACKEND unset follows ATTN_BACKEND)."""
    def given(var):
        return bool((os.environ.get(var) or "").strip())
    out = {kind: var if given(var) else "default" for kind, var in VARIABLES.items()}
    if out["varlen"] == "default" and given("ATTN_BACKEND"):
        out["varlen"] = "ATTN_BACKEND"
    return out


_current = _from_env()
_sources = _sources_from_env()


def get(kind: str) -> str:
    return _current[kind]


def source(kind: str) -> str:
    """Who chose `kind`'s backend: "default" (nobody: "auto"), the environment variable's name, or "set_backend"."""
    return _sources[kind]


def set_backend(kind: str, value: str) -> None:
    """Change a backend at run time (tests and benchmarks use this; the app exposes it as a setting)."""
    allowed = {"dense": DENSE_BACKENDS, "varlen": VARLEN_BACKENDS,
               "sparse_conv": SPARSE_CONV_BACKENDS, "spconv_algo": SPCONV_ALGOS}[kind]
    _current[kind] = normalise(kind, value, allowed)
    _sources[kind] = "set_backend"


def reload_from_env() -> None:
    _current.update(_from_env())
    _sources.update(_sources_from_env())


def describe_attention(cudnn_min_tokens: int) -> dict:
    """What attention is asked for and by whom, with the "auto" rule (cuDNN from ``cudnn_min_tokens``: trellis.tuning's)
    in words, for a server's health (no torch import): {"dense": {"backend", "set_by"}, "varlen": {...}, "rule"}."""
    out: dict = {kind: {"backend": get(kind), "set_by": source(kind)} for kind in ("dense", "varlen")}
    out["rule"] = (f"auto: cuDNN's fused attention from {cudnn_min_tokens} query tokens a sequence on a Hopper "
                   "or newer GPU (fast paths on), else FlashAttention-2 through PyTorch (varlen or SDPA); "
                   "ATTN_BACKEND / SPARSE_ATTN_BACKEND set in the environment (the reference's variables) override auto")
    return out


def attention_override_line() -> str | None:
    """A line for a starting server when a variable overrides "auto" (None when nothing does)."""
    set_by = sorted({f"{source(k)}={get(k)}" for k in ("dense", "varlen") if source(k) != "default"})
    if not set_by:
        return None
    return (f"attention: {', '.join(set_by)} set in the environment overrides our auto choice (TRELLIS.2's jobs ran "
            "slower with the reference's choices: docs/trellis2.md#attention); unset it to let Trellis choose")
