"""A TRELLIS result kept for exporting again later, without sampling: the Gaussians' stored fields and the decoder
mesh, exactly (float32), in one compressed ``.npz`` (``save_result`` / ``load_result``). An export from the loaded
result is the export of the original, bit for bit.

The file is input like any upload (job folders are copied, synced, damaged): ``check_result`` reads it as data only
— a regular file, a zip of exactly the expected members, each member's dtype and shape taken from its ``.npy``
header and matched against the zip's directory before anything is unpacked, under a size cap and a packing ratio
that no real result reaches, then finite values and faces within the vertices — and refuses anything else with a
``DamagedResultError`` that names the file, the member and what to do."""
from __future__ import annotations

import json
import math
import os
import stat
import struct
import zipfile
import zlib

import numpy as np
import torch

from ..representations.gaussian import Gaussian
from .options import mesh_arrays

__all__ = ["RESULT_FORMAT", "DamagedResultError", "save_result", "check_result", "load_result"]

RESULT_FORMAT = "trellis-result-1"      # changes when the file's layout does

# A large real result unpacks to a few hundred MB (3 M Gaussians, a 5 M-face mesh): more is not one of ours.
MAX_RESULT_BYTES = 1 << 30
# Floats pack ~1.1x and faces ~3x at the level save_result uses; zeros ~230x: a big member packed tighter than
# this is a zip bomb, refused before it is unpacked.
MAX_PACKING_RATIO = 50
RATIO_CHECKED_BYTES = 1 << 20           # small members (the header, tiny results) may pack as tight as they like
MAX_HEADER_BYTES = 1 << 16              # the JSON header: a few hundred bytes
# The zip's directory (read whole by zipfile, one object per entry) of a result: 8 entries, under 1 KB.
MAX_DIRECTORY_ENTRIES, MAX_DIRECTORY_BYTES = 64, 1 << 16
# Vertices this far out overflow float32 arithmetic in the export (areas, normals): no decoder makes them.
MAX_COORDINATE = 1e6

# Each member's trailing shape (after its length) and dtype kinds: what save_result writes.
GAUSSIAN_SHAPES = {"xyz": (3,), "features_dc": (1, 3), "scaling": (3,), "rotation": (4,), "opacity": (1,)}
MEMBERS = {"header": ((), "u"), **{f"gaussian_{k}": (s, "f") for k, s in GAUSSIAN_SHAPES.items()},
           "vertices": ((3,), "f"), "faces": ((3,), "iu")}
OPTIONAL = ("vertices", "faces")        # both, or neither (a result decoded without its mesh)


# Why a result.npz that is a folder, pipe, socket or device is refused (the app's export check says it too).
NOT_REGULAR_FILE = "it is not a regular file (a folder, pipe, socket or device)"


class DamagedResultError(ValueError):
    """A kept result (result.npz) that cannot be used: missing, not a regular file, not save_result's layout, or
    holding impossible values. The message names the file, what is wrong and what to do."""


def damaged(path, what: str) -> DamagedResultError:
    return DamagedResultError(f"{os.fspath(path)} is not a usable kept result: {what}. Generate it again (run its "
                              "job again)")


