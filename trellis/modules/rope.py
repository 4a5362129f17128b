"""3-D rotary position embedding of TRELLIS.2's flow transformers (TRELLIS.2 facts §6.1).

A head's D channels form D/2 adjacent pairs (2k, 2k+1) = (real, imaginary) of a complex number that is multiplied
by e^{i phi_k}. With F = D // 2 // 3 frequencies per axis (21 for D = 128), w_j = base / theta^(j / F), the phases
of a voxel at (x, y, z) are [x w_0 .. x w_{F-1}, y w_0 .., z w_0 ..]; the pairs past 3F (one for D = 128) stay
unrotated. Phases and rotation are computed in fp32; the rotated q / k return in their own dtype.
"""
from __future__ import annotations

import torch

__all__ = ["rope_frequencies", "rope_phases", "apply_rope", "rope_torch", "cached_rope_phases"]

AXES = 3


def rope_frequencies(head_dim: int, theta: float = 10000.0, base: float = 1.0, device=None) -> torch.Tensor:
    """The F = head_dim // 2 // 3 angular frequencies of one axis, fp32 [F]."""
    n = head_dim // 2 // AXES
    if n < 1:
        raise ValueError(f"head_dim {head_dim} is too small for a 3-D rotary embedding (needs at least 6)")
    return base / theta ** (torch.arange(n, dtype=torch.float32, device=device) / n)


def rope_phases(coords: torch.Tensor, head_dim: int, theta: float = 10000.0, base: float = 1.0) -> torch.Tensor:
    """Unit complex phases of integer positions ``coords`` [N, 3] (x, y, z): complex64 [N, head_dim // 2]."""
    freqs = rope_frequencies(head_dim, theta, base, coords.device)
    angles = (coords.to(torch.float32)[:, :, None] * freqs).reshape(coords.shape[0], -1)    # [N, 3F], x first
    pad = head_dim // 2 - angles.shape[1]
    if pad:                                                  # identity pairs: angle 0
        angles = torch.cat([angles, angles.new_zeros(angles.shape[0], pad)], dim=1)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    """``x`` [..., L, H, D] with channel pairs (2k, 2k+1) rotated by ``phases`` [..., L, D/2] (the same for every
    head); fp32 maths, returned in ``x``'s dtype."""
    pairs = torch.view_as_complex(x.to(torch.float32).reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * phases.unsqueeze(-2)).flatten(-2).to(x.dtype)


def rope_torch(q: torch.Tensor, k: torch.Tensor, phases: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention's queries and keys rotated by the tokens' phases."""
    return apply_rope(q, phases), apply_rope(k, phases)


def cached_rope_phases(x, head_dim: int, theta: float = 10000.0, base: float = 1.0) -> torch.Tensor:
    """The phases of a SparseTensor's spatial coordinates, kept in its coordinate cache (shared by ``replace``)."""
    key = ("rope_phases", head_dim, theta, base, x.device)
    phases = x.cache.get(key)
    if phases is None:
        phases = x.cache[key] = rope_phases(x.coords[:, 1:], head_dim, theta, base)
    return phases
