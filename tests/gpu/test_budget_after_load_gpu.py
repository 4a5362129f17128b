"""A VRAM budget set after a pipeline was placed resident (a benchmark's cap, another process taking the card) makes its
next run offload: the weights are placed anew before the run, not looked up in homes that were never made."""
import numpy as np
import torch
from PIL import Image

from trellis import pipelines
from trellis.core.device import set_memory_budget


def test_a_budget_set_after_loading_offloads_the_next_run(tiny_trellis2_dir):
    device = torch.device("cuda", torch.cuda.current_device())
    pipe = pipelines.from_pretrained(tiny_trellis2_dir).to(device)
    arr = np.zeros((96, 80, 4), np.uint8)
    arr[20:80, 15:65] = (90, 160, 220, 255)
    one = {"steps": 1}
    assert pipe.memory_policy.offload == "none"
    set_memory_budget(device, torch.cuda.memory_reserved(device) + 2 ** 30)
    try:
        assert pipe.memory_policy.offload == "model"
        (mesh,) = pipe.run(Image.fromarray(arr), seed=3, pipeline_type="512", sparse_structure_sampler_params=one,
                           shape_slat_sampler_params=one, tex_slat_sampler_params=one)
        assert mesh.faces.shape[0] > 0 and torch.isfinite(mesh.attrs).all()
    finally:
        set_memory_budget(device, None)
    # and back: the budget gone, the next run places them resident again
    (mesh,) = pipe.run(Image.fromarray(arr), seed=3, pipeline_type="512", sparse_structure_sampler_params=one,
                       shape_slat_sampler_params=one, tex_slat_sampler_params=one)
    assert pipe.memory_policy.offload == "none" and mesh.faces.shape[0] > 0
    assert all(p.device.type == "cuda" for m in pipe.models.values() for p in m.parameters())
