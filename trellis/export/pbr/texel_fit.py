"""Texel values fitted to what a viewer's bilinear filter shows, not point samples.

A texture read with bilinear filtering shows, between texel centres, the linear blend of the four texels around;
texels that hold the attribute point-sampled at their centres blur every edge finer than a texel (a step becomes a
ramp one texel wide placed wherever the texel centres fall). Here each covered texel is also sampled at the four
points a quarter texel off its centre (``SUBSAMPLES``: on the low-poly face's plane through the texel's point, moved
by the texel's own projection onto the dense mesh), and the texels are chosen to minimise the squared difference
between the bilinear reading and those samples, plus ``DAMP``² times the squared change from the point-sampled
texels (which keeps texels that few samples touch near their own value). The normal equations are solved by
conjugate gradients from the point samples, in PyTorch on the texture's device (the readings are separable
quarter-texel blends, so each product is a few shifted sums of whole images). Texels just outside a chart that
the bilinear stencils reach are solved too (they are what a lookup at the chart's edge blends in).
"""
from __future__ import annotations

import torch

__all__ = ["DAMP", "FIT_ITERATIONS", "SUBSAMPLES", "subsample_points", "quarter_blend", "quarter_blend_t",
           "fit_bilinear"]

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


def _shift(x: torch.Tensor, axis: int, step: int) -> torch.Tensor:
    """x [S, S, C] read one texel over along ``axis`` (``step`` -1 or 1), the edge texel repeated (clamped)."""
    x = x.movedim(axis, 0)
    y = torch.cat([x[1:], x[-1:]]) if step > 0 else torch.cat([x[:1], x[:-1]])
    return y.movedim(0, axis)


def _shift_t(r: torch.Tensor, axis: int, step: int) -> torch.Tensor:
    """The transpose of ``_shift``: each texel's value added where it was read from."""
    r = r.movedim(axis, 0)
    zero = torch.zeros_like(r[:1])
    if step > 0:
        z = torch.cat([zero, r[:-1]])
        z[-1] += r[-1]
    else:
        z = torch.cat([r[1:], zero])
        z[0] += r[0]
    return z.movedim(0, axis)


def quarter_blend(x, axis: int, off: float):
    """A bilinear reading ``off`` (+-0.25) texel along ``axis`` from every texel centre: 3/4 own, 1/4 neighbour."""
    return (1 - abs(off)) * x + abs(off) * _shift(x, axis, 1 if off > 0 else -1)


def quarter_blend_t(r, axis: int, off: float):
    return (1 - abs(off)) * r + abs(off) * _shift_t(r, axis, 1 if off > 0 else -1)


def fit_bilinear(start: torch.Tensor, pix: torch.Tensor, samples: torch.Tensor, size: int,
                 damp: float = DAMP, iterations: int = FIT_ITERATIONS):
    """(texels [S*S, C], solved [S*S] bool): ``start`` [S*S, C] (the point-sampled texels, uncovered ones anything)
    refined so that bilinear readings at the sub-samples of texels ``pix`` [P] match ``samples`` [4P, C] (in
    ``SUBSAMPLES`` order, then texel order); see the module docstring. Texels no reading reaches are left as they
    are (``solved`` False). The readings are separable quarter-texel blends, so the products run on whole images."""
    s, c = int(size), start.shape[1]
    x0 = start.float().reshape(s, s, c)
    covered = torch.zeros(s * s, 1, device=start.device)
    covered[pix] = 1
    covered = covered.reshape(s, s, 1)

    def a_mul(x):                       # the readings at each offset (rows: y, axis 0; columns: x, axis 1)
        return [covered * quarter_blend(quarter_blend(x, 1, ox), 0, oy) for ox, oy in SUBSAMPLES]

    def at_mul(rs):
        return sum(quarter_blend_t(quarter_blend_t(covered * r, 0, oy), 1, ox)
                   for r, (ox, oy) in zip(rs, SUBSAMPLES))

    solved = at_mul([covered.expand(s, s, 1)] * len(SUBSAMPLES))[..., 0] > 0
    lam = damp * damp
    out = x0.clone()
    n = len(pix)
    for ch in range(c):                 # a channel at a time: the temporaries of one image each
        x = x0[..., ch:ch + 1]
        wanted = []
        for k in range(len(SUBSAMPLES)):
            img = torch.zeros(s * s, 1, device=start.device)
            img[pix] = samples[k * n:(k + 1) * n, ch:ch + 1].float()
            wanted.append(img.reshape(s, s, 1))
        # solve (A^T A + lam I) d = A^T (b - A x) for the change d (zero where no reading reaches)
        r = at_mul([w - a for w, a in zip(wanted, a_mul(x))])
        del wanted
        d = torch.zeros_like(x)
        p = r.clone()
        rr = (r * r).sum()
        for _ in range(int(iterations)):
            ap = at_mul(a_mul(p)) + lam * p
            alpha = rr / (p * ap).sum().clamp_min(1e-20)
            d += alpha * p
            r -= alpha * ap
            rr_new = (r * r).sum()
            p = r + (rr_new / rr.clamp_min(1e-20)) * p
            rr = rr_new
        out[..., ch:ch + 1] = torch.where(solved[..., None], x + d, x)
    return out.reshape(s * s, c), solved.reshape(-1)
