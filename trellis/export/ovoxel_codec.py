"""Compact exact encodings of an O-Voxel's arrays for a kept TRELLIS.2 result (``ovoxel_result``). Each encoder
returns None when its encoding would not give the same bits back; the result file then uses the next one.

* faces: vertex rows relative to their neighbours' (small numbers that deflate well); a dual-grid mesh
  (``representations.ovoxel.dual_grid``: faces in pairs, a quad's two triangles) as its quads and one split bit each.
* vertices: dual vertices on a grid of 1 / ``steps`` voxel (``light_ovoxel``'s) as small integers, otherwise each
  float's distance in representable floats from its voxel's centre (exact for any float32, -0.0 and NaN too).
* attributes: multiples of 1 / ``steps`` (``light_ovoxel``'s) as small integers, otherwise float16 where exact,
  else float32.

``light_ovoxel`` rounds an O-Voxel onto those grids: an export from it and an export from its kept result are then
the same bits, and the file is a fraction of the exact one's size."""
from __future__ import annotations

import numpy as np
import torch

from ..representations.ovoxel import MeshWithVoxel
from ..representations.ovoxel.dual_grid import dual_vertices_world

__all__ = ["VERTEX_STEPS", "ATTR_STEPS", "light_ovoxel", "encode_faces", "decode_faces", "encode_vertices",
           "decode_vertices", "encode_attrs", "decode_attrs", "byte_planes", "from_byte_planes"]

# 1/256 voxel: at 1024^3 a vertex moves by at most 1/524288 of the object; far below what the export's reduction keeps.
VERTEX_STEPS = 256
# 1/256: within half a level of the 8-bit textures the attributes are baked into.
ATTR_STEPS = 256
MAX_STEPS = 1 << 12                                   # a header asking for finer steps is not one of ours
SAMPLE_ROWS = 4096


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (-0.0 is not 0.0: the files would differ)."""
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.contiguous().view(torch.int32),
                                                                      b.contiguous().view(torch.int32))


def light_ovoxel(mesh: MeshWithVoxel, vertex_steps: int = VERTEX_STEPS, attr_steps: int = ATTR_STEPS) -> MeshWithVoxel:
    """``mesh`` with its dual vertices rounded to 1 / ``vertex_steps`` voxel and its attributes to multiples of
    1 / ``attr_steps`` (faces, coordinates and resolution unchanged), on its device: what an export and the kept
    result both start from when the result is to be light."""
    coords = mesh.coords
    # float32 (no double on the device): which step a value lands on only matters up to a tie, and any step is exact
    dual = (mesh.vertices.float() + 0.5) * mesh.res - coords.float()
    codes = torch.round(dual * vertex_steps).to(torch.int32)
    vertices = dual_vertices_world(coords, codes.float() / vertex_steps, 1.0 / mesh.res)
    attrs = None if mesh.attrs is None else \
        torch.round(mesh.attrs.float() * attr_steps).to(torch.int32).float() / attr_steps     # integers: no -0.0
    return MeshWithVoxel(vertices, mesh.faces, coords, mesh.res, attrs, mesh.layout)


# ------------------------------------------------------------------ faces


# Corners of each quad's two triangles, by its split (row 1: the first split), as dual_grid.split_quads orders them.
QUAD_CORNERS = np.array([[0, 1, 3, 3, 1, 2], [0, 1, 2, 0, 2, 3]])


def quad_faces(quads: np.ndarray, first: np.ndarray) -> np.ndarray:
    """int64 [2Q, 3]: each quad's two triangles as ``dual_grid.split_quads`` makes them, the split given."""
    at = QUAD_CORNERS[first.view(np.uint8)] + (np.arange(quads.shape[0], dtype=np.int64) * 4)[:, None]
    return quads.astype(np.int64, copy=False).ravel()[at].reshape(-1, 3)


def encode_faces(faces: torch.Tensor) -> tuple:
    """(codec record, integer array, packed split bits): "quads" when the faces come in pairs that are a dual-grid
    quad's two triangles (each quad's first voxel row from the previous one's, the other three from its first:
    small numbers that deflate well; one bit for its split), else "triangles" (each face's first vertex from the
    previous face's, the other two from its first)."""
    f = faces.detach().cpu().long().numpy()
    if f.size and f.min() >= 0 and f.max() < 2 ** 31:
        f = f.astype(np.int32)                       # half the bytes to read; no difference of two rows overflows
    if f.shape[0] and f.shape[0] % 2 == 0:
        a, b, c, d, e, g = f.reshape(-1, 6).T
        first = d == a
        # quad_faces' pairs: (q0 q1 q2)(q0 q2 q3) where the split is first, else (q0 q1 q3)(q3 q1 q2)
        if bool(np.where(first, e == c, (d == c) & (e == b)).all()):
            quads = (a, b, np.where(first, c, g), np.where(first, g, c))
            return {"codec": "quads", "count": int(a.shape[0])}, relative_rows(quads), np.packbits(first)
    return {"codec": "triangles", "count": int(f.shape[0])}, relative_rows(tuple(f.T)), np.zeros(0, np.uint8)


