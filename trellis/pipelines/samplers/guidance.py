"""Classifier-free guidance arithmetic shared by the Euler samplers (TRELLIS v1 spec §10, TRELLIS.2 facts §4).

Two spellings of the strength exist and give different float results, so both are kept:
    v1        cfg_strength w:       v = (1 + w) v(cond) - w v(neg)
    TRELLIS.2 guidance_strength w:  v = w v(cond) + (1 - w) v(neg)   (w = 1: cond only, w = 0: neg only)
and TRELLIS.2's CFG rescale, which pulls the guided x_0 estimate's per-sample spread back towards the
conditional one's.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from ...modules.sparse import SparseTensor


class Guidance(NamedTuple):
    """What one sampling run's CFG does: `style` "v1" or "trellis2", its strength, interval and rescale."""
    style: str
    strength: float
    interval: tuple
    rescale: float = 0.0

    def branches(self, inside: bool, has_neg: bool) -> tuple[bool, bool]:
        """(conditional pass, unconditional pass) for a step whose t is `inside` the interval or not."""
        if not (inside and has_neg):
            return True, False
        if self.style == "v1":
            return True, self.strength != 0
        return self.strength != 0, self.strength != 1

    def combine(self, pos: Optional[torch.Tensor], neg: Optional[torch.Tensor]) -> torch.Tensor:
        """The guided velocity from the passes that ran (None for one that did not)."""
        if neg is None:
            return pos
        if pos is None:
            return neg
        if self.style == "v1":
            return (1 + self.strength) * pos - self.strength * neg
        return self.strength * pos + (1 - self.strength) * neg


def resolve_guidance(cfg_strength=None, guidance_strength=None, cfg_interval=None, guidance_interval=None,
                     guidance_rescale: float = 0.0, default_strength: float = 3.0) -> Guidance:
    """One Guidance from the v1 names (cfg_*) or the TRELLIS.2 names (guidance_*), never both of a kind."""
    if cfg_strength is not None and guidance_strength is not None:
        raise ValueError("give cfg_strength (TRELLIS v1: v = (1 + w) v_cond - w v_neg) or guidance_strength "
                         "(TRELLIS.2: v = w v_cond + (1 - w) v_neg), not both")
    if cfg_interval is not None and guidance_interval is not None:
        raise ValueError("give cfg_interval or guidance_interval (the same thing), not both")
    interval = guidance_interval if guidance_interval is not None else cfg_interval
    interval = (0.0, 1.0) if interval is None else tuple(interval)
    if len(interval) != 2 or interval[0] > interval[1]:
        raise ValueError(f"the guidance interval must be [low, high] with low <= high, got {list(interval)}")
    if not guidance_rescale >= 0:
        raise ValueError(f"guidance_rescale must be >= 0, got {guidance_rescale}")
    if guidance_strength is not None:
        return Guidance("trellis2", float(guidance_strength), interval, float(guidance_rescale))
    strength = default_strength if cfg_strength is None else cfg_strength
    return Guidance("v1", float(strength), interval, float(guidance_rescale))


def sample_std(x0: torch.Tensor, like) -> torch.Tensor:
    """Per-sample std of an x_0 estimate, shaped to broadcast against `x0`.

    Dense (a [B, ...] tensor): torch's unbiased std (ddof 1) over all non-batch elements, as the reference.
    Sparse (`like` a SparseTensor, x0 its [N, C] features): the population std sqrt(E[x^2] - E[x]^2) over all
    N_b * C values of each sample, one value per row. The two differ on purpose (TRELLIS.2 facts §15.3); the
    rescale only uses a ratio of two such stds, where the ddof factor cancels, so the difference is rounding.
    """
    if not isinstance(like, SparseTensor):
        return x0.std(dim=tuple(range(1, x0.ndim)), keepdim=True)
    stds = []
    for rows in like.layout:
        f = x0[rows]
        stds.append(torch.sqrt((f * f).mean() - f.mean() ** 2))
    per_sample = torch.stack(stds)
    return per_sample[like.batch_index()][:, None]


def rescale_velocity(x_t, t: float, v_pos: torch.Tensor, v_cfg: torch.Tensor, rescale: float,
                     sigma_min: float) -> torch.Tensor:
    """CFG rescale (TRELLIS.2 facts §4): x_0 of the guided velocity rescaled to the conditional x_0's per-sample
    std, blended by `rescale`, turned back into a velocity. `x_t` is the state (tensor or SparseTensor)."""
    xf = x_t.feats if isinstance(x_t, SparseTensor) else x_t
    sigma = sigma_min + (1 - sigma_min) * t
    x0_pos = (1 - sigma_min) * xf - sigma * v_pos
    x0_cfg = (1 - sigma_min) * xf - sigma * v_cfg
    x0_rescaled = x0_cfg * (sample_std(x0_pos, x_t) / sample_std(x0_cfg, x_t))
    x0 = rescale * x0_rescaled + (1 - rescale) * x0_cfg
    return ((1 - sigma_min) * xf - x0) / sigma
