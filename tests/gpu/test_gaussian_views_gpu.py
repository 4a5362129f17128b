"""Several views in one render on the GPU (gaussian_render.render_gaussian_views), for each compositing kernel and the twin:

* each path's batch equals its own view-by-view renders up to the band offsets' float32 rounding (the CPU tests'
  tolerance: a few thousandths at most, within 1e-4 on all but 0.1 % of the pixels);
* a kernel's batch equals the twin's batch within the single view's kernel-vs-twin tolerance (test_fast_paths_gpu):
  the bands hold the kernels' tile lists, so no splat reaches a neighbouring view;
* on a GPU with room the app's preview renders several frames per call.
"""
import pytest
import torch

from tests.helpers.gpu_inputs import random_splats
from tests.helpers.splats import assert_views_equal
from trellis.renderers.cameras import orbit_cameras
from trellis.renderers.gaussian_render import render_gaussian_views, render_gaussians
from trellis.renderers.gaussian_views import MAX_VIEWS, free_memory, views_at_once
from trellis.utils import render_utils

DEV = "cuda"


def turntable(views, radius):
    yaws = torch.linspace(0.0, 6.2, views)
    return orbit_cameras(yaws, 0.25 + 0.5 * torch.sin(yaws), radius=radius, fov=40.0, device=DEV)


@pytest.mark.parametrize("n, seed, kind, res, radius, bg", [
    (200_000, 0, "shell", 512, 2.0, (0, 0, 0)),
    (200_000, 1, "cube", (300, 500), 1.3, (0.2, 0.5, 1.0)),       # close: splats cross every band's edges
])
def test_views_equal_single_renders_on_each_path(fast_on, need_kernel, n, seed, kind, res, radius, bg):
    need_kernel("gaussian_composite")
    g = random_splats(n, seed, kind)
    ext, intr = turntable(MAX_VIEWS, radius)
    batches = {}
    for fast in (True, False):
        batch = fast_on(fast, render_gaussian_views, g, ext, intr, res, bg_color=bg)
        singles = [fast_on(fast, render_gaussians, g, ext[i], intr[i], res, bg_color=bg) for i in range(MAX_VIEWS)]
        assert singles[0]["alpha"].max() > 0.5
        assert_views_equal(batch, singles)
        batches[fast] = batch
    for key in ("color", "alpha", "depth"):
        diff = (batches[True][key] - batches[False][key]).abs()
        assert diff.max().item() <= 1e-3, key
        assert (diff > 2e-5).float().mean().item() <= 1e-4, key


def test_the_preview_renders_several_frames_per_call_where_there_is_room(fast_on, need_kernel):
    need_kernel("gaussian_composite")
    g = random_splats(100_000, 2, "shell")
    assert views_at_once(len(g), 512 * 512, free_memory(g.get_xyz.device)) > 1
    calls = []
    frames = render_utils.render_video(g, resolution=256, num_frames=12, verbose=False, only=("color",),
                                       progress=lambda i, n: calls.append(i))
    one = render_utils.render_video(g, resolution=256, num_frames=12, verbose=False, only=("color",),
                                    views_per_call=1)
    assert calls == list(range(1, 13)) and len(frames["color"]) == 12
    for a, b in zip(frames["color"], one["color"]):
        assert abs(a.astype(int) - b.astype(int)).max() <= 2 and (a != b).mean() <= 2e-3