def relative_rows(columns: tuple) -> np.ndarray:
    """[N, K] vertex rows, given as their K columns, as (first column's step from the row before, the others' offsets
    from the first), narrowest; column by column in memory (Fortran order: ``byte_planes`` reads it as it lies)."""
    first = columns[0]
    out = np.empty((len(columns), first.shape[0]), first.dtype)
    if first.shape[0]:
        out[0, 0] = first[0]
        np.subtract(first[1:], first[:-1], out=out[0, 1:])
    for k, column in enumerate(columns[1:], 1):
        np.subtract(column, first, out=out[k])
    return narrowest_int(out).T


def absolute_rows(rel: np.ndarray) -> np.ndarray:
    """``relative_rows``' inverse (int64)."""
    rows = rel.astype(np.int64)
    np.cumsum(rows[:, 0], out=rows[:, 0])
    rows[:, 1:] += rows[:, :1]
    return rows


def decode_faces(codec: dict, rel: np.ndarray, splits: np.ndarray) -> np.ndarray:
    """int64 [F, 3] of ``encode_faces``' record, integers and split bits (ValueError when they do not fit)."""
    rows = absolute_rows(rel)
    if codec["codec"] == "triangles":
        return rows
    return quad_faces(rows, unpack_bits(splits, codec["count"]))


