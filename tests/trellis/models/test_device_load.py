"""Networks built on the device they run on (trellis/models/device_load.py) hold exactly what the plain route
(build on the CPU, fill from the file) gives: every parameter and buffer, dtype and value, the conditioner's
constants included. On a GPU (the reader, a build there): tests/gpu/test_device_load_gpu.py."""
import json
import os

import pytest
import torch

from trellis import models as model_zoo
from trellis.models.image_conditioner import load_image_conditioner
from trellis.pipelines import TrellisImageTo3DPipeline


def same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> None:
    named_a = {**dict(a.named_parameters()), **dict(a.named_buffers())}
    named_b = {**dict(b.named_parameters()), **dict(b.named_buffers())}
    assert named_a.keys() == named_b.keys() and named_a
    for key, t in named_a.items():
        u = named_b[key]
        assert (t.dtype, t.shape, t.device) == (u.dtype, u.shape, u.device), key
        assert torch.equal(t, u), key


def test_every_network_of_the_pipeline_equals_the_plain_route(tiny_pipeline_dir):
    ckpts = os.path.join(tiny_pipeline_dir, "ckpts")
    stems = sorted(f[:-len(".json")] for f in os.listdir(ckpts) if f.endswith(".json"))
    assert len(stems) >= 7
    for stem in stems:
        prefix = os.path.join(ckpts, stem)
        with open(prefix + ".json") as f:
            name = json.load(f)["name"]
        if name == "DINOv2":
            plain, direct = load_image_conditioner(prefix), load_image_conditioner(prefix, device="cpu")
            assert torch.equal(direct.mean, plain.mean) and torch.equal(direct.std, plain.std)
            assert direct.mean.device.type == "cpu" and float(direct.std.sum()) > 0
        else:
            plain, direct = model_zoo.from_pretrained(prefix), model_zoo.from_pretrained(prefix, device="cpu")
        same_tensors(plain, direct)


def test_the_pipeline_built_on_its_device_equals_the_one_moved_there(tiny_pipeline_dir):
    plain = TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir).to("cpu")
    direct = TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir, device="cpu")
    assert direct.device == torch.device("cpu") and direct.memory_policy == plain.memory_policy
    for key in plain.models:
        same_tensors(plain.models[key], direct.models[key])
    same_tensors(plain.image_cond_model, direct.image_cond_model)
