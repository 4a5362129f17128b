"""The lit turntable of a baked PBR mesh (trellis/export/pbr/video.py): render_video's orbit and frame count, the mesh
lit with the normals and tangents its GLB carries (a normal map changes the frames), frames drawn several at a time
that are each camera's own pixels, cancel between passes, and clear errors for what cannot be rendered."""
import numpy as np
import pytest
import torch

from trellis.core.callbacks import Cancelled
from trellis.export.pbr.material import pbr_maps
from trellis.export.pbr.textured import pbr_textured_mesh
from trellis.export.pbr.video import render_pbr_video


def standing_square(normal_texture=None, texture=None):
    """A 0.8 x 0.8 square in the x-z plane (facing the orbit's first camera on +y): a gold metal PbrTexturedMesh."""
    vertices = np.array([[-0.4, 0, -0.4], [0.4, 0, -0.4], [0.4, 0, 0.4], [-0.4, 0, 0.4]], np.float32)
    faces = np.array([[0, 2, 1], [0, 3, 2]], np.int64)
    uvs = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    base = np.full((8, 8, 3), (230, 180, 60), np.uint8) if texture is None else texture
    metal_rough = np.full((8, 8, 3), (0, 90, 255), np.uint8)
    info = {"normal_map": {"crease_angle": 60.0}} if normal_texture is not None else {}
    return pbr_textured_mesh(vertices, faces, uvs, base, info, normal_texture, pbr_maps(metal_rough))


def test_frames_follow_the_orbit_and_the_normal_map_changes_them():
    frames = render_pbr_video(standing_square(), resolution=32, num_frames=3, device="cpu")
    assert len(frames) == 3 and all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in frames)
    lit = frames[0][8:24, 8:24]
    assert lit.mean() > 40 and lit[..., 0].mean() > lit[..., 2].mean() + 20          # gold, not black
    assert not np.array_equal(frames[0], frames[1])                                    # the camera moved
    bumped = np.full((8, 8, 3), (128, 128, 255), np.uint8)
    bumped[::2] = (128, 220, 200)
    mapped = render_pbr_video(standing_square(bumped), resolution=32, num_frames=1, device="cpu")[0]
    assert np.abs(mapped.astype(int) - frames[0].astype(int)).max() > 20


def test_progress_cancel_and_what_cannot_be_rendered():
    done = []
    render_pbr_video(standing_square(), resolution=16, num_frames=2, device="cpu",
                     progress=lambda i, n: done.append((i, n)))
    assert done == [(1, 2), (2, 2)]
    with pytest.raises(Cancelled):
        render_pbr_video(standing_square(), resolution=16, num_frames=2, device="cpu", cancel=lambda: True)
    with pytest.raises(ValueError, match="num_frames"):
        render_pbr_video(standing_square(), resolution=16, num_frames=0, device="cpu")
    with pytest.raises(ValueError, match="geometry-only"):
        render_pbr_video(standing_square()._replace(texture=None), resolution=16, num_frames=1, device="cpu")


def test_frames_drawn_several_at_a_time_are_each_cameras_own_pixels(monkeypatch):
    import trellis.renderers.pbr_view as pbr_view
    from trellis.export.pbr.video import surface_of
    from trellis.renderers.cameras import video_cameras

    bumped = np.full((8, 8, 3), (128, 128, 255), np.uint8)
    bumped[::2] = (128, 220, 200)
    mesh = standing_square(bumped)
    monkeypatch.setitem(pbr_view.VIEW_PIXELS, "cpu", 24 * 24 * 4 * 5)       # five 24-px views at ssaa 2 a pass
    assert pbr_view.views_at_once(24, 2, "cpu") == 5
    together = render_pbr_video(mesh, resolution=24, num_frames=7, ssaa=2, device="cpu")   # passes of 5 and 2
    surface = surface_of(mesh, "cpu", render_size=48)
    ext, intr = video_cameras(7, 2.0, 40.0)
    for i, frame in enumerate(together):
        alone = pbr_view.render_pbr(surface, ext[i], intr[i], 24, ssaa=2)["color"]
        assert np.array_equal(frame, (alone.clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()), i
    assert len({f.tobytes() for f in together}) == 7                                  # seven different frames
