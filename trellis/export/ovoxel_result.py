"""A TRELLIS.2 result kept for exporting again later, without sampling: the O-Voxel (``MeshWithVoxel``) exactly as
given, in one ``.npz`` (``save_ovoxel_result`` / ``load_ovoxel_result``); an export from the loaded result is the
export of the original, bit for bit.

It holds what ``trellis.export.pbr.bake_ovoxel`` reads: the fine voxels' coordinates and PBR attributes, the grid
resolution and the attribute layout (in the JSON header), and the dual-grid mesh (one vertex per fine voxel). Each
array is in the smallest exact form ``ovoxel_codec`` finds: the decoder's mesh as its kept edges and splits (one bit
each) rebuilt on loading, vertices and attributes as small integers when they lie on ``light_ovoxel``'s grids (an
O-Voxel rounded by it keeps a light file), else as exact floats. Files of the first layout (``..._FORMAT_1``: every
array as it is) are still read.

It is written as ``zipfile`` writes it member by member, byte for byte (``npz_writer``), each array encoded and
deflated in a thread of its own.

The file is input like any upload: it is read with ``result_file``'s guards (a regular file, a zip of exactly the
expected members, each member's dtype and shape checked against its header and the zip's directory before it is
unpacked, size and packing caps), then checked here: the header's format, resolution, layout and encodings, finite
values, coordinates inside the grid, faces within the vertices. Anything else is a ``DamagedResultError``."""
from __future__ import annotations

import json
import os
import stat
import zipfile

import numpy as np
import torch

from ..core.concurrency import run_together
from ..representations.ovoxel import MeshWithVoxel
from ..representations.ovoxel.head import PBR_LAYOUT
from . import ovoxel_codec as codec
from .npz_writer import pack, write_npz
from .result_file import MEMBERS as RESULT_MEMBERS  # TRELLIS v1's
from .result_file import (
    MAX_COORDINATE,
    MAX_DIRECTORY_BYTES,
    MAX_DIRECTORY_ENTRIES,
    MAX_PACKING_RATIO,
    MAX_RESULT_BYTES,
    DamagedResultError,
    damaged,
    directory_size,
    json_header,
    read_members,
)

__all__ = ["OVOXEL_RESULT_FORMAT", "OVOXEL_RESULT_FORMAT_1", "MAX_RES", "save_ovoxel_result", "check_ovoxel_result",
           "load_ovoxel_result", "is_ovoxel_result", "light_ovoxel", "DamagedResultError"]

light_ovoxel = codec.light_ovoxel

OVOXEL_RESULT_FORMAT = "trellis2-ovoxel-result-2"     # changes when the file's layout does
OVOXEL_RESULT_FORMAT_1 = "trellis2-ovoxel-result-1"   # every array as it is (still read)
MAX_RES = 4096                                        # the finest published grid is 1536 (1536_cascade)
CHANNELS = max(s.stop for s in PBR_LAYOUT.values())
MEMBERS_1 = {"header": ((), "u"), "coords": ((3,), "iu"), "attrs": ((CHANNELS,), "f"), "vertices": ((3,), "f"),
             "faces": ((3,), "iu")}
# splits: packed bits; face_rows, vertex_codes and integer attr_values: byte planes of the dtype the header names;
# float attr_values: the values (stored, not deflated). No name is the first layout's but the header's and coords':
# a member missing from either is named as such.
MEMBERS = {"header": ((), "u"), "coords": ((3,), "iu"), "face_rows": ((), "u"), "splits": ((), "u"),
           "vertex_codes": ((), "u"), "attr_values": ((), "uf")}
# The members no TRELLIS v1 result has (either layout's): any one of them makes a file a TRELLIS.2 result.
OWN_MEMBERS = frozenset(f"{m}.npy" for m in (*MEMBERS_1, *MEMBERS) if m not in RESULT_MEMBERS)
# The integer and float types each encoding may declare (anything else is not one of ours).
INTS = ("int16", "int32", "int64")
DTYPES = {("faces", "quads"): INTS, ("faces", "triangles"): INTS,
          ("vertices", "dual"): ("int16",), ("vertices", "delta"): ("int16", "int32"),
          ("attrs", "codes"): ("int16",), ("attrs", "float"): ("float16", "float32")}


