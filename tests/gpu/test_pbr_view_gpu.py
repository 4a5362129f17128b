"""The lit PBR turntable on the GPU (trellis/renderers/pbr_view.py, trellis/export/pbr/video.py): the same frames as on
the CPU (the rasteriser's face ids are bit-identical on every device and path; the shading is float32 arithmetic, so
the colours agree within a few 8-bit steps on all but the odd edge pixel), with the fast paths on and off; frames drawn
several in one pass are each camera's own render, bit for bit."""
import numpy as np
import pytest
import torch

from tests.helpers.meshes import uv_sphere
from trellis.export.tangents import vertex_tangents
from trellis.renderers.pbr_view import pbr_surface
from trellis.export.pbr.video import render_pbr_frames
from trellis.renderers.cameras import video_cameras


def gold_and_blue_sphere(device, size=256):
    """A UV sphere, half polished gold metal, half rough blue plastic, with a striped normal map."""
    v, f = uv_sphere(0.4, 64, 128)
    v = v.double().numpy()
    f = f.numpy()
    uv = np.stack([np.arctan2(v[:, 1], v[:, 0]) / (2 * np.pi) + 0.5, 1 - np.arccos(np.clip(v[:, 2] / 0.4, -1, 1))
                   / np.pi], 1)
    n = v / np.linalg.norm(v, axis=1, keepdims=True)
    base = np.zeros((size, size, 3), np.uint8)
    mr = np.zeros((size, size, 3), np.uint8)
    base[:, :size // 2], mr[:, :size // 2] = (230, 180, 60), (0, 60, 255)
    base[:, size // 2:], mr[:, size // 2:] = (60, 90, 200), (0, 200, 0)
    nm = np.full((size, size, 3), (128, 128, 255), np.uint8)
    nm[(np.arange(size) // 8) % 2 == 0] = (128, 200, 230)
    return pbr_surface(v, f, uv, n, base, mr, normal_map=nm, tangents=vertex_tangents(v, f, uv, n), device=device)


@pytest.mark.parametrize("fast", [True, False])
def test_gpu_frames_equal_the_cpu_frames(fast_on, fast):
    ext, intr = video_cameras(6)
    cpu = render_pbr_frames(gold_and_blue_sphere("cpu"), ext, intr, 256, ssaa=2)
    gpu = fast_on(fast, render_pbr_frames, gold_and_blue_sphere("cuda"), ext.cuda(), intr.cuda(), 256, ssaa=2)
    for a, b in zip(cpu, gpu):
        diff = np.abs(a.astype(int) - b.astype(int))
        assert diff.max() <= 8 and (diff > 2).mean() < 1e-3, (diff.max(), (diff > 2).mean())
        assert a.mean() > 20                                  # the sphere is there and lit
    torch.cuda.synchronize()


def test_frames_drawn_in_one_pass_equal_each_cameras_own_render_bit_for_bit():
    from trellis.renderers.pbr_view import render_pbr, views_at_once

    ext, intr = video_cameras(6)
    surface = gold_and_blue_sphere("cuda")
    assert views_at_once(256, 2, "cuda") >= 6                          # the six frames are one pass
    together = render_pbr_frames(surface, ext.cuda(), intr.cuda(), 256, ssaa=2)
    for i, frame in enumerate(together):
        alone = render_pbr(surface, ext[i].cuda(), intr[i].cuda(), 256, ssaa=2)["color"]
        alone = alone.clamp(0, 1).mul(255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        assert np.array_equal(frame, alone), i
