"""The PBR export's prepare step states the UV layout's texel use and warns when it is under half the texture."""
from tests.helpers.ovoxels import voxel_sphere
from trellis.export.pbr.prepare import prepare_ovoxel_mesh
from trellis.export.uv.stats import texel_use
from trellis.export.uv.unwrap import LOW_TEXEL_USE


def test_the_prepare_info_states_texel_use_without_a_warning_when_half_is_used():
    info = {}
    got = prepare_ovoxel_mesh(voxel_sphere(48, cap=None), 3000, texture_size=512, info=info)
    assert info["uv_method"] in ("geometric", "xatlas", "grouped")
    assert info["texel_use"] >= LOW_TEXEL_USE
    assert abs(info["texel_use"] - texel_use(got.faces, got.uvs, 512)) < 1e-3
    assert "warnings" not in info


def test_a_wasteful_layout_is_warned_of():
    # the single-face chart layout on a small texture: far under half in use
    info = {}
    prepare_ovoxel_mesh(voxel_sphere(48, cap=None), 3000, texture_size=128, uv_method="charts", info=info)
    assert info["texel_use"] < LOW_TEXEL_USE
    assert len(info["warnings"]) == 1 and "% of the 128 x 128 texture" in info["warnings"][0]
