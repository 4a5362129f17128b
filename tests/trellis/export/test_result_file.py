"""A kept result (trellis/export/result_file.py): the Gaussians and the decoder mesh written and read back exactly, so
that an export from the file is the export of the original; a damaged file is a clear ValueError."""
import numpy as np
import pytest
import torch

from trellis.export.result_file import load_result, save_result
from trellis.export.schedule import bake_textured_mesh

from test_export import make_gaussians, make_mesh

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
