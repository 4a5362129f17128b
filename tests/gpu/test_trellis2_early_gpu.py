"""On a GPU the app's TRELLIS.2 job prepares the bake's mesh while the texture samples (the pipeline's on_shape,
desktop.jobs.trellis2_steps.EarlyShape, its own thread and CUDA stream): the sampled O-Voxel is the serial order's
and the files are too, byte for byte."""
import uuid
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from desktop.jobs import steps, trellis2_steps
from desktop.jobs.folder import JobFolder
from desktop.jobs.job import Job
from desktop.settings import GenerationSettings
from trellis import pipelines

ONE = {"steps": 1}
SETTINGS = GenerationSettings(seed=4, randomize_seed=False, formats=("glb", "obj", "ply", "mp4"), texture_size=256,
                              target_faces=3000, normal_map=True, video_resolution=64, video_frames=4)


def test_the_mesh_prepared_while_the_texture_samples_gives_the_serial_files(tiny_trellis2_dir, tmp_path):
    device = torch.device("cuda", torch.cuda.current_device())
    pipe = pipelines.from_pretrained(tiny_trellis2_dir).to(device)
    assert trellis2_steps.prepares_early(SETTINGS, pipe, str(device))
    arr = np.zeros((96, 80, 4), np.uint8)
    arr[20:80, 15:65] = (200, 120, 40, 255)
    arr[30:50, 25:45] = (40, 160, 220, 255)

    def job_files(root, early: bool):
        shape = trellis2_steps.EarlyShape(SETTINGS, lambda: False)
        (ovoxel,) = pipe.run(Image.fromarray(arr), seed=5, pipeline_type="512", sparse_structure_sampler_params=ONE,
                             shape_slat_sampler_params=ONE, tex_slat_sampler_params=ONE,
                             on_shape=shape.start if early else None)
        assert (shape.prepared is not None) == early
        job = Job(id=uuid.uuid4().hex, inputs=[], settings=SETTINGS)
        folder = JobFolder.create(root, job)
        job.out_dir = str(folder.path)
        try:
            trellis2_steps.write_ovoxel_outputs(job, folder, SETTINGS, ovoxel, steps.quiet, lambda: False,
                                                device=str(device), overlap=True, prepared=shape.prepared)
        finally:
            shape.close()
            folder.release()
        return ovoxel, job

    # unordered GPU sums (atomics) would make two runs of either order differ: their deterministic variants here
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        serial, one = job_files(tmp_path / "serial", early=False)
        early, two = job_files(tmp_path / "early", early=True)
    finally:
        torch.use_deterministic_algorithms(False)
    for name in ("vertices", "faces", "coords", "attrs"):
        assert torch.equal(getattr(serial, name), getattr(early, name)), name
    assert "prepare_early" in two.timings["export_bake_stages"]["seconds"]
    for kind in ("glb", "obj", "ply"):
        assert Path(one.files[kind]).read_bytes() == Path(two.files[kind]).read_bytes(), kind
