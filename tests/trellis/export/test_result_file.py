"""A kept result (trellis/export/result_file.py): the Gaussians and the decoder mesh written and read back exactly, so
that an export from the file is the export of the original; a damaged file — each kind of damage written into a
real small result — is a DamagedResultError naming the file and the member, refused before anything large is
unpacked, and a pipe is never opened."""
import io
import json
import os
import threading
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch

from trellis.export.result_file import RESULT_FORMAT, DamagedResultError, load_result, save_result
from trellis.representations.gaussian import Gaussian
from trellis.export.schedule import bake_textured_mesh

from tests.helpers.asset import make_gaussians, make_mesh

BAKE = dict(simplify=0.5, fill_holes=False, texture_size=64, verbose=False, nviews=6, render_resolution=96,
            uv_method="charts")


@pytest.fixture(scope="module")
def result():
    torch.manual_seed(0)
    v, f = make_mesh()
    return make_gaussians(v, f), {"vertices": v, "faces": f}


def test_a_kept_result_exports_as_the_original(result, tmp_path):
    gaussian, mesh = result
    path = save_result(tmp_path / "result.npz", gaussian, mesh)
    g2, m2 = load_result(path)
    for name, t in gaussian.raw_fields().items():
        assert torch.equal(t.float(), g2.raw_fields()[name]), name
    assert g2.init_params == gaussian.init_params
    assert torch.equal(m2["vertices"], torch.as_tensor(mesh["vertices"]).float())
    a = bake_textured_mesh(gaussian, mesh, **BAKE)
    b = bake_textured_mesh(g2, m2, **BAKE)
    for x, y in zip(a[:4], b[:4]):
        np.testing.assert_array_equal(x, y)


def test_a_damaged_kept_result_is_a_clear_error(result, tmp_path):
    gaussian, mesh = result
    path = save_result(tmp_path / "result.npz", gaussian, mesh)
    data = open(path, "rb").read()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.npz").write_text("hello")
    for bad in ("cut.npz", "text.npz", "missing.npz"):
        with pytest.raises(ValueError, match="kept result"):
            load_result(tmp_path / bad)
    arrays = dict(np.load(path))
    arrays["faces"] = arrays["faces"] + len(arrays["vertices"])
    np.savez(tmp_path / "wrong.npz", **arrays)
    with pytest.raises(ValueError, match="past its vertices"):
        load_result(tmp_path / "wrong.npz")


# ------------------------------------------------------------------------------------------ damaged files

def small_result(path, mesh=True):
    """A real kept result of 64 Gaussians and a tetrahedron, written by save_result."""
    g = torch.Generator().manual_seed(1)
    fields = {"xyz": torch.rand(64, 3, generator=g), "features_dc": torch.randn(64, 1, 3, generator=g),
              "scaling": torch.randn(64, 3, generator=g), "rotation": 0.1 * torch.randn(64, 4, generator=g),
              "opacity": torch.randn(64, 1, generator=g)}
    gaussian = Gaussian.from_raw_fields(dict(aabb=[-0.5, -0.5, -0.5, 1, 1, 1], scaling_activation="softplus"),
                                        fields)
    tet = {"vertices": torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float32) * 0.3,
           "faces": torch.tensor([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])}
    return save_result(path, gaussian, tet if mesh else None)


def members(path) -> dict:
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def npy(array, **kw) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, **kw)
    return buf.getvalue()


def rewrite(path, entries: dict, method=zipfile.ZIP_DEFLATED):
    """The zip at `path` written again with `entries` (name -> bytes, or None to leave a member out)."""
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in entries.items():
            if data is not None:
                z.writestr(name, data)
    return path


def array(path, name) -> np.ndarray:
    return np.load(io.BytesIO(members(path)[name]))


def header_with(**changes) -> bytes:
    record = {"format": RESULT_FORMAT, "gaussian_init": {"aabb": [-0.5, -0.5, -0.5, 1, 1, 1]}, **changes}
    return npy(np.frombuffer(json.dumps(record).encode(), dtype=np.uint8))


