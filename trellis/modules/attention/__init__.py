"""Attention kernels: dense and variable-length softmax attention with selectable backends."""
from ...core.backends import get as get_backend, set_backend
from .functional import (SeqLens, attention_mode, attention_precision, dense_attention, has_torch_varlen, resolve_varlen_backend,
                         varlen_attention)

__all__ = ["dense_attention", "varlen_attention", "get_backend", "set_backend", "has_torch_varlen",
           "resolve_varlen_backend", "SeqLens", "attention_precision", "attention_mode"]
