"""The "fast" bake: a closed-form weighted least-squares texture from the observations (``TextureAccumulator``).

Every covered, observed pixel says "the bilinear texture lookup at my UV equals my colour", weighted by how
frontal the surface is to that view (cos² of the view angle) and by how sharp the view is (pixels covering more
than one texel count less); occluded surfaces are excluded by the depth test of the rasteriser, and, when the
observations come with depth, pixels whose Gaussian depth disagrees with the mesh depth are dropped (the mesh
and the Gaussians differ there). Views are folded one at a time into the per-texel normal equations of that
problem, which couple each texel only with its 8 neighbours (a 3×3 stencil), so memory is O(texels) whatever
the number of views. The system is solved with a few dozen conjugate-gradient steps starting from the weighted
average of the observations per texel, plus a Laplacian smoothness term scaled by the texels per pixel (the
solve sharpens where views oversample the texture and interpolates where they undersample it). Sharpness is
lost in the observations, not in this solver: renders of overlapping Gaussians are blurred by about the
Gaussians' own size, so ``to_glb`` renders them smaller (``observations.sharpening_scale``;
docs/benchmarks/export.md#texture-bake).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from ...core.callbacks import StepProgress, check
from ...core.segment_sum import index_add_in_order_
from ...tuning import TUNING
from ..options import DEFAULT_TEXTURE_SIZE
from .views import MeshViews, bilinear_taps

__all__ = ["FOLD_BATCH_PIXELS", "TextureAccumulator"]


# Pixels of prepared views folded in one batch on a GPU (``fold_views``; ~0.3 KB of temporaries each): a few dozen
# kernels per batch instead of per view (docs/benchmarks/export.md#texture-bake).
FOLD_BATCH_PIXELS = 2 << 20


class TextureAccumulator:
    """Streaming weighted least-squares bake ("fast" mode): add views one by one, then solve.

    ``uvs`` may be None: then views can be prepared (``prepare_view``: the raster and the pixel tests that need no
    UVs) before the UVs exist, and folded (``fold_view``) after ``set_uvs``. ``add_view`` is both at once; either way
    the sums are the same, bit for bit."""

    def __init__(self, vertices, faces, uvs=None, texture_size=DEFAULT_TEXTURE_SIZE, device=None, cos_power=2.0,
                 depth_tolerance=0.05, edge_erode=1):
        self.mesh = MeshViews(vertices, faces, uvs, texture_size, device or "cpu")
        s = self.mesh.size
        dev = self.mesh.device
        self.cos_power = cos_power
        self.depth_tolerance = depth_tolerance
        self.edge_erode = edge_erode
        self.normal_eq = torch.zeros(s * s * 9, dtype=torch.float32, device=dev)  # 3x3 stencil
        self.rhs = torch.zeros(s * s, 3, dtype=torch.float32, device=dev)
        self.weight = torch.zeros(s * s, dtype=torch.float32, device=dev)  # sum of w * tap weight
        self.views = 0
        # Sum over accepted pixels of texels per pixel (float64: the same as summing the per-view
        # float32 sums in Python floats) and their count, kept on the device: reading them per view
        # would stall the host on the GPU once per view.
        self._tpp_sum = torch.zeros((), dtype=torch.float64, device=dev)
        self._pixels = torch.zeros((), dtype=torch.int64, device=dev)

    def set_uvs(self, uvs, vertices=None, faces=None):
        """Attach the UVs (``MeshViews.set_uvs``: per vertex of this mesh, or of ``vertices`` / ``faces`` as
        ``unwrap_uv`` returns them for this mesh)."""
        self.mesh.set_uvs(uvs, vertices, faces)

    @property
    def texels_per_pixel(self) -> float:
        """Mean texels under one accepted pixel (< 1: the views oversample the texture)."""
        return float(self._tpp_sum) / max(int(self._pixels), 1)

    def add_view(self, color, mask, extrinsics, intrinsics, depth=None, cancel=None):
        """color [H,W,3] in [0,1], mask [H,W] bool, optional depth [H,W] (mean camera z)."""
        self.fold_view(self.prepare_view(color, mask, extrinsics, intrinsics, depth=depth, cancel=cancel))

    def prepare_view(self, color, mask, extrinsics, intrinsics, depth=None, cancel=None) -> dict:
        """What ``add_view`` does before it needs the UVs: the mesh's raster of the view and the pixels kept by the
        mask (eroded at the silhouette) and the depth test, with their colours. Give the result to ``fold_view``.
        It holds ~40 bytes per kept pixel (the view's images can go)."""
        dev = self.mesh.device
        color = torch.as_tensor(color, device=dev)
        if color.dtype == torch.uint8:
            color = color.float() / 255
        color = color.float()
        mask = torch.as_tensor(mask, device=dev).bool()
        h, w = mask.shape
        if self.edge_erode > 0:  # silhouette pixels mix object and background: do not trust them
            k = 2 * self.edge_erode + 1
            mask = -F.max_pool2d(-mask[None, None].float(), k, 1, self.edge_erode)[0, 0] > 0.5
        r = self.mesh.raster_geometry(extrinsics, intrinsics, h, w, cancel=cancel)
        ok = mask.reshape(-1)[r["pix"]]
        if depth is not None and self.depth_tolerance is not None:
            gd = torch.as_tensor(depth, device=dev).reshape(-1)[r["pix"]].float()
            ok &= (gd - r["depth"]).abs() <= self.depth_tolerance
        # No host reads here (no early return on an empty view): a view without kept pixels folds nothing.
        sel = torch.nonzero(ok)[:, 0]
        return dict(face=r["face"][sel], bary=r["bary"][sel], depth=r["depth"][sel], cos=r["cos"][sel],
                    f_px=r["f_px"], color=color.reshape(-1, 3)[r["pix"][sel]])

    def fold_view(self, prepared: dict) -> None:
        """Fold a ``prepare_view`` result into the normal equations (the UVs must be set)."""
        if self.mesh.corner_uv is None:
            raise RuntimeError("fold_view: no UVs yet (set_uvs)")
        self._fold_pixels(prepared, 1)

    def fold_views(self, prepared: list, progress: StepProgress = None, cancel=None) -> None:
        """Fold the ``prepare_view`` results in ``prepared`` in order, each entry set to None once folded (its memory
        freed); ``progress(done, total)`` as they go. On a GPU views are folded in batches of up to FOLD_BATCH_PIXELS
        pixels: the same sums as folding them one by one, up to the order of the additions (a GPU's float atomics fix
        none anyway). Elsewhere one by one, ``fold_view``'s sums bit for bit (``fold_in_batches`` of
        ``trellis.tuning.TUNING``). ``cancel`` is checked per batch."""
        if self.mesh.corner_uv is None:
            raise RuntimeError("fold_views: no UVs yet (set_uvs)")
        n = len(prepared)
        wanted = TUNING.fold_in_batches
        batched = torch.device(self.mesh.device).type == "cuda" if wanted is None else wanted
        i = 0
        while i < n:
            check(cancel)
            j, pixels = i + 1, prepared[i]["face"].shape[0]
            while batched and j < n and pixels + prepared[j]["face"].shape[0] <= FOLD_BATCH_PIXELS:
                pixels += prepared[j]["face"].shape[0]
                j += 1
            if j == i + 1:
                self.fold_view(prepared[i])
            else:
                self._fold_batch(prepared[i:j])
            prepared[i:j] = [None] * (j - i)
            i = j
            if progress is not None:
                progress(i, n)

    def _fold_batch(self, group: list) -> None:
        counts = [p["face"].shape[0] for p in group]
        r = {k: torch.cat([p[k] for p in group]) for k in ("face", "bary", "depth", "cos", "color")}
        # each view's focal length for each of its pixels: the same quotients as fold_view's broadcast
        r["f_px"] = torch.cat([torch.as_tensor(p["f_px"], device=r["depth"].device).reshape(1).expand(c)
                               for p, c in zip(group, counts)])
        self._fold_pixels(r, len(group))

    def _fold_pixels(self, prepared: dict, views: int) -> None:
        """Fold the pixels of ``prepared`` (one view's ``prepare_view``, or several views' concatenated), counted as
        ``views`` views."""
        r = self.mesh.with_uvs(prepared)
        wgt = r["cos"].pow(self.cos_power) / r["texels_per_pixel"].clamp(min=1.0)
        # No float()/int() of the sums: they stay on the device.
        sel = torch.nonzero(wgt > 1e-6)[:, 0]
        self._tpp_sum += r["texels_per_pixel"][sel].sum().double()
        self._pixels += sel.numel()
        self._fold(r["uv"][sel], r["color"][sel], wgt[sel])
        self.views += views

    def _fold(self, uv, c, wgt):
        s = self.mesh.size
        # Each pixel: sum_k taps_k * x[texel_k] = c with weight w. Normal equations: the matrix
        # gets w * taps_k * taps_l at (texel_k, texel_l), stored as texel_k's stencil slot for the
        # offset texel_l - texel_k (taps are at most one texel apart); the right side w * taps_k * c.
        rows, cols, taps = bilinear_taps(uv, s)
        idx = rows * s + cols  # [P,4]
        wt = taps * wgt[:, None]
        index_add_in_order_(self.weight, idx.reshape(-1), wt.reshape(-1))
        index_add_in_order_(self.rhs, idx.reshape(-1), (wt[:, :, None] * c[:, None, :]).reshape(-1, 3))
        for k in range(4):
            dr = rows - rows[:, k:k + 1]
            dc = cols - cols[:, k:k + 1]
            slot = idx[:, k:k + 1] * 9 + (dr + 1) * 3 + (dc + 1)
            index_add_in_order_(self.normal_eq, slot.reshape(-1), (wt[:, k:k + 1] * taps).reshape(-1))

    def solve(self, iterations=30, anchor=0.01, smooth=None, progress: StepProgress = None, cancel=None):
        """Texture [S,S,3] float32 in [0,1] and the observed-texel mask [S,S] bool.

        ``smooth`` weighs a Laplacian smoothness term (relative to the mean data weight per texel);
        None = 0.1 x mean texels per pixel, clipped to [0.005, 1]: views that oversample the texture
        pin every texel down and need little smoothing, texels finer than the pixels need more
        (docs/benchmarks/export.md#texture-bake).
        """
        if smooth is None:
            smooth = min(max(0.1 * self.texels_per_pixel, 0.005), 1.0)
        s = self.mesh.size
        active = self.weight > self.weight.max().clamp(min=1e-30) * 1e-6
        avg = torch.where(active[:, None], self.rhs / self.weight.clamp(min=1e-30)[:, None],
                          torch.zeros_like(self.rhs))
        x = avg.clone()
        if iterations > 0 and bool(active.any()):
            x = _cg_stencil(self.normal_eq.view(s, s, 9), self.weight.view(s, s), active.view(s, s),
                            self.rhs.view(s, s, 3), avg.view(s, s, 3), anchor, smooth, iterations,
                            progress, cancel).reshape(-1, 3)
        elif progress is not None:    # nothing observed (or no iterations): the solve is done at once
            progress(iterations, iterations)
        tex = x.clamp(0, 1).view(s, s, 3)
        return tex, active.view(s, s)


def _stencil_apply(m, x):
    """y[r,c] = sum over the 3x3 neighbourhood of m[r,c,slot] * x[r+dr,c+dc]; x [S,S,C]."""
    s = x.shape[0]
    xp = F.pad(x.permute(2, 0, 1), (1, 1, 1, 1)).permute(1, 2, 0)
    y = torch.zeros_like(x)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            slot = (dr + 1) * 3 + (dc + 1)
            y += m[:, :, slot, None] * xp[1 + dr:1 + dr + s, 1 + dc:1 + dc + s]
    return y


def _laplacian(x, act):
    """Graph Laplacian over 4-neighbour pairs of active texels (x is zero outside)."""
    y = torch.zeros_like(x)
    for dim in (0, 1):
        pair = act.narrow(dim, 1, act.shape[dim] - 1) * act.narrow(dim, 0, act.shape[dim] - 1)
        diff = (x.narrow(dim, 1, x.shape[dim] - 1) - x.narrow(dim, 0, x.shape[dim] - 1)) * pair
        y.narrow(dim, 1, x.shape[dim] - 1).add_(diff)
        y.narrow(dim, 0, x.shape[dim] - 1).sub_(diff)
    return y


def _cg_stencil(m, weight, active, rhs, x0, anchor, smooth, iterations, progress, cancel):
    """Conjugate gradients on (A^T W A + anchor·D + lam·L) x = A^T W c + anchor·D x0 over the
    active texels: D = diag(sum of weights) is a weak pull toward the per-texel weighted average
    x0, L the Laplacian between active 4-neighbours (charts are >= 2·padding texels apart, farther
    than the one-texel bilinear spill, so it does not couple charts)."""
    act = active[:, :, None].to(x0.dtype)
    d = (anchor * weight)[:, :, None]
    lam = smooth * float(weight[active].mean())

    def op(v):
        out = _stencil_apply(m, v * act) + d * v
        if lam > 0:
            out = out + lam * _laplacian(v * act, act)
        return out * act

    b = (rhs + d * x0) * act
    x = x0 * act
    r = b - op(x)
    p = r.clone()
    rs = (r * r).sum(dim=(0, 1))
    for it in range(iterations):
        check(cancel)
        ap = op(p)
        alpha = rs / (p * ap).sum(dim=(0, 1)).clamp(min=1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum(dim=(0, 1))
        p = r + (rs_new / rs.clamp(min=1e-30)) * p
        rs = rs_new
        if progress is not None:
            progress(it + 1, iterations)
    return x
