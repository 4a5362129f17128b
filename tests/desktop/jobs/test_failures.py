"""Why a job failed (desktop/jobs/failures.py), through the real runner: an export whose source folder's result.npz is
damaged (NaN vertices, a header claiming a 12 TB array) fails at once as the user's input, with the file and the
member named, never as an unexpected error or an out-of-memory."""
import io
import json
import zipfile

import numpy as np
import torch

from desktop.jobs import JobRunner, JobState
from trellis.export.result_file import save_result
from trellis.representations.gaussian import Gaussian

TIMEOUT = 60


def job_folder(root):
    """A finished job's folder as the app leaves it, its result.npz a real one of 16 Gaussians and a triangle."""
    folder = root / "20250101-000000-abcd1234"
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps(
        {"job_id": "abcd1234" + "0" * 24, "kind": "generate", "created": "2025-01-01T00:00:00", "seed": 1,
         "settings": {"seed": 1, "randomize_seed": False, "formats": ["glb"], "texture_size": 64}}))
    (folder / "timings.json").write_text(json.dumps({"total": 1.0}))
    fields = {"xyz": torch.rand(16, 3), "features_dc": torch.rand(16, 1, 3), "scaling": torch.rand(16, 3),
              "rotation": torch.rand(16, 4), "opacity": torch.rand(16, 1)}
    gaussian = Gaussian.from_raw_fields({"aabb": [-0.5, -0.5, -0.5, 1, 1, 1]}, fields)
    save_result(folder / "result.npz", gaussian, {"vertices": torch.eye(3), "faces": torch.tensor([[0, 1, 2]])})
    return folder


def replace_member(path, name, data: bytes):
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(path, "w") as z:
        for n, d in {**parts, name: data}.items():
            z.writestr(n, d)


def test_a_damaged_result_fails_its_export_as_input(tmp_path):
    def no_sampling(device):
        raise AssertionError("an export samples nothing")
    folder = job_folder(tmp_path / "elsewhere")
    result = folder / "result.npz"
    nan = io.BytesIO()
    np.save(nan, np.full((3, 3), np.nan, np.float32))
    replace_member(result, "vertices.npy", nan.getvalue())
    runner = JobRunner("unused-model", tmp_path / "out", device="cpu", pipeline_factory=no_sampling)
    try:
        job = runner.submit_export_from(folder, formats=("glb",))
        assert job.wait(TIMEOUT) and job.state == JobState.FAILED
        assert job.error_kind == "input", (job.error_kind, job.error)
        assert job.error.startswith("bad input: ") and str(result) in job.error
        assert "vertices.npy holds NaN" in job.error and "run its job again" in job.error
        header = io.BytesIO()                               # 12 TB claimed, 36 bytes held
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (10 ** 12, 3)})
        replace_member(result, "vertices.npy", header.getvalue() + bytes(36))
        job = runner.submit_export_from(folder, formats=("glb",))
        assert job.wait(TIMEOUT) and job.state == JobState.FAILED
        assert job.error_kind == "input" and "declares [1000000000000, 3]" in job.error, job.error
    finally:
        runner.shutdown(cancel=True, wait=True, timeout=30)