def damage(kind, path):
    """Write the damage `kind` into the good result at `path`; the message it must give."""
    good = members(path)
    v, faces, xyz = array(path, "vertices.npy"), array(path, "faces.npy"), array(path, "gaussian_xyz.npy")
    cases = {
        "truncated": lambda: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
        "not a zip": lambda: path.write_text("hello"),
        "missing member": lambda: rewrite(path, {**good, "gaussian_opacity.npy": None}),
        "mesh half": lambda: rewrite(path, {**good, "faces.npy": None}),
        "extra member": lambda: rewrite(path, {**good, "evil.npy": npy(np.zeros(3))}),
        "wrong dtype": lambda: rewrite(path, {**good, "vertices.npy": npy(v.astype(np.int32))}),
        "float faces": lambda: rewrite(path, {**good, "faces.npy": npy(faces.astype(np.float32))}),
        "objects": lambda: rewrite(path, {**good, "vertices.npy": npy(np.array([object()] * 3), allow_pickle=True)}),
        "wrong shape": lambda: rewrite(path, {**good, "vertices.npy": npy(np.zeros((4, 4), np.float32))}),
        "lengths": lambda: rewrite(path, {**good, "gaussian_opacity.npy": npy(np.zeros((63, 1), np.float32))}),
        "nan vertices": lambda: rewrite(path, {**good, "vertices.npy": npy(np.full_like(v, np.nan))}),
        "inf gaussians": lambda: rewrite(path, {**good, "gaussian_scaling.npy": npy(np.full((64, 3), np.inf,
                                                                                               np.float32))}),
        "far vertices": lambda: rewrite(path, {**good, "vertices.npy": npy(v * np.float32(1e30))}),
        "faces past": lambda: rewrite(path, {**good, "faces.npy": npy(faces + 4)}),
        "not json": lambda: rewrite(path, {**good, "header.npy": npy(np.frombuffer(b"[[[", dtype=np.uint8))}),
        "other version": lambda: rewrite(path, {**good, "header.npy": header_with(format="trellis-result-99")}),
        "nan box": lambda: rewrite(path, {**good, "header.npy": header_with(
            gaussian_init={"aabb": [0, 0, 0, float("nan"), 1, 1]})}),
        "huge box": lambda: rewrite(path, {**good, "header.npy": header_with(
            gaussian_init={"aabb": [0, 0, 0, 10 ** 400, 1, 1]})}),
        "bad opacity bias": lambda: rewrite(path, {**good, "header.npy": header_with(
            gaussian_init={"aabb": [0, 0, 0, 1, 1, 1], "opacity_bias": 2.0})}),
        "unknown parameter": lambda: rewrite(path, {**good, "header.npy": header_with(
            gaussian_init={"aabb": [0, 0, 0, 1, 1, 1], "colour": "red"})}),
        "bit rot": lambda: flip_a_stored_byte(path, good, "gaussian_xyz.npy", xyz),
        "duplicate": lambda: duplicate(path, good),
    }
    cases[kind]()
    return {"truncated": "not a readable zip", "not a zip": "not a readable zip", "bit rot": "not a readable zip",
            "missing member": "gaussian_opacity.npy missing", "mesh half": "faces.npy missing",
            "extra member": "unexpected 'evil.npy'", "wrong dtype": "holds int32 values, not floats",
            "float faces": "not integers", "objects": "holds object values", "wrong shape": r"shape \[4, 4\]",
            "lengths": "different lengths", "nan vertices": "vertices.npy holds NaN or infinite",
            "inf gaussians": "gaussian_scaling.npy holds NaN or infinite", "far vertices": "coordinates beyond",
            "faces past": "past its vertices", "not json": "not a JSON header",
            "other version": "not a kept result of this version", "nan box": "box", "huge box": "box", "bad opacity bias": "opacity_bias",
            "unknown parameter": "parameters cannot be used", "duplicate": "appears twice"}[kind]


def flip_a_stored_byte(path, good, name, original):
    rewrite(path, good, method=zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    at = data.find(original.tobytes())
    data[at + 5] ^= 0xFF
    path.write_bytes(bytes(data))


def duplicate(path, good):
    with zipfile.ZipFile(rewrite(path, good), "a") as z, pytest.warns(UserWarning, match="Duplicate"):
        z.writestr("vertices.npy", good["vertices.npy"])


DAMAGE = ["truncated", "not a zip", "missing member", "mesh half", "extra member", "wrong dtype", "float faces",
          "objects", "wrong shape", "lengths", "nan vertices", "inf gaussians", "far vertices", "faces past",
          "not json", "other version", "nan box", "huge box", "bad opacity bias", "unknown parameter", "bit rot",
          "duplicate"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_each_kind_of_damage_is_named(kind, tmp_path):
    path = tmp_path / "result.npz"
    small_result(path)
    load_result(path)                                   # the good file loads
    match = damage(kind, path)
    with pytest.raises(DamagedResultError, match=match) as info:
        load_result(path)
    assert str(path) in str(info.value) and "run its job again" in str(info.value)


def test_a_result_without_its_mesh_loads(tmp_path):
    gaussian, mesh = load_result(small_result(tmp_path / "result.npz", mesh=False))
    assert mesh is None and len(gaussian) == 64


def refused_within(path, match, limit_bytes=8 << 20):
    """load_result refuses `path` with `match`, its peak allocation under `limit_bytes`."""
    tracemalloc.start()
    try:
        with pytest.raises(DamagedResultError, match=match):
            load_result(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit_bytes, peak


def npy_header(shape, dtype=np.float32) -> bytes:
    """A .npy header declaring `shape` (no data)."""
    fields = np.lib.format.header_data_from_array_1_0(np.zeros((0, 3), dtype))
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {**fields, "shape": shape})
    return buf.getvalue()


def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path):
    path = small_result(tmp_path / "result.npz")
    rewrite(path, {**members(path), "vertices.npy": None})
    rows = (256 << 20) // 12                            # 256 MB of zero vertices, consistent with their header
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("vertices.npy", "w", force_zip64=True) as fh:
            fh.write(npy_header((rows, 3)))
            left = rows * 12
            while left:
                fh.write(bytes(min(left, 1 << 20)))
                left -= min(left, 1 << 20)
    assert os.path.getsize(path) < 2 << 20
    refused_within(path, "zip bomb")


def test_a_header_claiming_a_huge_array_is_refused_without_allocating(tmp_path):
    path = small_result(tmp_path / "result.npz")
    good = members(path)
    rewrite(path, {**good, "vertices.npy": npy_header((10 ** 12, 3)) + bytes(48)})     # claims 12 TB
    refused_within(path, r"declares \[1000000000000, 3\] float32")
    rewrite(path, {**good, **{f"extra{i}.npy": b"" for i in range(1000)}})
    refused_within(path, "zip directory lists 1,008 members")


def test_a_pipe_or_folder_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "result.npz"
    os.mkfifo(fifo)                                     # opened for reading, it would wait for a writer forever
    errors = []
    reader = threading.Thread(target=lambda: errors.append(pytest.raises(DamagedResultError, load_result, fifo)),
                              daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive() and "not a regular file" in str(errors[0].value)
    with pytest.raises(DamagedResultError, match="not a regular file"):
        load_result(tmp_path)
    with pytest.raises(DamagedResultError, match="no such file"):
        load_result(tmp_path / "gone.npz")
