"""The cut of a mesh into compact pieces for the decimation in pieces (``pieces``): recursive median splits of the
faces' first corners along the longest extent (``split_compact``), on numpy or on a torch device with the same
groups; the second round's turned points (``shifted_points``); the target shared out (``shares``); each piece's
own arrays (``piece_arrays``).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["SHIFTED_CUT", "order_keys", "split_compact", "shifted_points", "shares", "piece_arrays"]

# The second round's cut is made on the points turned by this rotation (rows: the new axes): the first round cuts
# across the longest extents' axes, so the second round's planes stand oblique to them and meet the first round's
# seams only along lines (a rotation by 45 degrees about z, then by atan(1/sqrt 2) about the new x).
_C, _S = math.sqrt(0.5), math.sqrt(0.5)
_CB, _SB = math.sqrt(2.0 / 3.0), math.sqrt(1.0 / 3.0)
SHIFTED_CUT = ((_C, -_S, 0.0), (_CB * _S, _CB * _C, -_SB), (_SB * _S, _SB * _C, _CB))


def order_keys(values, index):
    """int64 keys that order float32 ``values`` as numbers (-0.0 just before 0.0), ties by ``index`` (below 2**31):
    all distinct, so the lower half of a group is one set whatever finds it (numpy's partition, a sort on a GPU).
    numpy arrays or torch tensors."""
    if isinstance(values, np.ndarray):
        bits = np.ascontiguousarray(values, dtype=np.float32).view(np.int32).astype(np.int64)
        key = np.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
        return (key << 31) | np.asarray(index, dtype=np.int64)
    import torch
    bits = values.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    key = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (key << 31) | index.to(torch.int64)


def split_compact(points, pieces: int) -> list:
    """Indices of ``points`` [N,3] (float32; numpy, or a torch tensor on any device: the same groups) in ``pieces``
    (a power of two) compact groups of equal size: each group is halved at the median of its longest extent
    (``order_keys``: ties go by index) until there are enough. Each group lists its points in ascending order."""
    if not isinstance(points, np.ndarray):
        return _split_tensor(points, pieces)
    cols = np.ascontiguousarray(np.asarray(points, dtype=np.float32).T)
    groups = [np.arange(len(points))]
    while len(groups) < pieces:
        halves = []
        for g in groups:
            sample = g[::_sample_step(len(g))]                  # the extent of a sample is enough
            # per axis: numpy's gather of all three is strided, its reductions slow
            axis = int(np.argmax([np.ptp(cols[a, sample]) for a in range(3)]))
            keys = order_keys(cols[axis, g], g)
            half = len(g) // 2
            lower = keys <= np.partition(keys, half - 1)[half - 1]
            halves += [g[lower], g[~lower]]
        groups = halves
    return groups


def _sample_step(n: int) -> int:
    """Every how many of a group's points its extent is probed (about 65 536 of them)."""
    return max(1, n // 65536)


def _split_tensor(points, pieces: int) -> list:
    """``split_compact`` of a torch tensor: every group of a level halved at once (one sort per level, no host
    sync), the same groups as numpy's. The points stay in one permutation where each group is a contiguous run."""
    import torch

    dev = points.device
    cols = points.to(torch.float32).t().contiguous()                 # [3, N]: fast per-axis work
    n = cols.shape[1]
    perm = torch.arange(n, device=dev)
    sizes = [n]
    while len(sizes) < pieces:
        k = len(sizes)
        start = torch.tensor(np.r_[0, np.cumsum(sizes)[:-1]], device=dev)
        size = torch.tensor(sizes, device=dev)
        group = torch.repeat_interleave(torch.arange(k, device=dev), size, output_size=n)
        # each group's axis: the longest extent of its sample (every step-th of its points, in ascending order;
        # the rows of shorter samples repeat their first point, which changes no extent)
        steps = [_sample_step(s) for s in sizes]
        counts = torch.tensor([-(-s // st) for s, st in zip(sizes, steps)], device=dev)
        j = torch.arange(int(max(-(-s // st) for s, st in zip(sizes, steps))), device=dev)
        at = start[:, None] + j[None, :] * torch.tensor(steps, device=dev)[:, None]
        at = torch.where(j[None, :] < counts[:, None], at, start[:, None])
        probe = cols[:, perm[at]]                                     # [3, k, samples]
        axis = (probe.amax(2) - probe.amin(2)).argmax(0)              # [k]: the first of equal extents
        keys = order_keys(cols[axis[group], perm], perm)
        # the half-th smallest key of each group: its keys in a row of a [k, longest] table, sorted
        i = torch.arange(int(max(sizes)), device=dev)
        table = torch.where(i[None, :] < size[:, None], keys[(start[:, None] + i[None, :]).clamp(max=n - 1)],
                            torch.iinfo(torch.int64).max)
        half = size // 2
        kth = torch.sort(table, dim=1).values.gather(1, (half - 1)[:, None])[:, 0]
        lower = keys <= kth[group]
        # a stable partition of each run: its lower half first, each half in the order it had (ascending)
        before = torch.cumsum(lower, 0) - lower.to(torch.int64)      # lower points ahead of each one
        base = before[start]                                          # ... ahead of its group
        low_rank = before - base[group]
        up_rank = torch.arange(n, device=dev) - start[group] - low_rank
        to = start[group] + torch.where(lower, low_rank, half[group] + up_rank)
        out = torch.empty_like(perm)
        out[to] = perm
        perm = out
        sizes = [h for s in sizes for h in (s // 2, s - s // 2)]
    return list(torch.split(perm, sizes))


def shifted_points(points) -> np.ndarray:
    """``points`` [N,3] (numpy) turned by ``SHIFTED_CUT``, float32: element by element (no BLAS, whose summation
    order varies by library and machine), so the cut is the same everywhere."""
    p = np.asarray(points, dtype=np.float64)
    cols = [p[:, 0] * r[0] + p[:, 1] * r[1] + p[:, 2] * r[2] for r in SHIFTED_CUT]
    return np.stack(cols, axis=1).astype(np.float32)


def shares(target: int, sizes) -> list:
    """``target`` shared out in proportion to ``sizes`` (whole numbers, at least 1 each, adding up to ``target``
    when it is at least their count): cumulative rounding, so no piece drifts by more than one."""
    sizes = np.asarray(sizes, dtype=np.float64)
    cut = np.rint(np.cumsum(sizes) * (target / max(sizes.sum(), 1.0))).astype(np.int64)
    return [max(1, int(x)) for x in np.diff(np.r_[0, cut])]


def piece_arrays(v, f, groups):
    """(vertices float64, faces int32 into them) of each group of faces, its vertices in their order in ``v``;
    numpy, or torch tensors on a device (the same arrays, in host memory). One piece at a time (a generator), so
    that each can be written and given out before the next is made."""
    for g in groups:
        fg = f[g]
        if isinstance(v, np.ndarray):
            used = np.zeros(len(v), dtype=bool)
            used[fg.reshape(-1)] = True
            yield v[used], ((np.cumsum(used) - 1)[fg]).astype(np.int32)
        else:
            import torch
            used = torch.zeros(v.shape[0], dtype=torch.bool, device=v.device)
            used[fg.reshape(-1)] = True
            remap = torch.cumsum(used, 0) - 1
            yield v[used].cpu().numpy(), remap[fg].to(torch.int32).cpu().numpy()
