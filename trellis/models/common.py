"""What all TRELLIS networks share: the fp16 "torso" policy (spec §3.6)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..modules.sparse.conv import _ConvWeights

# Layer types whose weights live in the torso dtype; norms, RMS gains and buffers stay fp32.
_TORSO_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                 nn.ConvTranspose3d, _ConvWeights)


def convert_layers(module: nn.Module, dtype: torch.dtype) -> None:
    for m in module.modules():
        if isinstance(m, _TORSO_LAYERS):
            for p in m.parameters(recurse=False):
                p.data = p.data.to(dtype)


class TorsoMixin:
    """A network whose sub-modules named in `torso_modules` run in `self.dtype` (fp16 when use_fp16).

    The rest (input/output layers, timestep embedder, norms, buffers) stays fp32, and inputs and
    outputs are fp32, as in the reference. `set_torso_dtype` switches precision at run time
    (fp16 / bf16 / fp32) without reloading weights.
    """

    torso_modules: tuple[str, ...] = ("blocks",)
    dtype: torch.dtype = torch.float32

    def set_torso_dtype(self, dtype: torch.dtype) -> None:
        for name in self.torso_modules:
            convert_layers(getattr(self, name), dtype)
        self.dtype = dtype

    def _init_torso(self, use_fp16: bool) -> None:
        self.use_fp16 = use_fp16
        self.set_torso_dtype(torch.float16 if use_fp16 else torch.float32)
