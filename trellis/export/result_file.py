"""A TRELLIS result kept for exporting again later, without sampling: the Gaussians' stored fields and the decoder
mesh, exactly (float32), in one compressed ``.npz`` (``save_result`` / ``load_result``). An export from the loaded
result is the export of the original, bit for bit."""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import torch

from ..representations.gaussian import Gaussian
from .options import mesh_arrays

__all__ = ["RESULT_FORMAT", "save_result", "load_result"]

RESULT_FORMAT = "trellis-result-1"      # changes when the file's layout does


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
    file; a ValueError says what is wrong with a file that is not one."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode("utf-8"))
            fields = {k[len("gaussian_"):]: data[k] for k in data.files if k.startswith("gaussian_")}
            vertices = data["vertices"] if "vertices" in data.files else None
            faces = data["faces"] if "faces" in data.files else None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable kept result ({err})") from err
    if not isinstance(header, dict) or header.get("format") != RESULT_FORMAT:
        raise ValueError(f"{path}: not a kept result of this version ({header!r:.80})")
    gaussian = Gaussian.from_raw_fields(header["gaussian_init"], fields, device=device)
    if vertices is None and faces is None:
        return gaussian, None
    if (vertices is None or faces is None or vertices.ndim != 2 or vertices.shape[1:] != (3,) or faces.ndim != 2
            or faces.shape[1:] != (3,)):
        raise ValueError(f"{path}: the mesh's arrays are missing or have the wrong shapes")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(f"{path}: the mesh's faces point past its vertices")
    mesh = {"vertices": torch.from_numpy(vertices.astype(np.float32)).to(device),
            "faces": torch.from_numpy(faces.astype(np.int64)).to(device)}
    return gaussian, mesh
