"""Submanifold 3-D convolution on a SparseTensor (spec §3.9).

Output sites = input sites, same row order. Weight layout is spconv's [C_out, kx, ky, kz, C_in];
the kernel is not flipped: out[p] = b + sum_o W[:, o] . x[p + o - k//2], neighbours looked up only
within the same batch item.

The built-in path gathers the k^3 neighbour rows of a chunk of sites into one [n, k^3 * C_in] matrix
and does a single GEMM, so it runs anywhere PyTorch runs: it is the twin of the Triton implicit-GEMM
kernel (``trellis_triton.sparse_conv``, "sparse_conv3d" in ``trellis.fastpaths``), which does the same
GEMM without building that matrix. spconv is used only when it is installed, the tensors are on a GPU
it supports and SPARSE_BACKEND allows it (order: ``submanifold_conv3d``).
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import torch
import torch.nn as nn

from ... import fastpaths
from ...core import backends
from ...core.device import obtainable_device_memory
from .tensor import COORD_LIMIT, SparseTensor, pack_keys

# Largest gathered [n, k^3 * C_in] block of one GEMM, in elements (chunks rows to bound memory).
_GATHER_BUDGET = 1 << 26


def kernel_offsets(kernel_size: int, device=None) -> torch.Tensor:
    """[k^3, 3] offsets in weight order (x slowest, z fastest), centred on 0."""
    r = torch.arange(kernel_size, device=device) - kernel_size // 2
    return torch.stack(torch.meshgrid(r, r, r, indexing="ij"), dim=-1).reshape(-1, 3)


def neighbour_map(x: SparseTensor, kernel_size: int) -> torch.Tensor:
    """int32 [N, k^3]: row index of the neighbour at each kernel offset, or N where there is none.

    int32 halves the largest index tensor of the mesh decoder (1.3 M voxels x 27 offsets). Where a dense grid of
    the sites' bounding box fits (``grid_budget``: on a GPU with room, the TRELLIS.2 decoders' 1024^3 level too) the
    rows are written into it and the k^3 neighbours of a run of rows are one gather; otherwise each offset is a binary
    search among the sorted keys. Both give the same map."""
    key = ("neighbour_map", kernel_size, x.device)
    nbr = x.cache.get(key)
    if nbr is not None:
        return nbr
    coords = x.coords.long()
    nbr = _neighbour_map_grid(coords, kernel_offsets(kernel_size).tolist(), kernel_size // 2,
                              grid_budget(coords.device))
    if nbr is None:
        nbr = _neighbour_map_search(coords, kernel_offsets(kernel_size, x.device))
    x.cache[key] = nbr
    return nbr


# Largest dense lookup grid, in cells (int32: 128 MiB), where no more is known to fit; 258^3 (the 256^3 level with
# its border) fits.
_GRID_BUDGET = 1 << 25
# On a GPU the grid may take this share of what the process can still obtain: a gather per offset against a binary
# search and a dozen passes over the keys (docs/benchmarks/trellis2.md#the-sc-vae-decoders-whole-where-the-gpu-has-room).
GRID_MEMORY_SHARE = 0.125
# Rows x offsets gathered at once from the grid (their int64 grid indices: 32 MiB, about what one offset's pass over
# a million rows held before; a Low VRAM budget has no room for more).
_GRID_GATHER = 1 << 22


def grid_budget(device: torch.device) -> int:
    """Cells a dense neighbour grid may have on `device`: ``_GRID_BUDGET``, or on a GPU ``GRID_MEMORY_SHARE`` of the
    memory this process can still obtain (under any VRAM budget) where that is more."""
    free = obtainable_device_memory(device) if device.type == "cuda" else None
    return max(_GRID_BUDGET, int(GRID_MEMORY_SHARE * free) // 4) if free else _GRID_BUDGET


def _neighbour_map_grid(coords: torch.Tensor, offsets: list, r: int,
                        budget: int | None = None) -> torch.Tensor | None:
    n = coords.shape[0]
    if n == 0:
        return None
    lo = coords.amin(0)
    extent = coords.amax(0) - lo
    lo[1:] -= r                     # a border of r cells: every site's k^3 box lies inside the grid
    dims = (extent + 1 + torch.tensor([0, 2 * r, 2 * r, 2 * r], device=coords.device)).tolist()
    if dims[0] * dims[1] * dims[2] * dims[3] > (_GRID_BUDGET if budget is None else budget):
        return None
    local = coords - lo
    lin = ((local[:, 0] * dims[1] + local[:, 1]) * dims[2] + local[:, 2]) * dims[3] + local[:, 3]
    grid = torch.full((dims[0] * dims[1] * dims[2] * dims[3],), n, dtype=torch.int32, device=coords.device)
    grid[lin] = torch.arange(n, dtype=torch.int32, device=coords.device)
    deltas = torch.tensor([(dx * dims[2] + dy) * dims[3] + dz for dx, dy, dz in offsets], device=coords.device)
    nbr = torch.empty(n, len(offsets), dtype=torch.int32, device=coords.device)
    step = max(1, _GRID_GATHER // len(offsets))
    for a in range(0, n, step):     # whole rows at a time: contiguous writes, one gather per run of rows
        nbr[a:a + step] = grid[lin[a:a + step, None] + deltas]
    return nbr


def _neighbour_map_search(coords: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    sorted_keys, order = torch.sort(pack_keys(coords))
    return _search_neighbours(coords, sorted_keys, order, offsets)


def _search_neighbours(query: torch.Tensor, sorted_keys: torch.Tensor, order: torch.Tensor,
                       offsets: torch.Tensor) -> torch.Tensor:
    """The neighbour map's rows of the sites `query` (int64 [m, 4]) among the n sites whose sorted keys and their
    rows are `sorted_keys` / `order`: int32 [m, k^3], n where there is none."""
    n = sorted_keys.shape[0]
    nbr = torch.empty(query.shape[0], offsets.shape[0], dtype=torch.int32, device=query.device)
    for i, off in enumerate(offsets):
        moved = query.clone()
        moved[:, 1:] += off
        inside = ((moved[:, 1:] >= 0) & (moved[:, 1:] < COORD_LIMIT)).all(dim=1)
        q = pack_keys(moved.clamp(0, COORD_LIMIT - 1))
        pos = torch.searchsorted(sorted_keys, q).clamp_(max=max(n - 1, 0))
        found = inside & (sorted_keys[pos] == q) if n else inside
        nbr[:, i] = torch.where(found, order[pos], torch.full_like(pos, n))
    return nbr


def neighbour_map_rows(x: SparseTensor, kernel_size: int, start: int, stop: int) -> torch.Tensor:
    """Rows start..stop-1 of ``neighbour_map(x, kernel_size)`` without building the whole map (unless it is cached):
    a binary search per offset among x's sorted keys (sorted once, 16 bytes a site, cached on x). For convs run
    chunk by chunk at millions of sites, where the whole map (108 bytes a site) and its temporaries are the peak."""
    full = x.cache.get(("neighbour_map", kernel_size, x.device))
    if full is not None:
        return full[start:stop]
    key = ("sorted_keys", x.device)
    if key not in x.cache:
        x.cache[key] = torch.sort(pack_keys(x.coords))
    sorted_keys, order = x.cache[key]
    return _search_neighbours(x.coords[start:stop].long(), sorted_keys, order, kernel_offsets(kernel_size, x.device))


# From this many input and output channels the twin's gathered rows times cuBLAS's GEMM beat the implicit-GEMM
# kernels on a GPU (the GEMM is compute-bound there and runs near the card's peak; below, the gather's memory
# traffic dominates): the kernels decline such convs (docs/benchmarks/trellis2.md#the-sc-vae-decoders-whole-where-the-gpu-has-room).
GEMM_CHANNELS = 512


def gathered_gemm_wins(c_in: int, c_out: int) -> bool:
    """Whether a 3^3 conv of these channels runs faster as the twin's gathered GEMM than in the fast kernels."""
    return c_in >= GEMM_CHANNELS and c_out >= GEMM_CHANNELS


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    # CPU half-precision GEMMs are slow and not always available; the GPU ones accumulate in fp32.
    return torch.float32 if t.device.type == "cpu" else t.dtype


