"""A TRELLIS.2 result kept for exporting again later, without sampling: the O-Voxel (``MeshWithVoxel``) exactly as
decoded, in one compressed ``.npz`` (``save_ovoxel_result`` / ``load_ovoxel_result``); an export from the loaded
result is the export of the original, bit for bit.

It holds what ``trellis.export.pbr.bake_ovoxel`` reads: the fine voxels' coordinates and PBR attributes (float16 where exact, else float32),
the grid resolution and the attribute layout (in the JSON header), and the dual-grid mesh the decoder made
(vertices float32, faces in the narrowest exact integer type). That mesh is kept rather than rebuilt: its vertices are the shape decoder's
per-voxel offsets, which the coordinates alone do not give, and it has one vertex per fine voxel, so it costs no
more than the voxels themselves (never the reference's subdivided raw mesh).

The file is input like any upload: it is read with ``result_file``'s guards (a regular file, a zip of exactly the
expected members, each member's dtype and shape checked against its header and the zip's directory before it is
unpacked, size and packing caps), then checked here: the header's format, resolution and layout, finite values,
coordinates inside the grid, faces within the vertices. Anything else is a ``DamagedResultError``."""
from __future__ import annotations

import json
import os
import stat
import zipfile

import numpy as np
import torch

from ..representations.ovoxel import MeshWithVoxel
from ..representations.ovoxel.head import PBR_LAYOUT
from .result_file import (MAX_COORDINATE, MAX_DIRECTORY_BYTES, MAX_DIRECTORY_ENTRIES, MAX_RESULT_BYTES,
                          DamagedResultError, damaged, directory_size, json_header, read_members)

__all__ = ["OVOXEL_RESULT_FORMAT", "MAX_RES", "save_ovoxel_result", "check_ovoxel_result", "load_ovoxel_result",
           "is_ovoxel_result", "DamagedResultError"]

OVOXEL_RESULT_FORMAT = "trellis2-ovoxel-result-1"     # changes when the file's layout does
MAX_RES = 4096                                        # the finest published grid is 1536 (1536_cascade)
CHANNELS = max(s.stop for s in PBR_LAYOUT.values())
MEMBERS = {"header": ((), "u"), "coords": ((3,), "iu"), "attrs": ((CHANNELS,), "f"), "vertices": ((3,), "f"),
           "faces": ((3,), "iu")}


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
    arrays = {"coords": narrowest_int(mesh.coords.detach().cpu().numpy()),
              "attrs": narrowest_float(mesh.attrs.detach().float().cpu().numpy()),
              "vertices": mesh.vertices.detach().float().cpu().numpy(),
              "faces": narrowest_int(mesh.faces.detach().cpu().numpy())}
    header = {**(extra or {}), "format": OVOXEL_RESULT_FORMAT, "res": mesh.res, "layout": layout_record(mesh.layout)}
    arrays = {"header": np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8), **arrays}
    # Integers deflated at level 1 (they pack well, fast); floats stored: the decoders' values barely deflate
    # and deflating them took most of the write.
    with zipfile.ZipFile(os.fspath(path), "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, a in arrays.items():
            member = name + ".npy"
            if a.dtype.kind == "f":
                member = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
                member.compress_type = zipfile.ZIP_STORED
            with z.open(member, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(a), allow_pickle=False)
    return os.fspath(path)


def narrowest_int(a: np.ndarray) -> np.ndarray:
    """`a` in the smallest of uint16 / int32 / int64 that holds its values exactly (the loader widens them)."""
    if a.size == 0 or (a.min() >= 0 and a.max() < 2 ** 16):
        return a.astype(np.uint16)
    return a.astype(np.int32) if a.min() >= -2 ** 31 and a.max() < 2 ** 31 else a.astype(np.int64)


def narrowest_float(a: np.ndarray) -> np.ndarray:
    """`a` as float16 where every value survives the round trip (half-precision decoders' outputs), else float32."""
    a32 = a.astype(np.float32)
    a16 = a32.astype(np.float16)
    return a16 if np.array_equal(a16.astype(np.float32), a32) else a32


def check_ovoxel_result(path) -> tuple[dict, dict]:
    """(header, {"coords" int32, "attrs" float32, "vertices" float32, "faces" int64}) of ``save_ovoxel_result``'s
    file, every member checked before use; DamagedResultError otherwise."""
    arrays = read_members(path, MEMBERS, ())
    header = ovoxel_header(path, arrays.pop("header"))
    res = header["res"]
    with np.errstate(over="ignore"):                   # a float64 beyond float32's range becomes inf: refused
        for name in ("attrs", "vertices"):
            arrays[name] = arrays[name].astype(np.float32)
    for name in ("attrs", "vertices"):
        if not np.isfinite(arrays[name]).all():
            raise damaged(path, f"{name}.npy holds NaN or infinite values")
    coords, vertices, faces = arrays["coords"], arrays["vertices"], arrays["faces"]
    if len(arrays["attrs"]) != len(coords):
        raise damaged(path, f"attrs.npy has {len(arrays['attrs']):,} rows for {len(coords):,} voxels (coords.npy)")
    if coords.size and (coords.min() < 0 or coords.max() >= res):
        raise damaged(path, f"coords.npy holds voxels outside the {res}^3 grid")
    if vertices.size and np.abs(vertices).max() > MAX_COORDINATE:
        raise damaged(path, f"vertices.npy holds coordinates beyond {MAX_COORDINATE:g}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise damaged(path, "the mesh's faces point past its vertices (faces.npy)")
    arrays["coords"] = coords.astype(np.int32)
    arrays["faces"] = faces.astype(np.int64)
    return header, arrays


def ovoxel_header(path, header: np.ndarray) -> dict:
    """The JSON header: this format, a resolution in range and the layout the bake reads."""
    record = json_header(path, header, OVOXEL_RESULT_FORMAT, "kept TRELLIS.2 result")
    res = record.get("res")
    if isinstance(res, bool) or not isinstance(res, int) or not 1 <= res <= MAX_RES:
        raise damaged(path, f"its grid resolution (res) is not a whole number from 1 to {MAX_RES} ({res!r:.40})")
    if record.get("layout") != layout_record(PBR_LAYOUT):
        raise damaged(path, f"its attribute layout is not this version's ({record.get('layout')!r:.120})")
    return record


def load_ovoxel_result(path, device="cpu") -> MeshWithVoxel:
    """The ``MeshWithVoxel`` of ``save_ovoxel_result``'s file on ``device``; DamagedResultError (a ValueError) for
    a file that is not one."""
    header, a = check_ovoxel_result(path)
    return MeshWithVoxel(torch.from_numpy(a["vertices"]).to(device), torch.from_numpy(a["faces"]).to(device),
                         torch.from_numpy(a["coords"]).to(device), header["res"],
                         torch.from_numpy(a["attrs"]).to(device), PBR_LAYOUT)


def is_ovoxel_result(path) -> bool:
    """Whether ``path`` is a regular zip file whose members are a TRELLIS.2 result's (``coords.npy`` among them):
    which reader a kept result needs. Only the zip's directory is read; anything unreadable is False (the v1
    reader then says what is wrong with it)."""
    name = os.fspath(path)
    try:
        info = os.stat(name)                           # stat, not open: a pipe would block the reader
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_RESULT_BYTES:
            return False
        with open(name, "rb") as f:
            entries, size = directory_size(f, info.st_size)
            if entries > MAX_DIRECTORY_ENTRIES or size > MAX_DIRECTORY_BYTES:
                return False
            with zipfile.ZipFile(f) as z:
                return "coords.npy" in z.namelist()
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return False