def unpack_bits(packed: np.ndarray, count: int) -> np.ndarray:
    """bool [count] of np.packbits' bytes (ValueError when their number is not count's)."""
    if packed.shape != ((count + 7) // 8,):
        raise ValueError(f"{packed.shape[0]:,} bytes for {count:,} bits")
    return np.unpackbits(packed, count=count).view(bool)


# ------------------------------------------------------------------ vertices


def ordered(bits: np.ndarray) -> np.ndarray:
    """int32 of float32 bit patterns (int32), in the floats' order: consecutive floats are consecutive integers
    (-0.0 is -1: it keeps its sign). Its own inverse."""
    out = bits >> 31
    out &= np.int32(0x7FFFFFFF)
    out ^= bits
    return out


def centres(coords: torch.Tensor, res: int) -> torch.Tensor:
    """float32 [M, 3]: each voxel's centre in world units (where a vertex's distance is counted from)."""
    # dual_vertices_world's sums and product for a dual vertex of 0.5, in place: the same floats in fewer passes
    return coords.to(torch.float32, copy=True).add_(0.5).mul_(1.0 / res).add_(-0.5)


def encode_vertices(coords: torch.Tensor, vertices: torch.Tensor, res: int, steps: int = VERTEX_STEPS) -> tuple:
    """(codec record, integer array [M, 3]): "dual" (integer steps of 1/steps voxel: exact for ``light_ovoxel``'s
    vertices) when that gives the same bits, else "delta" (each float's distance from its voxel's centre in
    representable floats)."""
    coords, vertices = coords.cpu(), vertices.detach().float().cpu()
    sample = slice(0, SAMPLE_ROWS)          # an exact O-Voxel fails on its first rows: the whole check is skipped
    if dual_codes(coords[sample], vertices[sample], res, steps) is not None:
        codes = dual_codes(coords, vertices, res, steps)
        if codes is not None:
            return {"codec": "dual", "steps": steps}, codes
    # int32 differences wrap around, and so does their sum on loading: exact whatever the values
    delta = ordered(vertices.numpy().view(np.int32))
    delta -= ordered(centres(coords, res).numpy().view(np.int32))
    return {"codec": "delta"}, narrowest_int(delta)


def dual_codes(coords: torch.Tensor, vertices: torch.Tensor, res: int, steps: int) -> np.ndarray | None:
    """int16 [M, 3]: the vertices as integer steps of 1/steps voxel from their voxels' corners, or None when
    decoding those steps does not give the same bits."""
    # float32 finds the nearest step of any vertex near its voxel; the bits' comparison below decides
    corners = coords.float()
    x = (vertices + 0.5).mul_(res).sub_(corners).mul_(steps).round_()
    if not in_int16(x):
        return None
    codes = x.short().numpy()
    # decode_vertices' operations in place on the codes' floats (a -0.0 adds to its corner as 0.0 does)
    back = x.div_(steps).add_(corners).mul_(1.0 / res).add_(-0.5)
    return codes if same_bits(back, vertices) else None


def in_int16(x: torch.Tensor) -> bool:
    """Whether every value lies strictly within (-2^15, 2^15) (False for NaN)."""
    if x.numel() == 0:
        return True
    low, high = torch.aminmax(x)
    return bool(low > -2 ** 15) and bool(high < 2 ** 15)


def decode_vertices(codec: dict, codes: np.ndarray, coords: torch.Tensor, res: int) -> torch.Tensor:
    """float32 [M, 3] of ``encode_vertices``' record and integers."""
    if codec["codec"] == "dual":
        return dual_vertices_world(coords, torch.from_numpy(codes.astype(np.float32)) / codec["steps"], 1.0 / res)
    base = ordered(centres(coords, res).numpy().view(np.int32))
    return torch.from_numpy(ordered(base + codes.astype(np.int32)).view(np.float32))


# ------------------------------------------------------------------ attributes


def encode_attrs(attrs: torch.Tensor, steps: int = ATTR_STEPS) -> tuple:
    """(codec record, array [M, C]): "codes" (integer multiples of 1/steps: ``light_ovoxel``'s) when exact, else
    "float": float16 where every value survives the round trip, else float32."""
    a = attrs.detach().float().cpu()
    if attr_codes(a[:SAMPLE_ROWS], steps) is not None:
        codes = attr_codes(a, steps)
        if codes is not None:
            return {"codec": "codes", "steps": steps}, codes
    a16 = a.half()
    if same_bits(a16[:SAMPLE_ROWS].float(), a[:SAMPLE_ROWS]) and same_bits(a16.float(), a):
        return {"codec": "float"}, a16.numpy()
    return {"codec": "float"}, a.numpy()


def attr_codes(a: torch.Tensor, steps: int) -> np.ndarray | None:
    """int16 [M, C]: the attributes as integer multiples of 1/steps, or None when they are not exactly that."""
    codes = (a * steps).round_()
    if not in_int16(codes):
        return None
    codes = codes.short()
    # from the integers, not the rounded floats: a -0.0 comes back as 0.0 and is refused
    return codes.numpy() if same_bits(codes.float().div_(steps), a) else None


def decode_attrs(codec: dict, values: np.ndarray) -> torch.Tensor:
    """float32 [M, C] of ``encode_attrs``' record and array."""
    if codec["codec"] == "codes":
        return torch.from_numpy(values.astype(np.float32)) / codec["steps"]
    return torch.from_numpy(values.astype(np.float32))


# ------------------------------------------------------------------ storage


def narrowest_int(a: np.ndarray) -> np.ndarray:
    """``a`` in the smallest of int16 / int32 / int64 that holds its values exactly (``a`` itself when it is that)."""
    low, high = (int(a.min()), int(a.max())) if a.size else (0, 0)
    for t in (np.int16, np.int32, np.int64):
        if np.iinfo(t).min <= low and high <= np.iinfo(t).max:
            return a.astype(t, copy=False)
    return a.astype(np.int64, copy=False)


def byte_planes(a: np.ndarray) -> np.ndarray:
    """uint8 [itemsize * a.size] of a 2-D array: byte by byte, each byte channel by channel: the high bytes of
    nearby values sit together and deflate well."""
    m, c = a.shape
    size = a.dtype.itemsize
    if a.flags.f_contiguous and not a.flags.c_contiguous:     # channels apart in memory: one copy from them
        planes = a.T.view(np.uint8).reshape(c, m, size).transpose(2, 0, 1)
    else:
        planes = np.ascontiguousarray(a).view(np.uint8).reshape(m, c, size).transpose(2, 1, 0)
    return np.ascontiguousarray(planes).ravel()


def from_byte_planes(planes: np.ndarray, dtype, shape: tuple) -> np.ndarray:
    """The [M, C] array ``byte_planes`` made (ValueError when the byte count is not the shape's)."""
    dtype = np.dtype(dtype)
    m, c = shape
    if planes.shape != (m * c * dtype.itemsize,):
        raise ValueError(f"{planes.shape[0]:,} bytes for {m * c:,} values of {dtype}")
    return np.ascontiguousarray(planes.reshape(dtype.itemsize, c, m).transpose(2, 1, 0)).view(dtype).reshape(m, c)
