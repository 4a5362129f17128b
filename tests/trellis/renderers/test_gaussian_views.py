"""Several views of Gaussians in one render (gaussian_render.render_gaussian_views, gaussian_views' view count) against one render per view and the
float64 brute force; render_frames' batches of frames."""
import math

import numpy as np
import pytest
import torch

from tests.helpers.splats import assert_views_equal, make_gaussian, random_scene, render_brute_force
from trellis.core.callbacks import Cancelled
from trellis.renderers.cameras import orbit_cameras
from trellis.renderers.gaussian_render import render_gaussian_views, render_gaussians
from trellis.renderers.gaussian_views import BYTES_PER_PAIR, BYTES_PER_PIXEL, MAX_VIEWS, views_at_once
from trellis.utils import render_utils


def shell(n, seed):
    """A noisy sphere of small anisotropic Gaussians: many splats cross the image's edges when seen from r = 1.2."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    xyz = d / np.linalg.norm(d, axis=1, keepdims=True) * (0.4 + 0.02 * rng.normal(size=(n, 1)))
    return make_gaussian(xyz, np.exp(rng.uniform(math.log(0.003), math.log(0.05), (n, 3))), rng.normal(size=(n, 4)),
                         rng.uniform(0.05, 0.99, n), rng.uniform(-0.1, 1.1, (n, 3)))


def orbit(views, radius=2.0):
    yaws = torch.linspace(0.2, 5.9, views)
    return orbit_cameras(yaws, 0.25 + 0.5 * torch.sin(yaws), radius=radius, fov=40.0)


@pytest.mark.parametrize("res, tile, bg", [(64, 16, (0, 0, 0)), ((50, 70), 16, (0.2, 0.5, 1.0)), (37, 8, (1, 1, 1))])
def test_views_equal_one_render_per_view(res, tile, bg):
    g = shell(3000, 0)
    ext, intr = orbit(5, radius=1.2)           # close: splats cross every edge of the image, so of every band
    batch = render_gaussian_views(g, ext, intr, res, bg_color=bg, tile_size=tile)
    singles = [render_gaussians(g, ext[i], intr[i], res, bg_color=bg, tile_size=tile) for i in range(5)]
    assert singles[0]["alpha"].max() > 0.5 and (singles[0]["alpha"] < 1e-6).any()
    # edges crossed: coverage on the first and the last row of a view (what could leak into a neighbouring band)
    assert any(s["alpha"][0, 0].max() > 0.1 and s["alpha"][0, -1].max() > 0.1 for s in singles)
    assert_views_equal(batch, singles)


def test_views_match_the_brute_force():
    rng = np.random.default_rng(3)
    ext, intr = orbit(3)
    g = random_scene(rng, eye=np.zeros(3))
    batch = render_gaussian_views(g, ext, intr, 24, bg_color=(0.2, 0.5, 1.0), work_budget=64)
    for i in range(3):
        want = render_brute_force(g, ext[i], intr[i], 24, 24, bg=(0.2, 0.5, 1.0))
        for key, ref in zip(("color", "alpha", "depth"), want):
            np.testing.assert_allclose(batch[key][i].numpy(), ref, atol=1e-4, rtol=0)


def test_one_view_and_nothing_to_draw():
    g = shell(500, 1)
    ext, intr = orbit(1)
    one = render_gaussian_views(g, ext, intr, 32)
    single = render_gaussians(g, ext[0], intr[0], 32)
    for key in ("color", "alpha", "depth"):
        assert torch.equal(one[key][0], single[key])         # one band: no offset, the same render
    behind = torch.eye(4).expand(2, 4, 4).clone()
    behind[:, 2, 3] = -5.0                                    # every Gaussian behind the camera
    empty = render_gaussian_views(g, behind, intr.expand(2, 3, 3), 16, bg_color=(0.25, 0.5, 0.75))
    assert empty["alpha"].abs().max() == 0 and empty["color"].shape == (2, 3, 16, 16)
    assert torch.allclose(empty["color"][:, :, 3, 3], torch.tensor([0.25, 0.5, 0.75]).expand(2, 3))
    with pytest.raises(ValueError, match="2 extrinsics for 1 intrinsics"):
        render_gaussian_views(g, ext.expand(2, 4, 4), intr, 16)


def test_views_at_once_follows_the_free_memory():
    per_view = 500_000 * BYTES_PER_PAIR + 512 * 512 * BYTES_PER_PIXEL
    assert views_at_once(500_000, 512 * 512, None) == 1                  # a CPU: one at a time
    assert views_at_once(500_000, 512 * 512, 80 << 30) == MAX_VIEWS       # a big GPU: capped
    assert views_at_once(500_000, 512 * 512, 4 * 3 * per_view) == 3      # a quarter of what is free
    assert views_at_once(500_000, 512 * 512, 1 << 20) == 1               # never none


def test_render_frames_in_batches_gives_the_frames_of_one_at_a_time():
    g = shell(2000, 2)
    ext, intr = orbit(7)
    calls = []
    one = render_utils.render_frames(g, ext, intr, {"resolution": 48}, verbose=False)
    batched = render_utils.render_frames(g, ext, intr, {"resolution": 48}, verbose=False, views_per_call=3,
                                         progress=lambda i, n: calls.append((i, n)))
    assert calls == [(i + 1, 7) for i in range(7)]                       # still frame by frame
    assert set(batched) == {"color", "depth"} and len(batched["color"]) == 7
    for a, b in zip(one["color"], batched["color"]):
        assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape == (48, 48, 3)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2            # uint8 of the tolerance above
        assert (a != b).mean() <= 2e-3
    for a, b in zip(one["depth"], batched["depth"]):
        assert a.shape == b.shape == (48, 48) and np.abs(a - b).max() <= 5e-3
    only = render_utils.render_video(g, resolution=32, num_frames=4, verbose=False, only=("color",),
                                     views_per_call=4)
    assert set(only) == {"color"} and len(only["color"]) == 4


def test_render_frames_cancels_before_a_batch():
    g = shell(300, 3)
    ext, intr = orbit(10)
    calls = []
    with pytest.raises(Cancelled):
        render_utils.render_frames(g, ext, intr, {"resolution": 16}, verbose=False, views_per_call=4,
                                   progress=lambda i, n: calls.append(i), cancel=lambda: len(calls) >= 3)
    assert calls == [1, 2, 3, 4]                  # the batch under way ends, no other starts
