"""A TRELLIS.2 job's result.npz through the app: `python -m desktop generate` on the tiny random-weight pipeline keeps
the O-Voxel in the compact layout (quads and split bits), and `python -m desktop export` with the job's own options
bakes it into the very bytes of the job's GLB."""
import json

import numpy as np
from PIL import Image

from desktop import cli, export_command
from trellis.export import check_ovoxel_result

# Cheap on a CPU: one step per flow, the 512 type, a small texture; a seed whose tiny mesh unwraps into charts.
CHEAP = ["--device", "cpu", "--seed", "1022908287", "--steps", "1", "--pipeline-type", "512", "--texture-size", "64",
         "--target-faces", "100000", "-q"]


def square(path) -> str:
    a = np.zeros((64, 64, 4), np.uint8)
    a[16:48, 16:48] = (200, 80, 40, 255)
    Image.fromarray(a, "RGBA").save(path)
    return str(path)


def test_the_kept_result_exports_again_into_the_jobs_own_glb(tiny_trellis2_dir, tmp_path):
    code = cli.main([square(tmp_path / "in.png"), "--model", tiny_trellis2_dir, "-o", str(tmp_path / "job"),
                     "--formats", "glb", "--normal-map", *CHEAP])
    assert code == 0
    (made,) = (tmp_path / "job").iterdir()
    header, arrays = check_ovoxel_result(made / "result.npz")
    assert header["format"] == "trellis2-ovoxel-result-2" and header["pipeline_type"] == "512"
    assert header["faces"]["codec"] == "quads" and 2 * header["faces"]["count"] == len(arrays["faces"]) > 0
    code = export_command.main([str(made), "-o", str(tmp_path / "again"), "--device", "cpu", "-q"])
    assert code == 0
    (again,) = (tmp_path / "again").iterdir()
    assert json.loads((again / "settings.json").read_text())["kind"] == "export"
    assert (again / "model.glb").read_bytes() == (made / "model.glb").read_bytes()
