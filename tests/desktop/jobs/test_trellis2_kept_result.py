"""A TRELLIS.2 job's result.npz through the app: `python -m desktop generate` on the tiny random-weight pipeline keeps
the O-Voxel in the compact layout (quads and split bits), and `python -m desktop export` with the job's own options
bakes it into the very bytes of the job's GLB; a folder whose result.npz is of the first layout does too."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from desktop import cli, export_command
from tests.helpers.ovoxel_first_layout import write_first_layout
from trellis.export import check_ovoxel_result, load_ovoxel_result

# Cheap on a CPU: one step per flow, the 512 type, a small texture; a seed whose tiny mesh unwraps into charts.
CHEAP = ["--device", "cpu", "--seed", "1022908287", "--steps", "1", "--pipeline-type", "512", "--texture-size", "64",
         "--target-faces", "100000", "-q"]


def square(path) -> str:
    a = np.zeros((64, 64, 4), np.uint8)
    a[16:48, 16:48] = (200, 80, 40, 255)
    Image.fromarray(a, "RGBA").save(path)
    return str(path)


@pytest.fixture(scope="module")
def made(tiny_trellis2_dir, tmp_path_factory):
    """One TRELLIS.2 job's folder (GLB only)."""
    tmp = tmp_path_factory.mktemp("trellis2_kept")
    code = cli.main([square(tmp / "in.png"), "--model", tiny_trellis2_dir, "-o", str(tmp / "job"),
                     "--formats", "glb", "--normal-map", *CHEAP])
    assert code == 0
    (folder,) = (tmp / "job").iterdir()
    return folder


def export_again(folder, out) -> bytes:
    """`python -m desktop export` of `folder` with the job's own options: the new GLB's bytes."""
    assert export_command.main([str(folder), "-o", str(out), "--device", "cpu", "-q"]) == 0
    (again,) = out.iterdir()
    assert json.loads((again / "settings.json").read_text())["kind"] == "export"
    return (again / "model.glb").read_bytes()


def test_the_kept_result_exports_again_into_the_jobs_own_glb(made, tmp_path):
    header, arrays = check_ovoxel_result(made / "result.npz")
    assert header["format"] == "trellis2-ovoxel-result-2" and header["pipeline_type"] == "512"
    assert header["faces"]["codec"] == "quads" and 2 * header["faces"]["count"] == len(arrays["faces"]) > 0
    assert export_again(made, tmp_path / "again") == (made / "model.glb").read_bytes()


def test_a_job_folder_of_the_first_layout_still_exports_again_into_its_glb(made, tmp_path):
    old = tmp_path / made.name
    shutil.copytree(made, old)
    ovoxel = load_ovoxel_result(made / "result.npz")
    write_first_layout(old / "result.npz", ovoxel, {"pipeline_type": "512"})
    assert check_ovoxel_result(old / "result.npz")[0]["format"] == "trellis2-ovoxel-result-1"
    assert export_again(old, tmp_path / "again") == (made / "model.glb").read_bytes()