def save_result(path, gaussian: Gaussian, mesh) -> str:
    """Write ``path`` (.npz): the Gaussians (``raw_fields`` and ``init_params``) and the mesh (vertices float32,
    faces int32 when they fit; None: a result decoded without its mesh); returns the path."""
    arrays = {f"gaussian_{k}": v.detach().float().cpu().numpy() for k, v in gaussian.raw_fields().items()}
    if mesh is not None:
        vertices, faces = mesh_arrays(mesh, torch.device("cpu"))
        f = faces.numpy()
        arrays["vertices"] = vertices.numpy()
        arrays["faces"] = f.astype(np.int32) if f.size == 0 or f.max() < 2 ** 31 else f
    header = {"format": RESULT_FORMAT, "gaussian_init": gaussian.init_params}
    arrays = {"header": np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8), **arrays}
    # An .npz (np.load reads it) deflated at level 1: half the size of raw floats in a third of the default
    # level's time (docs/benchmarks/app.md#kept-result).
    with zipfile.ZipFile(os.fspath(path), "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, a in arrays.items():
            with z.open(name + ".npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(a), allow_pickle=False)
    return os.fspath(path)


def load_result(path, device="cpu") -> tuple[Gaussian, dict]:
    """(Gaussian, {"vertices": [V,3] float32, "faces": [F,3] int64} or None) on ``device`` from ``save_result``'s
    file; a DamagedResultError (a ValueError) says what is wrong with a file that is not one (``check_result``)."""
    init_params, fields, vertices, faces = check_result(path)
    try:
        gaussian = Gaussian.from_raw_fields(init_params, fields, device=device)
    except (TypeError, ValueError) as err:             # e.g. an unknown parameter, an activation of another version
        raise damaged(path, f"its Gaussians' parameters cannot be used ({err})") from None
    if vertices is None:
        return gaussian, None
    mesh = {"vertices": torch.from_numpy(vertices).to(device), "faces": torch.from_numpy(faces).to(device)}
    return gaussian, mesh


def check_result(path) -> tuple[dict, dict, np.ndarray | None, np.ndarray | None]:
    """(the Gaussians' init_params, {raw field: float32 array}, vertices [V,3] float32 or None, faces [F,3] int64 or
    None) of ``save_result``'s file, every member checked before use; DamagedResultError otherwise. Nothing larger
    than the zip's directory says, nor than MAX_RESULT_BYTES, is ever allocated, and a pipe is never opened."""
    arrays = read_members(path)
    init_params = header_params(path, arrays.pop("header"))
    lengths = {name: len(a) for name, a in arrays.items() if name.startswith("gaussian_")}
    if len(set(lengths.values())) > 1:
        raise damaged(path, "its Gaussian fields have different lengths ("
                      + ", ".join(f"{name}.npy {n:,}" for name, n in lengths.items()) + ")")
    with np.errstate(over="ignore"):                   # a float64 beyond float32's range becomes inf: refused
        arrays = {name: a.astype(np.float32) if a.dtype.kind == "f" else a for name, a in arrays.items()}
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise damaged(path, f"{name}.npy holds NaN or infinite values")
    fields = {name[len("gaussian_"):]: a for name, a in arrays.items() if name.startswith("gaussian_")}
    if "vertices" not in arrays:
        return init_params, fields, None, None
    vertices, faces = arrays["vertices"], arrays["faces"]
    if vertices.size and np.abs(vertices).max() > MAX_COORDINATE:
        raise damaged(path, f"vertices.npy holds coordinates beyond {MAX_COORDINATE:g}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise damaged(path, "the mesh's faces point past its vertices (faces.npy)")
    return init_params, fields, vertices, faces.astype(np.int64)


def read_members(path, members: dict = MEMBERS, optional: tuple = OPTIONAL,
                 max_ratio: float | None = MAX_PACKING_RATIO) -> dict:
    """{member name without .npy: array} of the zip at ``path``, each checked against its header and the zip's
    directory before it is unpacked. ``members`` / ``optional``: the layout expected (MEMBERS' form; default a
    v1 result's); ``max_ratio``: the packing ratio a large member may not pass (None: only the size cap)."""
    name = os.fspath(path)
    try:
        info = os.stat(name)                           # stat, not open: a pipe would block the reader
    except FileNotFoundError:
        raise damaged(path, "there is no such file (made before results were kept, or removed)") from None
    except OSError as err:
        raise damaged(path, f"it cannot be read ({err.strerror or err})") from None
    if not stat.S_ISREG(info.st_mode):
        raise damaged(path, NOT_REGULAR_FILE)
    if info.st_size > MAX_RESULT_BYTES:
        raise damaged(path, f"it is {info.st_size:,} bytes, more than any result ({MAX_RESULT_BYTES:,})")
    try:
        # Non-blocking: were it swapped for a pipe since the stat, the open still returns (and fstat refuses it).
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as err:
        raise damaged(path, f"it cannot be read ({err.strerror or err})") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_RESULT_BYTES:
            raise damaged(path, "it was replaced while being opened")
        try:
            entries, size = directory_size(f, info.st_size)
            if entries > MAX_DIRECTORY_ENTRIES or size > MAX_DIRECTORY_BYTES:
                raise damaged(path, f"its zip directory lists {entries:,} members in {size:,} bytes, not a "
                                    f"result's {len(members)}")
            with zipfile.ZipFile(f) as z:
                infos = member_infos(path, z.infolist(), members, optional, max_ratio)
                return {member: read_member(path, z, member, zi, members) for member, zi in infos.items()}
        except DamagedResultError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
                RuntimeError) as err:                  # truncated, not a zip, bad CRC, encrypted, odd compression
            raise damaged(path, f"it is not a readable zip archive ({type(err).__name__}: {err})") from None


def directory_size(f, size: int) -> tuple[int, int]:
    """(entries, bytes) of the zip directory that zipfile would read, from the archive's end records (zip64's
    when present); (0, 0) when there are none (zipfile then says it is not a zip)."""
    tail_bytes = min(size, (1 << 16) + 22)               # the end record and its comment, at most
    f.seek(size - tail_bytes)
    tail = f.read(tail_bytes)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return 0, 0
    entries, cd_bytes = struct.unpack("<HI", tail[at + 10:at + 16])
    z64 = at - 20 - 56                                    # zip64's end record, then its locator, precede it
    if z64 >= 0 and tail[at - 20:at - 16] == b"PK\x06\x07" and tail[z64:z64 + 4] == b"PK\x06\x06":
        entries, cd_bytes = struct.unpack("<QQ", tail[z64 + 32:z64 + 48])
    f.seek(0)
    return entries, cd_bytes


def member_infos(path, infos: list, members: dict = MEMBERS, optional: tuple = OPTIONAL,
                 max_ratio: float | None = MAX_PACKING_RATIO) -> dict:
    """{member: ZipInfo}: exactly the expected names, their unpacked sizes within the caps."""
    names = [zi.filename for zi in infos]
    if len(set(names)) != len(names):
        raise damaged(path, "a member appears twice in the archive")
    expected = {f"{m}.npy": m for m in members}
    by_name = {expected[zi.filename]: zi for zi in infos if zi.filename in expected}
    missing = [f"{m}.npy" for m in members if m not in by_name and m not in optional]
    if 0 < sum(m in by_name for m in optional) < len(optional):
        missing += [f"{m}.npy" for m in optional if m not in by_name]
    unexpected = [n for n in names if n not in expected]
    if missing or unexpected:
        parts = ([f"{', '.join(missing)} missing"] if missing else []) + \
                ([f"unexpected {', '.join(repr(n[:60]) for n in unexpected[:5])}"] if unexpected else [])
        raise damaged(path, "its members are not a result's (" + "; ".join(parts) + ")")
    total = sum(zi.file_size for zi in infos)
    if total > MAX_RESULT_BYTES:
        raise damaged(path, f"its members unpack to {total:,} bytes, more than any result ({MAX_RESULT_BYTES:,})")
    for member, zi in by_name.items():
        if max_ratio is not None and zi.file_size > RATIO_CHECKED_BYTES \
                and zi.file_size > max_ratio * max(zi.compress_size, 1):
            raise damaged(path, f"{member}.npy would unpack {zi.compress_size:,} bytes into {zi.file_size:,} "
                          "(a zip bomb, not data)")
    return by_name


def read_member(path, z: zipfile.ZipFile, member: str, zi: zipfile.ZipInfo, members: dict = MEMBERS) -> np.ndarray:
    """The array of one member: dtype and shape from its .npy header, checked against ``members`` and the zip's
    directory, then exactly that many bytes unpacked."""
    where = f"{member}.npy"
    trailing, kinds = members[member]
    with z.open(zi) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f".npy version {version} is not one this app writes")
        except (ValueError, SyntaxError, TypeError) as err:
            raise damaged(path, f"{where} is not an array file ({err})") from None
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in kinds \
                or (dtype.kind == "f" and dtype.itemsize > 8) or (dtype.kind == "u" and "i" not in kinds
                                                               and dtype.itemsize != 1):
            want = {"f": "floats", "u": "bytes", "iu": "integers", "uf": "bytes or floats"}[kinds]
            raise damaged(path, f"{where} holds {dtype} values, not {want}")
        if len(shape) != 1 + len(trailing) or tuple(shape[1:]) != trailing or any(n < 0 for n in shape):
            want = "[N" + "".join(f", {n}" for n in trailing) + "]"
            raise damaged(path, f"{where} has the shape {list(shape)}, not {want}")
        nbytes = math.prod(shape) * dtype.itemsize
        if fh.tell() + nbytes != zi.file_size:
            raise damaged(path, f"{where} declares {list(shape)} {dtype} ({nbytes:,} bytes) but holds "
                          f"{zi.file_size - fh.tell():,} bytes")
        if member == "header" and nbytes > MAX_HEADER_BYTES:
            raise damaged(path, f"{where} is {nbytes:,} bytes, not a header")
        data = fh.read(nbytes)
        if len(data) != nbytes or fh.read(1):          # the zip's own check (CRC) runs at the member's end
            raise damaged(path, f"{where} is cut short or longer than its header says")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def json_header(path, header: np.ndarray, format_name: str, kind: str = "kept result") -> dict:
    """The JSON record of header.npy, a dict naming `format_name` (a kept result's layout version)."""
    try:
        record = json.loads(header.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise damaged(path, f"header.npy is not a JSON header ({type(err).__name__})") from None
    if not isinstance(record, dict) or record.get("format") != format_name:
        found = record.get("format") if isinstance(record, dict) else record
        raise damaged(path, f"it is not a {kind} of this version (format {found!r:.60}, this app reads "
                      f"{format_name!r})")
    return record


def header_params(path, header: np.ndarray) -> dict:
    """The Gaussians' init_params from the JSON header, each number finite and in its range."""
    record = json_header(path, header, RESULT_FORMAT)
    params = record.get("gaussian_init")
    if not isinstance(params, dict):
        raise damaged(path, "header.npy has no Gaussian parameters (gaussian_init)")
    aabb = params.get("aabb")
    if not (isinstance(aabb, list) and len(aabb) == 6 and all(is_number(x) for x in aabb)
            and all(x > 0 for x in aabb[3:])):
        raise damaged(path, f"its Gaussians' box (gaussian_init.aabb) is not 6 finite numbers with positive sizes "
                      f"({aabb!r:.80})")
    bad = [k for k, v in params.items() if isinstance(v, float) and not math.isfinite(v)]
    for key, ok in (("opacity_bias", lambda v: 0 < v < 1), ("scaling_bias", lambda v: v > 0),
                    ("mininum_kernel_size", lambda v: v >= 0)):
        if key in params and not (is_number(params[key]) and ok(params[key])):
            bad.append(key)
    if bad:
        raise damaged(path, f"its Gaussians' parameters {', '.join(sorted(set(bad)))} are out of range")
    return params


def is_number(x) -> bool:
    """A finite JSON number (not a bool; an integer too large for a float is not one)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False