def submanifold_conv3d_torch(x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Gather-GEMM submanifold conv; returns the new features [N, C_out] in x's dtype."""
    c_out, k = weight.shape[0], weight.shape[1]
    feats = x.feats
    cdt = _compute_dtype(feats)
    if k == 1:
        return conv1x1_quirk(feats, weight, bias)
    return _gather_gemm(neighbour_map(x, k), feats, weight, bias)


def _gather_gemm(nbr: torch.Tensor, feats: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 to_row=None) -> torch.Tensor:
    """The twin's gather-GEMM: output row i = bias + sum over the k^3 offsets j of feats[nbr[i, j]] @ W_j, chunk by
    chunk of rows; [len(nbr), C_out] in feats' dtype. A neighbour index len(feats) reads a zero row (missing
    neighbour). ``to_row`` maps a chunk's neighbour indices to rows of feats first (e.g. children to parents)."""
    c_out, k = weight.shape[0], weight.shape[1]
    n, (m, c_in) = nbr.shape[0], feats.shape
    cdt = _compute_dtype(feats)
    w = weight.to(cdt).permute(1, 2, 3, 4, 0).reshape(k ** 3 * c_in, c_out)
    padded = torch.cat([feats.to(cdt), feats.new_zeros(1, c_in, dtype=cdt)])
    out = torch.empty(n, c_out, dtype=cdt, device=feats.device)
    step = max(1, _GATHER_BUDGET // (k ** 3 * c_in))
    for s in range(0, n, step):
        idx = nbr[s:s + step] if to_row is None else to_row(nbr[s:s + step])
        cols = padded[idx].reshape(-1, k ** 3 * c_in)
        out[s:s + step] = torch.addmm(bias.to(cdt), cols, w) if bias is not None else cols @ w
    return out.to(feats.dtype)


def conv1x1_quirk(feats: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Kernel-size-1 sparse conv exactly as the reference computes it (spec §3.9, quirk 13).

    spconv 2.x's kernel-1 shortcut reads the [C_out,1,1,1,C_in] weight in memory order as a
    [C_in, C_out] matrix. The official mesh decoder was trained with that, so we reproduce it.
    """
    c_out, c_in = weight.shape[0], weight.shape[-1]
    cdt = _compute_dtype(feats)
    w = weight.to(cdt).reshape(c_in, c_out)
    out = feats.to(cdt) @ w
    if bias is not None:
        out = out + bias.to(cdt)
    return out.to(feats.dtype)


# ---------------------------------------------------------------------------------- spconv backend

@lru_cache(maxsize=None)
def _spconv():
    try:
        import spconv.pytorch as spconv  # noqa: F401
        return spconv
    except Exception:
        return None


def spconv_usable(x: SparseTensor) -> bool:
    # spconv's CPU build gives wrong results with several threads on a few thousand voxels, and it
    # has no kernels for sm_120 (Blackwell desktop cards): only CUDA devices it was built for are used.
    if not x.feats.is_cuda or _spconv() is None:
        return False
    major, _ = torch.cuda.get_device_capability(x.device)
    return major < 10


def submanifold_conv3d_spconv(x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None,
                              indice_key: str | None = None) -> torch.Tensor:
    spconv = _spconv()
    c_out, k = weight.shape[0], weight.shape[1]
    if k == 1:
        return conv1x1_quirk(x.feats, weight, bias)
    key = ("spconv_tensor_shape", x.device)
    spatial = x.cache.get(key)
    if spatial is None:
        spatial = (x.coords[:, 1:].max(0).values + 1).tolist() if x.coords.shape[0] else [1, 1, 1]
        x.cache[key] = spatial
    algo = {"auto": None, "native": spconv.ConvAlgo.Native,
            "implicit_gemm": spconv.ConvAlgo.MaskImplicitGemm}[backends.get("spconv_algo")]
    if not x.feats.is_cuda:
        algo = spconv.ConvAlgo.Native            # the implicit-GEMM kernels exist only for CUDA
    indice_cache = x.cache.setdefault(("spconv_indice_dict", x.device), {})
    st = spconv.SparseConvTensor(x.feats, x.coords.int(), spatial, x.batch_size)
    st.indice_dict = indice_cache
    conv_kwargs = {"algo": algo} if algo is not None else {}
    layer = spconv.SubMConv3d(weight.shape[-1], c_out, k, padding=k // 2, bias=bias is not None,
                              indice_key=indice_key or f"subm{k}", **conv_kwargs)
    layer = layer.to(device=x.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    with torch.no_grad():
        out = layer(st)
    indice_cache.update(out.indice_dict)
    return out.features


def submanifold_conv3d(x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                       backend: str | None = None) -> torch.Tensor:
    """The conv through the first usable path, in this order:

    * ``SPARSE_BACKEND=spconv`` (``backend="spconv"``): spconv where it is usable;
    * our kernels through ``trellis.fastpaths`` ("sparse_conv3d": the Triton implicit GEMM, which
      declines CPU tensors, float64 and kernel size 1), unless ``TRELLIS_FAST_PATHS=off``;
    * ``auto`` (the default): then spconv where it is installed and usable, as before the kernel existed;
    * the gather-GEMM twin ``submanifold_conv3d_torch`` (``SPARSE_BACKEND=torch`` never takes spconv).

    The Triton kernel comes before spconv because it is the faster of the two on the decoders' shapes
    (benchmarks/sparse_conv_gpu.py) and gives the twin's numbers; spconv stays the fallback of ``auto``
    for a machine with spconv but without Triton."""
    name = backend or backends.get("sparse_conv")
    if weight.shape[1] == 1:
        return conv1x1_quirk(x.feats, weight, bias)
    if name == "spconv":
        if spconv_usable(x):
            return submanifold_conv3d_spconv(x, weight, bias)
        if x.feats.is_cuda and _spconv() is None:
            warnings.warn("SPARSE_BACKEND=spconv but spconv is not installed; using the built-in conv.",
                          RuntimeWarning, stacklevel=2)
    last = submanifold_conv3d_spconv if name == "auto" and spconv_usable(x) else submanifold_conv3d_torch
    return fastpaths.dispatch("sparse_conv3d", x.device, last, x, weight, bias)


def _gathered_conv(read: torch.Tensor, source: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor | None) -> torch.Tensor:
    """`submanifold_conv3d` rows whose neighbours are the rows `read` [m, k^3] of `source` (int64, -1 for none),
    through a small tensor holding only the source rows they read (its cached neighbour map points into it): the
    fast kernel computes each output row from the same rows (never spconv, which would read its dummy
    coordinates). [m, C_out]."""
    m, k = read.shape[0], weight.shape[1]
    rows_read, local = torch.unique(read, return_inverse=True)
    # rows_read[0] is -1 where some neighbour is missing: that slot is then never read
    rows = max(m, rows_read.numel())
    src = source.new_zeros(rows, source.shape[1])
    src[:rows_read.numel()] = source[rows_read.clamp(min=0)]
    local_nbr = torch.full((rows, read.shape[1]), rows, dtype=torch.int32, device=read.device)
    local_nbr[:m] = torch.where(read >= 0, local, rows).int()
    del local, rows_read
    zero_coords = torch.zeros(1, 4, dtype=torch.int32, device=read.device)
    part = SparseTensor(src, zero_coords.expand(rows, 4), layout=[slice(0, rows)])
    part.cache[("neighbour_map", k, part.device)] = local_nbr
    return submanifold_conv3d(part, weight, bias, "torch")[:m]


def _window_conv(nbr: torch.Tensor, lo: int, hi: int, feats: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None) -> torch.Tensor:
    """`submanifold_conv3d` rows whose neighbours `nbr` [m, k^3] (int32, len(feats) for none) all lie in the rows
    lo..hi-1 of `feats`: through the window feats[lo:hi] (a view, no copy) with a map of its own rows; the window's
    other rows have no neighbour and are dropped. [m, C_out]."""
    m, w, n = nbr.shape[0], hi - lo, feats.shape[0]
    local = torch.full((w, nbr.shape[1]), w, dtype=torch.int32, device=nbr.device)
    local[:m] = torch.where(nbr < n, nbr - lo, w)
    zero_coords = torch.zeros(1, 4, dtype=torch.int32, device=nbr.device)
    part = SparseTensor(feats[lo:hi], zero_coords.expand(w, 4), layout=[slice(0, w)])
    part.cache[("neighbour_map", weight.shape[1], part.device)] = local
    return submanifold_conv3d(part, weight, bias, "torch")[:m]


def submanifold_conv3d_rows(x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None, start: int, stop: int,
                            backend: str | None = None, local: bool | None = None) -> torch.Tensor:
    """Rows start..stop-1 of ``submanifold_conv3d(x, weight, bias)`` ([stop - start, C_out]) with memory for those
    rows only (``neighbour_map_rows``): each output row is computed from its own neighbours, so a conv run chunk by
    chunk gives the whole conv's rows. With `local` (default: where the fast kernel is usable, which takes a map of
    its own tensor's rows) through a tensor of the rows the chunk reads: the window between its first and last
    neighbour (a view) where the rows are ordered in space (at most twice the chunk), else those rows gathered;
    otherwise the twin's gather-GEMM reads x's rows as they are (spconv, which reads coordinates, is not used)."""
    if weight.shape[1] == 1:
        return conv1x1_quirk(x.feats[start:stop], weight, bias)
    nbr = neighbour_map_rows(x, weight.shape[1], start, stop)
    if local is None:
        local = fastpaths.usable("sparse_conv3d", x.device) and (backend or backends.get("sparse_conv")) != "spconv"
    if not local:
        return _gather_gemm(nbr, x.feats, weight, bias)
    n = x.feats.shape[0]
    valid = nbr < n
    lo, hi = torch.stack([torch.where(valid, nbr, n).amin(), torch.where(valid, nbr, -1).amax() + 1]).tolist()
    if hi - lo <= 2 * (stop - start):              # (every row is its own neighbour: the window holds the chunk)
        return _window_conv(nbr, lo, hi, x.feats, weight, bias)
    idx = nbr.long()
    del nbr, valid
    return _gathered_conv(torch.where(idx < n, idx, -1), x.feats, weight, bias)


# Child rows per chunk of the GPU path of `subdivided_conv3d` (its temporaries: ~5 bytes x C_in + 200
# bytes per row; 64 k rows keeps the Triton kernel's tile choice of the whole tensor).
SUBDIVIDED_CHUNK = 1 << 16


def _spconv_would_run(x: SparseTensor, backend: str | None) -> bool:
    """Whether `submanifold_conv3d(x, ...)` (k > 1) would run spconv (which reads the coordinates)."""
    name = backend or backends.get("sparse_conv")
    if not spconv_usable(x):
        return False
    return name == "spconv" or (name == "auto" and not fastpaths.usable("sparse_conv3d", x.device))


def subdivided_conv3d(child: SparseTensor, parent_feats: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor | None = None, backend: str | None = None,
                      chunk: bool | None = None) -> torch.Tensor:
    """`submanifold_conv3d` of a subdivided tensor without building its features.

    ``child`` holds the children's coordinates (``spatial.subdivide_coords``: child row i is a copy of
    parent row i // 8; its feats may have 0 columns) and gets the neighbour map cached as usual;
    ``parent_feats`` [N/8, C_in]. Every gathered neighbour row is read from its parent instead of from an
    8x larger copy (1.3 M x 192 fp16 = 0.47 GiB in the mesh decoder), so the numbers are the same:

    * the PyTorch twin gathers ``parent_feats[nbr // 8]`` chunk by chunk (same chunks, same GEMMs);
    * where the fast kernel runs (``chunk``, default: whenever ``trellis.fastpaths`` has a usable
      "sparse_conv3d" kernel for the device), SUBDIVIDED_CHUNK child rows at a time: the parents their
      neighbours need are gathered into a small tensor whose cached neighbour map points into it, and
      that goes through `submanifold_conv3d` (the kernel computes each output row from the same rows);
    * where spconv would run (it reads coordinates, not our map), the children's features are built.
    """
    n = child.coords.shape[0]
    c_out, k = weight.shape[0], weight.shape[1]
    if k == 1 or _spconv_would_run(child, backend):
        return submanifold_conv3d(child.replace(parent_feats.repeat_interleave(8, dim=0)), weight, bias,
                                  backend)
    nbr = neighbour_map(child, k)
    if chunk is None:
        chunk = fastpaths.usable("sparse_conv3d", child.device)
    if not chunk:
        return _subdivided_conv3d_torch(nbr, parent_feats, weight, bias)
    out = torch.empty(n, c_out, dtype=parent_feats.dtype, device=parent_feats.device)
    for a in range(0, n, SUBDIVIDED_CHUNK):
        b = min(a + SUBDIVIDED_CHUNK, n)
        idx = nbr[a:b].long()
        read = torch.where(idx < n, idx // 8, -1)             # the parent rows the children's neighbours are
        del idx
        out[a:b] = _gathered_conv(read, parent_feats, weight, bias)
        del read
    return out


def _subdivided_conv3d_torch(nbr: torch.Tensor, parent_feats: torch.Tensor, weight: torch.Tensor,
                             bias: torch.Tensor | None) -> torch.Tensor:
    """`submanifold_conv3d_torch` of the children, reading each neighbour from its parent row."""
    n, m = nbr.shape[0], parent_feats.shape[0]

    def parent_row(idx: torch.Tensor) -> torch.Tensor:              # the parent's row, or the zero row
        idx = idx.long()
        return torch.where(idx < n, idx // 8, m)

    return _gather_gemm(nbr, parent_feats, weight, bias, to_row=parent_row)


class SparseConvWeights(nn.Module):
    """Holds weight [C_out, k, k, k, C_in] and bias: the reference's keys are `<name>.conv.weight`.

    Public because the fp16 torso policy (`trellis.models.common`) converts these layers' weights."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, kernel_size, kernel_size, kernel_size, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        bound = 1.0 / (in_channels * kernel_size ** 3) ** 0.5
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)


class SparseConv3d(nn.Module):
    """Submanifold conv, stride 1 (the only kind TRELLIS inference uses)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True):
        super().__init__()
        if kernel_size not in (1, 3, 5):
            raise ValueError(f"kernel_size must be odd and small, got {kernel_size}")
        self.conv = SparseConvWeights(in_channels, out_channels, kernel_size, bias)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(submanifold_conv3d(x, self.conv.weight, self.conv.bias))


class SparseSubMConv3d(SparseConvWeights):
    """The same submanifold conv with its weight and bias as its own parameters (key ``<name>.weight``, the
    TRELLIS.2 checkpoints' layout; same [C_out, k, k, k, C_in] weight and offset convention as SparseConv3d)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True):
        if kernel_size not in (3, 5):
            raise ValueError(f"kernel_size must be 3 or 5, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, bias)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(submanifold_conv3d(x, self.weight, self.bias))
