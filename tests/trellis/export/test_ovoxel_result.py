"""A TRELLIS.2 result.npz: the O-Voxel back bit for bit, and every damaged file refused with what is wrong."""
import json
import os
import zipfile

import numpy as np
import pytest
import torch

from trellis.export import save_result
from trellis.export.ovoxel_result import (OVOXEL_RESULT_FORMAT, DamagedResultError, check_ovoxel_result,
                                          is_ovoxel_result, load_ovoxel_result, save_ovoxel_result)
from trellis.representations.gaussian import Gaussian
from trellis.representations.ovoxel import MeshWithVoxel


def ovoxel(n: int = 40, res: int = 64, seed: int = 0) -> MeshWithVoxel:
    g = torch.Generator().manual_seed(seed)
    coords = torch.randint(0, res, (n, 3), generator=g, dtype=torch.int32)
    vertices = (coords.float() + torch.rand(n, 3, generator=g)) / res - 0.5
    faces = torch.randint(0, n, (n // 2, 3), generator=g)
    return MeshWithVoxel(vertices, faces, coords, res, torch.rand(n, 6, generator=g))


def rewrite(src, dst, **members):
    """A copy of the result `src` with some members' arrays replaced (None: left out)."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for name in z.namelist():
            key = name[:-4]
            if key not in members:
                out.writestr(name, z.read(name))
            elif members[key] is not None:
                with out.open(name, "w") as fh:
                    np.lib.format.write_array(fh, np.ascontiguousarray(members[key]))
    return dst


def test_half_precision_attributes_are_kept_in_half_and_floats_are_stored(tmp_path):
    mesh = ovoxel(n=400)
    mesh.attrs = mesh.attrs.half().float()              # what a half-precision decoder gives: exact in float16
    path = save_ovoxel_result(tmp_path / "result.npz", mesh)
    with zipfile.ZipFile(path) as z:
        kinds = {i.filename: i.compress_type for i in z.infolist()}
        dtypes = {n: np.lib.format.read_array(z.open(n)).dtype for n in ("attrs.npy", "coords.npy", "faces.npy")}
    assert dtypes == {"attrs.npy": np.float16, "coords.npy": np.uint16, "faces.npy": np.uint16}, dtypes
    assert kinds["attrs.npy"] == kinds["vertices.npy"] == zipfile.ZIP_STORED
    assert kinds["coords.npy"] == kinds["faces.npy"] == zipfile.ZIP_DEFLATED
    back = load_ovoxel_result(path)
    for name in ("vertices", "faces", "coords", "attrs"):
        assert torch.equal(getattr(back, name), getattr(mesh, name)), name
    assert back.attrs.dtype == torch.float32 and back.coords.dtype == torch.int32
    mesh.attrs = mesh.attrs.bfloat16()                  # a bf16 decoder's (numpy has no bfloat16): float16 where exact
    with zipfile.ZipFile(save_ovoxel_result(tmp_path / "c.npz", mesh)) as z:
        assert np.lib.format.read_array(z.open("attrs.npy")).dtype == np.float16
    assert torch.equal(load_ovoxel_result(tmp_path / "c.npz").attrs, mesh.attrs.float())
    mesh.attrs = mesh.attrs.float()
    mesh.attrs[0, 0] = 0.1                              # not exact in float16: kept in float32
    with zipfile.ZipFile(save_ovoxel_result(tmp_path / "b.npz", mesh)) as z:
        assert np.lib.format.read_array(z.open("attrs.npy")).dtype == np.float32


def header(**changes) -> np.ndarray:
    record = {"format": OVOXEL_RESULT_FORMAT, "res": 64,
              "layout": {"base_color": [0, 3], "metallic": [3, 4], "roughness": [4, 5], "alpha": [5, 6]}, **changes}
    return np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)


def test_the_ovoxel_comes_back_exactly(tmp_path):
    mesh = ovoxel()
    path = save_ovoxel_result(tmp_path / "result.npz", mesh, {"pipeline_type": "512"})
    assert is_ovoxel_result(path)
    back = load_ovoxel_result(path)
    for name in ("vertices", "faces", "coords", "attrs"):
        assert torch.equal(getattr(back, name), getattr(mesh, name)), name
    assert back.res == mesh.res and back.layout == mesh.layout
    assert check_ovoxel_result(path)[0]["pipeline_type"] == "512"


def test_a_v1_result_or_another_file_is_not_taken_for_one(tmp_path):
    v1 = tmp_path / "v1.npz"
    fields = {"xyz": torch.rand(4, 3), "features_dc": torch.rand(4, 1, 3), "scaling": torch.rand(4, 3),
              "rotation": torch.rand(4, 4), "opacity": torch.rand(4, 1)}
    save_result(v1, Gaussian.from_raw_fields(dict(aabb=[-0.5, -0.5, -0.5, 1, 1, 1]), fields), None)
    assert not is_ovoxel_result(v1) and not is_ovoxel_result(tmp_path) and not is_ovoxel_result(tmp_path / "no")
    with pytest.raises(DamagedResultError, match="members are not a result's"):
        load_ovoxel_result(v1)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe")
        assert not is_ovoxel_result(tmp_path / "pipe")


@pytest.mark.parametrize("members, words", [
    ({"header": header(res=0)}, "grid resolution"),
    ({"header": header(format="trellis-result-1")}, "not a kept TRELLIS.2 result"),
    ({"header": header(layout={"base_color": [0, 3]})}, "attribute layout"),
    ({"coords": np.full((40, 3), 64, np.int32)}, "outside the 64"),
    ({"faces": np.full((20, 3), 40, np.int32)}, "faces point past"),
    ({"attrs": np.full((40, 6), np.nan, np.float32)}, "NaN"),
    ({"attrs": np.zeros((39, 6), np.float32)}, "39 rows for 40 voxels"),
    ({"attrs": np.zeros((40, 5), np.float32)}, "shape"),
    ({"vertices": None}, "vertices.npy missing"),
])
def test_a_damaged_result_is_refused_with_what_is_wrong(tmp_path, members, words):
    good = save_ovoxel_result(tmp_path / "good.npz", ovoxel())
    bad = rewrite(good, tmp_path / "bad.npz", **members)
    with pytest.raises(DamagedResultError, match=words):
        load_ovoxel_result(bad)
