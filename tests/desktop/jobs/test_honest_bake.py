"""A texture bake that observed almost nothing says so, and is not black (trellis.export.bake.coverage).

The tiny random-weight pipeline's Gaussians are mostly transparent (mean opacity ~0.1): its bake observes
none of the atlas at the observations' alpha threshold, and its GLB used to be all black while the job said
done. Now the bake is done again from fainter pixels, the job warns on every surface, and the observed share
is in timings.json.
"""
import json
import os

import numpy as np
import pytest
import torch

from desktop.jobs import JobRunner
from desktop.settings import GenerationSettings
from tests.helpers.images import rgba_blob
from trellis.export.bake.coverage import MIN_OBSERVED_SHARE, atlas_texels, observed_share, texels_under

trimesh = pytest.importorskip("trimesh")

# Small, and nothing lowered for the CPU: every setting of CPU_VALUES that the GLB uses is given.
SMALL = dict(seed=1, ss_steps=2, slat_steps=2, fill_holes=False, texture_size=128, bake_views=4, bake_resolution=128,
             formats=("glb",))


def test_the_tiny_pipeline_bakes_a_coloured_glb_and_says_how_little_it_observed(tiny_pipeline_dir, tmp_path):
    from trellis.export.bake.preview import textured_mesh_tensors

    runner = JobRunner(tiny_pipeline_dir, tmp_path / "out", device="cpu")
    try:
        job = runner.submit([rgba_blob(tmp_path / "a.png")], GenerationSettings.from_preset("balanced", **SMALL))
        assert job.wait(600) and job.state == "done", (job.error, job.detail)
    finally:
        runner.shutdown(cancel=True, wait=True, timeout=30)

    stages = json.load(open(os.path.join(job.out_dir, "timings.json")))["export_bake_stages"]
    fallback = stages["bake_fallback"]
    assert fallback["observed_share_before"] < MIN_OBSERVED_SHARE and fallback["used"], stages
    assert stages["observed_share"] == fallback["observed_share_after"] > fallback["observed_share_before"]
    (warning,) = job.warnings
    assert warning.startswith(f"The texture bake saw only {fallback['observed_share_before']:.1%} of the texture")
    assert f"which showed {stages['observed_share']:.1%}" in warning
    assert json.load(open(os.path.join(job.out_dir, "timings.json")))["warnings"] == [warning]

    # The GLB's texture: most texels of its atlas carry colour (all black before).
    _, faces, uvs, texture = textured_mesh_tensors(trimesh.load(job.files["glb"]), "cpu")
    atlas = atlas_texels(faces, uvs, texture.shape[0]).numpy()
    coloured = texture.numpy().max(-1) > 8
    assert atlas.sum() > 1000 and (coloured & atlas).sum() / atlas.sum() > 0.9
    assert np.unique(texture.numpy()[atlas].reshape(-1, 3) // 16, axis=0).shape[0] > 10     # not one flat colour


def test_observed_share_counts_the_atlas_texels_only():
    size = 8
    faces = torch.tensor([[0, 1, 2]])
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])          # the lower-left half of the texture
    atlas = atlas_texels(faces, uvs, size)
    assert 20 <= int(atlas.sum()) <= 36 and not bool(atlas[0, -1]) and bool(atlas[-1, 0])
    assert observed_share(torch.ones(size, size, dtype=torch.bool), faces, uvs, size) == 1.0
    assert observed_share(~atlas, faces, uvs, size) == 0.0                # texels outside the charts do not count
    half = atlas.clone()
    half[: size // 2 + 2] = False
    assert observed_share(half, faces, uvs, size) == pytest.approx(int(half.sum()) / int(atlas.sum()))
    # texels_under: the texel holding each point (row 0 = v near 1).
    under = texels_under([torch.tensor([[0.01, 0.99], [0.99, 0.01]])], size)
    assert under.sum() == 2 and bool(under[0, 0]) and bool(under[-1, -1])
