"""TRELLIS.2's result.npz in its first layout (``trellis2-ovoxel-result-1``), as job folders made before the second
layout hold it: every array as it is, coordinates and faces in the narrowest integer type (deflated, level 1),
attributes float16 where exact else float32, vertices float32 (both stored). The loader still reads it; tests and
benchmarks/trellis2_result_file.py write it to check that and to measure it."""
import json
import os
import zipfile

import numpy as np


def narrowest(a: np.ndarray) -> np.ndarray:
    if a.size == 0 or (a.min() >= 0 and a.max() < 2 ** 16):
        return a.astype(np.uint16)
    return a.astype(np.int32) if a.min() >= -2 ** 31 and a.max() < 2 ** 31 else a.astype(np.int64)


def write_first_layout(path, mesh, extra: dict | None = None) -> str:
    """``mesh`` (a MeshWithVoxel with attributes) at ``path`` in the first layout; returns the path."""
    attrs = mesh.attrs.detach().float().cpu().numpy()
    half = attrs.astype(np.float16)
    arrays = {"coords": narrowest(mesh.coords.detach().cpu().numpy()),
              "attrs": half if np.array_equal(half.astype(np.float32), attrs) else attrs,
              "vertices": mesh.vertices.detach().float().cpu().numpy(),
              "faces": narrowest(mesh.faces.detach().cpu().numpy())}
    layout = {name: [s.start, s.stop] for name, s in mesh.layout.items()}
    header = {**(extra or {}), "format": "trellis2-ovoxel-result-1", "res": mesh.res, "layout": layout}
    arrays = {"header": np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8), **arrays}
    with zipfile.ZipFile(os.fspath(path), "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, a in arrays.items():
            member = name + ".npy"
            if a.dtype.kind == "f":
                member = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
                member.compress_type = zipfile.ZIP_STORED
            with z.open(member, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(a), allow_pickle=False)
    return os.fspath(path)
