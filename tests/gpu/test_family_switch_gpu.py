"""One image pipeline on the GPU at a time (desktop/jobs/models.py DevicePipelines): a runner on CUDA started on the
tiny TRELLIS v1 pipeline runs a TRELLIS.2 job (the tiny TRELLIS.2 installed in the app's models folder), then a v1 job
again; after each switch the GPU holds the weights of the pipeline loaded now, not those of the one it replaced."""
import time

import pytest
import torch
from tests.helpers.images import rgba_blob
from tests.helpers.model_folders import install_trellis2

from desktop.jobs import JobRunner, JobState
from desktop.settings import GenerationSettings

TIMEOUT = 300
V1 = dict(seed=1, randomize_seed=False, ss_steps=1, slat_steps=1, formats=("ply",))
TRELLIS2 = dict(seed=1022908287, randomize_seed=False, ss_steps=1, slat_steps=1, pipeline_type="512",
                formats=("stl",), target_faces=100000)


def weight_bytes(pipeline) -> int:
    """Bytes of the pipeline's networks' (flows, decoders) parameters and buffers on a CUDA device."""
    tensors = [t for model in pipeline.models.values() for t in (*model.parameters(), *model.buffers())]
    return sum(t.numel() * t.element_size() for t in tensors if t.is_cuda)


def done(job):
    assert job.wait(TIMEOUT), "the job did not end"
    assert job.state == JobState.DONE, job.error
    return job


def test_a_switch_leaves_only_the_loaded_familys_weights_on_the_gpu(tiny_pipeline_dir, tiny_trellis2_dir, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(install_trellis2(tmp_path / "models", tiny_trellis2_dir)))
    image = rgba_blob(tmp_path / "in.png")
    runner = JobRunner(tiny_pipeline_dir, tmp_path / "out", device="cuda:0")
    worker = runner._workers[0]
    try:
        done(runner.submit([image], GenerationSettings(**V1)))
        v1_bytes, v1_held = weight_bytes(worker.pipeline), torch.cuda.memory_allocated()
        assert v1_bytes > 0
        done(runner.submit([image], GenerationSettings(**TRELLIS2), family="trellis2"))
        t2_bytes = weight_bytes(worker.pipeline)
        assert t2_bytes > 0 and runner.loaded_family == "trellis2"
        # v1's weights went with it: what stays allocated is TRELLIS.2's and what each job keeps, not both models.
        assert torch.cuda.memory_allocated() < v1_held + t2_bytes - v1_bytes // 2
        done(runner.submit([image], GenerationSettings(**V1)))
        assert runner.loaded_family == "trellis"
        assert torch.cuda.memory_allocated() < v1_held + t2_bytes // 2       # TRELLIS.2's weights gone again
    finally:
        runner.shutdown(cancel=True, wait=True, timeout=60)
        deadline = time.time() + 60
        while not runner.stopped and time.time() < deadline:
            time.sleep(0.05)
    if not runner.stopped:
        pytest.fail("the runner did not stop")
