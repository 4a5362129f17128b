"""``trellis.export.ExportJob`` schedules TRELLIS.2's O-Voxel as it does v1's result: given the O-Voxel and a
``PbrOptions`` its export is the PBR bake (the same arrays as ``bake_ovoxel`` called directly), the caller's side work
runs beside it (its declared imports done first, in the caller's thread) and after it (``start_side``), and what the
O-Voxel cannot take is refused before any work."""
import sys
import threading

import numpy as np
import pytest

from tests.helpers.ovoxel_blobs import random_blob
from trellis.export import ExportJob, ExportOptions, PbrOptions, SideWork
from trellis.export.pbr import bake_ovoxel

OPTIONS = PbrOptions(target_faces=1500, texture_size=32, normal_map=False)


@pytest.fixture(scope="module")
def ovoxel():
    return random_blob(30, latent=32, seed=5)


def test_the_job_bakes_the_ovoxel_as_bake_ovoxel_does_with_its_side_work_beside(ovoxel):
    seen = {}

    def kept(stopped):
        seen["kept"] = threading.current_thread().name
        return "result.npz"

    def preview(stopped):
        seen["preview"] = "colorsys" in sys.modules       # imported by the caller before this thread started
        return "preview.mp4"
    sys.modules.pop("colorsys", None)
    with ExportJob(None, ovoxel, OPTIONS, beside=[SideWork("kept", kept)]) as export:
        assert export.early is None                      # no decimation children: the PBR reduction is its own
        textured = export.bake()
        export.start_side(SideWork("preview", preview, on_gpu=True, imports=("colorsys",)))
        assert export.side_result("preview") == "preview.mp4" and export.side_result("kept") == "result.npz"
    assert seen == {"kept": "trellis-kept", "preview": True}
    direct = bake_ovoxel(ovoxel, OPTIONS)
    for name in ("vertices", "faces", "uvs", "texture"):
        assert np.array_equal(np.asarray(getattr(textured, name)), np.asarray(getattr(direct, name))), name
    assert np.array_equal(textured.pbr.metallic_roughness, direct.pbr.metallic_roughness)
    assert textured.pbr.alpha_mode == direct.pbr.alpha_mode and len(textured.faces) > 0


def test_keywords_are_changes_to_the_pbr_options_and_what_an_ovoxel_cannot_take_is_refused(ovoxel):
    with ExportJob(None, ovoxel, texture_size=16, target_faces=800) as export:
        assert export.options == PbrOptions(texture_size=16, target_faces=800)
    with pytest.raises(TypeError, match="PbrOptions, not ExportOptions"):
        ExportJob(None, ovoxel, ExportOptions())
    with pytest.raises(TypeError, match="nviews"):
        ExportJob(None, ovoxel, nviews=8)
    with pytest.raises(ValueError, match="keep_mesh"):
        ExportJob(None, ovoxel, OPTIONS, keep_mesh=True)
    with ExportJob(None, None, OPTIONS) as nothing:      # no mesh file asked for: only the side work
        assert nothing.bake() is None