def layout_record(layout: dict) -> dict:
    """{name: [start, stop]} of an attribute layout (slices), as the header stores it."""
    return {name: [s.start, s.stop] for name, s in layout.items()}


def save_ovoxel_result(path, mesh: MeshWithVoxel, extra: dict | None = None) -> str:
    """Write ``path`` (.npz) from ``mesh`` (with its attributes); ``extra``: more header facts (e.g. the pipeline
    type), JSON values. Returns the path."""
    if mesh.attrs is None:
        raise ValueError("this O-Voxel mesh has no attributes (the texture decoder has not run): nothing to keep")
    if layout_record(mesh.layout) != layout_record(PBR_LAYOUT):
        raise ValueError(f"unexpected attribute layout {layout_record(mesh.layout)}")
    coords = mesh.coords.detach().cpu()
    # one thread per array (numpy, torch and zlib leave the GIL); the vertices' first: theirs is the longest deflate
    packed = {key: value for key, value, _ in run_together({
        "vertices": lambda: pack_vertices(coords, mesh.vertices, mesh.res),
        "faces": lambda: pack_faces(mesh.faces),
        "attrs": lambda: pack_attrs(mesh.attrs),
        # coordinates column by column: each column's runs deflate well
        "coords": lambda: pack("coords.npy", np.asfortranarray(narrowest_int(coords.numpy())))}, "ovoxel-result")}
    (face_codec, face_members), (vertex_codec, vertex_member), (attr_codec, attr_member) = \
        packed["faces"], packed["vertices"], packed["attrs"]
    header = {**(extra or {}), "format": OVOXEL_RESULT_FORMAT, "res": mesh.res, "layout": layout_record(mesh.layout),
              "voxels": int(coords.shape[0]), "faces": face_codec, "vertices": vertex_codec, "attrs": attr_codec}
    header_member = pack("header.npy", np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8))
    write_npz(os.fspath(path), [header_member, packed["coords"], *face_members, vertex_member, attr_member])
    return os.fspath(path)


def pack_faces(faces: torch.Tensor) -> tuple:
    """(the header's faces record, [face_rows, splits] packed): byte planes of the encoder's integers."""
    face_codec, face_rows, splits = codec.encode_faces(faces)
    return ({**face_codec, "dtype": face_rows.dtype.name},
            [pack("face_rows.npy", codec.byte_planes(face_rows)), pack("splits.npy", splits)])


def pack_vertices(coords: torch.Tensor, vertices: torch.Tensor, res: int) -> tuple:
    """(the header's vertices record, vertex_codes packed): byte planes of the encoder's integers."""
    vertex_codec, codes = codec.encode_vertices(coords, vertices, res)
    return {**vertex_codec, "dtype": codes.dtype.name}, pack("vertex_codes.npy", codec.byte_planes(codes))


def pack_attrs(attrs: torch.Tensor) -> tuple:
    """(the header's attrs record, attr_values packed): integers as byte planes (deflated), floats as they are
    (stored: the decoders' values barely deflate, and deflating them took most of the write)."""
    attr_codec, values = codec.encode_attrs(attrs)
    record = {**attr_codec, "dtype": values.dtype.name}
    if attr_codec["codec"] == "float":
        return record, pack("attr_values.npy", values.ravel(), level=None)
    return record, pack("attr_values.npy", codec.byte_planes(values))


def narrowest_int(a: np.ndarray) -> np.ndarray:
    """`a` in the smallest of uint16 / int32 / int64 that holds its values exactly (the loader widens them)."""
    if a.size == 0 or (a.min() >= 0 and a.max() < 2 ** 16):
        return a.astype(np.uint16)
    return a.astype(np.int32) if a.min() >= -2 ** 31 and a.max() < 2 ** 31 else a.astype(np.int64)


