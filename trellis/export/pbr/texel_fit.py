"""Texel values fitted to what a viewer's bilinear filter shows, not point samples.

A texture read with bilinear filtering shows, between texel centres, the linear blend of the four texels around;
texels that hold the attribute point-sampled at their centres blur every edge finer than a texel (a step becomes a
ramp one texel wide placed wherever the texel centres fall). Here each covered texel is also sampled at the four
points a quarter texel off its centre (``SUBSAMPLES``: on the low-poly face's plane through the texel's point, moved
by the texel's own projection onto the dense mesh), and the texels are chosen to minimise the squared difference
between the bilinear reading and those samples, plus ``DAMP``² times the squared change from the point-sampled
texels (which keeps texels that few samples touch near their own value). The normal equations are solved by
conjugate gradients from the point samples, in PyTorch on the texture's device. Texels just outside a chart that
the bilinear stencils reach are solved too (they are what a lookup at the chart's edge blends in).
"""
from __future__ import annotations

import torch

__all__ = ["DAMP", "FIT_ITERATIONS", "SUBSAMPLES", "subsample_points", "fit_bilinear"]

# Sub-texel sample offsets, in texels (x right, y down): the four quarter points of the texel.
SUBSAMPLES = ((-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25))
# Weight of the point-sampled texels in the fit (relative to one sub-sample's squared error).
DAMP = 0.05
FIT_ITERATIONS = 16


def subsample_points(vertices: torch.Tensor, faces: torch.Tensor, uvs: torch.Tensor, face: torch.Tensor,
                     points: torch.Tensor, size: int) -> torch.Tensor:
    """[4, P, 3] points of ``SUBSAMPLES`` around texels whose (possibly projected) points are ``points`` [P, 3], on
    low-poly faces ``face`` [P] of ``vertices`` / ``faces`` / ``uvs``: each offset through the face's map from UV to
    3-D (zero on faces without UV area)."""
    tri = vertices[faces[face]]                                        # [P, 3, 3]
    t = uvs[faces[face]]                                               # [P, 3, 2]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    d1, d2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    det = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    ok = det.abs() > 1e-12
    inv = torch.where(ok, 1.0 / torch.where(ok, det, torch.ones_like(det)), torch.zeros_like(det))[:, None]
    du = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) * inv                     # d(point)/du
    dv = (e2 * d1[:, 0:1] - e1 * d2[:, 0:1]) * inv                     # d(point)/dv
    out = []
    for ox, oy in SUBSAMPLES:                                          # y down in the image: v falls
        out.append(points + du * (ox / size) - dv * (oy / size))
    return torch.stack(out)


def _stencil(pix: torch.Tensor, size: int):
    """(texel index [4P, 4], weight [4P, 4]) of the bilinear reading at each sub-sample of texels ``pix``."""
    row, col = pix // size, pix % size
    idx, wts = [], []
    for ox, oy in SUBSAMPLES:
        x, y = col.float() + ox, row.float() + oy
        x0, y0 = torch.floor(x), torch.floor(y)
        fx, fy = x - x0, y - y0
        x0, y0 = x0.long(), y0.long()
        corners = []
        weights = []
        for dy, dx, w in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
            corners.append((y0 + dy).clamp(0, size - 1) * size + (x0 + dx).clamp(0, size - 1))
            weights.append(w)
        idx.append(torch.stack(corners, 1))
        wts.append(torch.stack(weights, 1))
    return torch.cat(idx), torch.cat(wts)


def fit_bilinear(start: torch.Tensor, pix: torch.Tensor, samples: torch.Tensor, size: int,
                 damp: float = DAMP, iterations: int = FIT_ITERATIONS):
    """(texels [S*S, C], solved [S*S] bool): ``start`` [S*S, C] (the point-sampled texels, uncovered ones anything)
    refined so that bilinear readings at the sub-samples of texels ``pix`` [P] match ``samples`` [4P, C] (in
    ``SUBSAMPLES`` order, then texel order); see the module docstring. Texels no stencil reaches are left as they
    are (``solved`` False)."""
    idx, w = _stencil(pix, size)
    n = size * size
    solved = torch.zeros(n, dtype=torch.bool, device=start.device)
    solved[idx.reshape(-1)] = True
    solved &= w.new_zeros(n).index_add_(0, idx.reshape(-1), w.reshape(-1)) > 0
    x0 = start.float()

    def a_mul(x):                                                      # A x: bilinear readings [4P, C]
        return (x[idx] * w[..., None]).sum(1)

    def at_mul(r):                                                     # A^T r: [S*S, C]
        return x0.new_zeros(n, r.shape[1]).index_add_(0, idx.reshape(-1), (w[..., None] * r[:, None]).reshape(-1, r.shape[1]))

    lam = damp * damp
    # solve (A^T A + lam I) d = A^T (b - A x0) for the change d (zero where no stencil reaches)
    rhs = at_mul(samples.float() - a_mul(x0))
    d = torch.zeros_like(x0)
    r = rhs.clone()
    p = r.clone()
    rr = (r * r).sum(0)
    for _ in range(int(iterations)):
        ap = at_mul(a_mul(p)) + lam * p
        alpha = rr / (p * ap).sum(0).clamp_min(1e-20)
        d += alpha * p
        r -= alpha * ap
        rr_new = (r * r).sum(0)
        p = r + (rr_new / rr.clamp_min(1e-20)) * p
        rr = rr_new
    return torch.where(solved[:, None], x0 + d, x0), solved
