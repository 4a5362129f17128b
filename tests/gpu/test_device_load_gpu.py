"""Weights read straight onto the GPU (trellis/models/device_load.py): the staged reader gives safetensors' own
tensors bit for bit (every dtype, offsets the format does not align, files larger than one staging chunk), says what
is wrong with a damaged file, and a pipeline built on the GPU equals the one built on the CPU and moved there."""
import pytest
import torch
from safetensors.torch import load_file, save_file

from trellis.models import WeightsFileError
from trellis.models import device_load
from trellis.models.device_load import build_on, read_safetensors_to
from trellis.pipelines import TrellisImageTo3DPipeline


def tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "a_byte": torch.randint(0, 255, (3,), dtype=torch.uint8, generator=g),      # the next tensor starts odd
        "b_half": torch.randn(5, 7, generator=g).half(),
        "c_float": torch.randn(2, 3, 4, generator=g),
        "d_bf16": torch.randn(9, generator=g).bfloat16(),
        "e_long": torch.randint(-9, 9, (4, 2), generator=g),
        "f_bool": torch.rand(6, generator=g) > 0.5,
        "g_scalar": torch.tensor(3.5),
        "h_big": torch.randn(300_000, generator=g),
    }


@pytest.mark.parametrize("chunk", [device_load.CHUNK_BYTES, 4096])
def test_the_staged_reader_gives_the_files_tensors_bit_for_bit(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(device_load, "CHUNK_BYTES", chunk)
    path = str(tmp_path / "w.safetensors")
    save_file(tensors(), path)
    want = load_file(path)
    got = read_safetensors_to(path, "cuda")
    assert got.keys() == want.keys()
    for key, t in want.items():
        g = got[key]
        assert g.device.type == "cuda" and (g.dtype, g.shape) == (t.dtype, t.shape), key
        assert torch.equal(g.cpu(), t), key


def test_a_truncated_file_is_named_with_what_is_wrong(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(tensors(), str(path))
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(WeightsFileError, match="damaged or incomplete"):
        read_safetensors_to(str(path), "cuda")
    path.write_bytes(b"\x05\x00")
    with pytest.raises(WeightsFileError, match="damaged or incomplete"):
        read_safetensors_to(str(path), "cuda")


def test_a_pipeline_built_on_the_gpu_equals_the_one_moved_there(tiny_pipeline_dir):
    moved = TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir).to("cuda")
    direct = TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir, device="cuda")
    assert direct.device.type == "cuda" and direct.memory_policy == moved.memory_policy
    for key in [*moved.models, "image_cond_model"]:
        a = moved.models[key] if key in moved.models else moved.image_cond_model
        b = direct.models[key] if key in direct.models else direct.image_cond_model
        named_a = {**dict(a.named_parameters()), **dict(a.named_buffers())}
        named_b = {**dict(b.named_parameters()), **dict(b.named_buffers())}
        assert named_a.keys() == named_b.keys()
        for name, t in named_a.items():
            u = named_b[name]
            assert (t.dtype, t.device) == (u.dtype, u.device) and torch.equal(t, u), f"{key}.{name}"


class Constants(torch.nn.Module):
    """Values a constructor makes that no weights file holds: a buffer, and one made from NumPy on the CPU."""

    def __init__(self):
        super().__init__()
        import numpy as np

        self.linear = torch.nn.Linear(3, 2)
        self.register_buffer("table", torch.arange(4.0), persistent=False)
        self.register_buffer("from_numpy", torch.from_numpy(np.arange(3.0)), persistent=False)


def test_a_build_on_the_gpu_makes_every_tensor_there_with_its_value():
    model = build_on(Constants, "cuda")
    for t in (model.linear.weight, model.table, model.from_numpy):
        assert t.device.type == "cuda"
    assert torch.equal(model.table.cpu(), torch.arange(4.0))
    assert torch.equal(model.from_numpy.cpu(), torch.arange(3.0, dtype=torch.float64))