def check_ovoxel_result(path) -> tuple[dict, dict]:
    """(header, {"coords" int32, "attrs" float32, "vertices" float32, "faces" int64}) of ``save_ovoxel_result``'s
    file (either layout), every member checked before use; DamagedResultError otherwise."""
    first_layout = bool({"faces.npy", "vertices.npy", "attrs.npy"} & set(zip_names(path)))
    # the second layout's members are packed bits and byte planes, whose runs may deflate past any ratio cap: only
    # the total size cap holds them
    arrays = read_members(path, MEMBERS_1 if first_layout else MEMBERS, (),
                          MAX_PACKING_RATIO if first_layout else None)
    header = ovoxel_header(path, arrays.pop("header"), OVOXEL_RESULT_FORMAT_1 if first_layout
                           else OVOXEL_RESULT_FORMAT)
    res = header["res"]
    coords = arrays["coords"]
    if coords.size and (coords.min() < 0 or coords.max() >= res):
        raise damaged(path, f"coords.npy holds voxels outside the {res}^3 grid")
    arrays["coords"] = np.array(coords, dtype=np.int32, order="C")
    if not first_layout:
        arrays.update(decode_arrays(path, header, arrays))
    with np.errstate(over="ignore"):                   # a float64 beyond float32's range becomes inf: refused
        for name in ("attrs", "vertices"):
            arrays[name] = own(arrays[name], np.float32)
    for name in ("attrs", "vertices"):
        if not np.isfinite(arrays[name]).all():
            raise damaged(path, f"{name}.npy holds NaN or infinite values")
    vertices, faces = arrays["vertices"], arrays["faces"]
    if len(arrays["attrs"]) != len(coords):
        raise damaged(path, f"attrs.npy has {len(arrays['attrs']):,} rows for {len(coords):,} voxels (coords.npy)")
    if vertices.size and np.abs(vertices).max() > MAX_COORDINATE:
        raise damaged(path, f"vertices.npy holds coordinates beyond {MAX_COORDINATE:g}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise damaged(path, "the mesh's faces point past its vertices (faces.npy)")
    arrays["faces"] = own(faces, np.int64)
    return header, {name: arrays[name] for name in ("coords", "attrs", "vertices", "faces")}


def own(a: np.ndarray, dtype) -> np.ndarray:
    """``a`` as ``dtype``, C-ordered and writable (the zip's read-only buffers are copied; decoded arrays are not)."""
    if a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable:
        return a
    return np.array(a, dtype=dtype, order="C")


def decode_arrays(path, header: dict, arrays: dict) -> dict:
    """{"faces", "vertices", "attrs"} of the second layout's members, as the first layout holds them."""
    m, res = len(arrays["coords"]), header["res"]
    coords = torch.from_numpy(arrays["coords"])
    if header["voxels"] != m:
        raise damaged(path, f"its header counts {header['voxels']:,} voxels, coords.npy holds {m:,}")
    enc = header["faces"]
    try:
        rows = codec.from_byte_planes(arrays.pop("face_rows"), enc["dtype"],
                                      (enc["count"], 4 if enc["codec"] == "quads" else 3))
        if enc["codec"] == "triangles" and arrays["splits"].size:
            raise ValueError("splits.npy holds bits for faces that are not quads")
        with np.errstate(over="ignore"):               # wrapped sums of a damaged file fail the range check
            faces = codec.decode_faces(enc, rows, arrays["splits"])
        vertex_codes = codec.from_byte_planes(arrays.pop("vertex_codes"), header["vertices"]["dtype"], (m, 3))
        attr_values = arrays.pop("attr_values")
        if header["attrs"]["codec"] == "float":
            if attr_values.dtype.name != header["attrs"]["dtype"] or attr_values.shape != (m * CHANNELS,):
                raise ValueError(f"attr_values.npy holds {attr_values.shape[0]:,} {attr_values.dtype} values, not "
                                 f"{m * CHANNELS:,} {header['attrs']['dtype']}")
            attr_values = attr_values.reshape(m, CHANNELS)
        else:
            attr_values = codec.from_byte_planes(attr_values, header["attrs"]["dtype"], (m, CHANNELS))
    except ValueError as err:
        raise damaged(path, f"its arrays do not match its header ({err})") from None
    return {"faces": faces, "vertices": codec.decode_vertices(header["vertices"], vertex_codes, coords, res).numpy(),
            "attrs": codec.decode_attrs(header["attrs"], attr_values).numpy()}


def ovoxel_header(path, header: np.ndarray, format_name: str = OVOXEL_RESULT_FORMAT) -> dict:
    """The JSON header: this format, a resolution in range, the layout the bake reads and (second layout) the
    encodings this version writes."""
    record = json_header(path, header, format_name, "kept TRELLIS.2 result")
    res = record.get("res")
    if isinstance(res, bool) or not isinstance(res, int) or not 1 <= res <= MAX_RES:
        raise damaged(path, f"its grid resolution (res) is not a whole number from 1 to {MAX_RES} ({res!r:.40})")
    if record.get("layout") != layout_record(PBR_LAYOUT):
        raise damaged(path, f"its attribute layout is not this version's ({record.get('layout')!r:.120})")
    if format_name == OVOXEL_RESULT_FORMAT:
        check_encodings(path, record)
    return record


def whole(x, low: int, high: int) -> bool:
    return not isinstance(x, bool) and isinstance(x, int) and low <= x <= high


def check_encodings(path, record: dict) -> None:
    """The header's voxel count and each array's encoding: one this version writes, with its parameters in range."""
    if not whole(record.get("voxels"), 0, MAX_RESULT_BYTES):
        raise damaged(path, f"its voxel count is not a whole number ({record.get('voxels')!r:.40})")
    for name in ("faces", "vertices", "attrs"):
        enc = record.get(name)
        ok = isinstance(enc, dict) and enc.get("dtype") in DTYPES.get((name, enc.get("codec")), ())
        extra = {"steps"} if ok and enc["codec"] in ("dual", "codes") else {"count"} if name == "faces" else set()
        ok = ok and enc.keys() == {"codec", "dtype", *extra}
        if not ok or not all(whole(enc[k], 1 if k == "steps" else 0, codec.MAX_STEPS if k == "steps"
                                   else MAX_RESULT_BYTES) for k in extra):
            raise damaged(path, f"its {name}' encoding is not one this version reads ({enc!r:.80})")


def load_ovoxel_result(path, device="cpu") -> MeshWithVoxel:
    """The ``MeshWithVoxel`` of ``save_ovoxel_result``'s file on ``device``; DamagedResultError (a ValueError) for
    a file that is not one."""
    header, a = check_ovoxel_result(path)
    return MeshWithVoxel(torch.from_numpy(a["vertices"]).to(device), torch.from_numpy(a["faces"]).to(device),
                         torch.from_numpy(a["coords"]).to(device), header["res"],
                         torch.from_numpy(a["attrs"]).to(device), PBR_LAYOUT)


def zip_names(path) -> list[str]:
    """The member names in the zip directory of a regular file at ``path``; [] for anything else (the reader
    then says what is wrong with it). Only the zip's directory is read."""
    name = os.fspath(path)
    try:
        info = os.stat(name)                           # stat, not open: a pipe would block the reader
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_RESULT_BYTES:
            return []
        with open(name, "rb") as f:
            entries, size = directory_size(f, info.st_size)
            if entries > MAX_DIRECTORY_ENTRIES or size > MAX_DIRECTORY_BYTES:
                return []
            with zipfile.ZipFile(f) as z:
                return z.namelist()
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return []


def is_ovoxel_result(path) -> bool:
    """Whether ``path`` is a regular zip file holding a member only a TRELLIS.2 result has (``OWN_MEMBERS``; one
    missing ``coords.npy`` is still one, and its reader names what is missing): which reader a kept result needs.
    Only the zip's directory is read; anything unreadable is False (the v1 reader then says what is wrong with it)."""
    return not OWN_MEMBERS.isdisjoint(zip_names(path))
