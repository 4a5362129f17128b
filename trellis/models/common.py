"""What all TRELLIS networks share: the fp16 "torso" policy (spec §3.6)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..modules.context_cache import for_context
from ..modules.sparse import SparseConvWeights

# Layer types whose weights live in the torso dtype; norms, RMS gains and buffers stay fp32.
_TORSO_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                 nn.ConvTranspose3d, SparseConvWeights)


def torso_parameters(module: nn.Module):
    for m in module.modules():
        if isinstance(m, _TORSO_LAYERS):
            yield from m.parameters(recurse=False)


class TorsoMixin:
    """A network whose sub-modules named in `torso_modules` run in `self.dtype` (fp16 when use_fp16).

    The rest (input/output layers, timestep embedder, norms, buffers) stays fp32, and inputs and
    outputs are fp32, as in the reference. `set_torso_dtype` switches precision at run time
    (fp16 / bf16 / fp32) without reloading weights. Every network has an `input_layer`; its weight's
    device is the network's `device`.
    """

    torso_modules: tuple[str, ...] = ("blocks",)
    dtype: torch.dtype = torch.float32
    # Whether a switch to bf16 keeps the exact weights on the CPU to come back to (not for weights that are bf16
    # values already, as TRELLIS.2's flows are).
    bf16_master = True

    @property
    def device(self) -> torch.device:
        return self.input_layer.weight.device

    def context_in_dtype(self, cond: torch.Tensor) -> torch.Tensor:
        """The condition tokens in the torso's dtype (cast once per sampling run inside ``context_cache``, so the
        cross-attentions see the same tensor at every step and reuse their keys and values)."""
        dtype = self.dtype
        return for_context(("context_in_dtype", dtype), cond, lambda: cond.to(dtype))

    def set_torso_dtype(self, dtype: torch.dtype) -> None:
        params = [p for name in self.torso_modules for p in torso_parameters(getattr(self, name))]
        master = self.__dict__.get("_torso_master")
        if dtype == torch.bfloat16 and self.bf16_master and master is None and params and \
                params[0].dtype != torch.bfloat16:
            # bf16 drops mantissa bits: keep the exact weights on the CPU to come back to later.
            self.__dict__["_torso_master"] = [p.detach().to("cpu", copy=True) for p in params]
        for i, p in enumerate(params):
            src = master[i] if master is not None and dtype != torch.bfloat16 else p.data
            p.data = src.to(device=p.device, dtype=dtype)
        if master is not None and dtype != torch.bfloat16:
            del self.__dict__["_torso_master"]
        self.dtype = dtype

    def _init_torso(self, use_fp16: bool, dtype: torch.dtype | None = None) -> None:
        """The torso in fp16 (``use_fp16``) or fp32, or in ``dtype`` when given."""
        self.use_fp16 = use_fp16 if dtype is None else dtype == torch.float16
        self.set_torso_dtype(dtype or (torch.float16 if use_fp16 else torch.float32))
