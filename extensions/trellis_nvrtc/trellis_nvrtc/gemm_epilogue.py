"""The flows' and decoders' MLP input layer, ``tanh-GELU(x @ W^T + b)``, as one GEMM whose epilogue adds the bias and
applies the GELU: cuBLASLt's GELU epilogue (the tanh approximation, as the checkpoints' ``nn.GELU("tanh")``) through
PyTorch's ``torch._addmm_activation``. Twin: ``trellis.modules.transformer.linear_gelu_torch``.

Not NVRTC-compiled CUDA C, but registered with that backend because it has the same standing: a library inside
PyTorch's CUDA wheels (Windows included, no Triton, no compiler) reached through a private entry point, so only
ever called behind the dispatcher's fallback. Without it the GEMM writes its [rows, 4C] output, and a separate GELU
kernel reads it and writes it again (docs/benchmarks/kernels.md#linear-gelu).

Numbers: the epilogue applies the GELU to the fp32 sum before rounding once, where the twin rounds the linear output
to the activation dtype first; so it is slightly closer to the fp32 result than the twin and differs from it by
about one unit in the last place (docs/benchmarks/kernels.md#linear-gelu).

PyTorch takes cuBLASLt only for some inputs (a contiguous 2-D input of more than one row, a contiguous 1-D bias, both
sizes above one, fp16/bf16/fp32, ``DISABLE_ADDMM_CUDA_LT`` unset); elsewhere ``_addmm_activation`` falls back to a
GEMM and PyTorch's own GELU, which is not the checkpoints' tanh form. So this function takes only inputs of the first
kind, and a probe at first use per GPU checks that the epilogue really applies the tanh form (at z = -3 the two forms
differ by ~100 fp16 units in the last place): where it does not (another PyTorch), every call returns
``NotImplemented`` and the twin runs.
"""
from __future__ import annotations

import math
import os
import threading

import torch

_HALF = (torch.float16, torch.bfloat16)
_LIMIT = 65535 * 32          # PyTorch's bound on the sizes it gives cuBLASLt
_probed: dict = {}
_lock = threading.Lock()


def _tanh_gelu(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * z * (1 + torch.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))


def _epilogue_is_tanh_gelu(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``torch._addmm_activation(..., use_gelu=True)`` applies the tanh GELU here: pre-activations z in
    [-3.5, -2] (identity weights, zero bias), where the tanh and erf forms differ by two orders of magnitude more
    than the fp16 rounding."""
    key = (device.index, dtype)
    got = _probed.get(key)
    if got is None:
        if torch.cuda.is_current_stream_capturing():
            return False         # the probe reads its result on the host: not inside a CUDA-graph capture
        with _lock:
            got = _probed.get(key)
            if got is None:
                z = torch.linspace(-3.5, -2.0, 16, device=device).to(dtype).reshape(2, 8)
                eye = torch.eye(8, device=device, dtype=dtype)
                out = torch._addmm_activation(torch.zeros(8, device=device, dtype=dtype), z, eye, use_gelu=True)
                zf = z.float()
                tanh_ref, erf_ref = _tanh_gelu(zf), torch.nn.functional.gelu(zf)
                # the two forms differ by 2e-4..4e-4 here, the rounding of these outputs is below 1e-5
                got = bool(((out.float() - tanh_ref).abs() < (erf_ref - tanh_ref).abs() / 4).all())
                _probed[key] = got
    return got


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """``tanh-GELU(F.linear(x, weight, bias))`` with the GELU in cuBLASLt's epilogue; ``NotImplemented`` for inputs
    PyTorch would not give cuBLASLt (see the module docstring), without a bias, off CUDA, or not fp16/bf16."""
    fn = getattr(torch, "_addmm_activation", None)
    if fn is None or bias is None or x.device.type != "cuda" or x.dtype not in _HALF:
        return NotImplemented
    if weight.dtype != x.dtype or bias.dtype != x.dtype or weight.dim() != 2 or bias.dim() != 1:
        return NotImplemented
    out_features, in_features = weight.shape
    if x.shape[-1] != in_features or bias.shape[0] != out_features or not x.is_contiguous() \
            or not bias.is_contiguous() or not weight.is_contiguous():
        return NotImplemented
    rows = x.numel() // max(1, in_features)
    if not (1 < rows < _LIMIT and 1 < in_features < _LIMIT and 1 < out_features < _LIMIT):
        return NotImplemented
    if os.environ.get("DISABLE_ADDMM_CUDA_LT") == "1" or not _epilogue_is_tanh_gelu(x.device, x.dtype):
        return NotImplemented
    out = fn(bias, x.view(rows, in_features), weight.t(), use_gelu=True)
    return out.view(*x.shape[:-1], out_features)
