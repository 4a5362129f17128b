"""``trellis.export.ExportOptions``: every option of the export in one typed object, built from the reference's
keywords by ``to_glb`` / ``to_obj``; a keyword that is no option, or options of the wrong type, is a TypeError that
names it (before any work); the destination's triangle limit lowers the face target."""
import dataclasses

import pytest

from trellis.export import DEFAULT_TEXTURE_SIZE, ExportOptions, bake_textured_mesh, clean_shape
from trellis.export.keep_mesh import bake_onto_mesh
from trellis.utils.postprocessing_utils import to_glb, to_obj


def test_the_options_are_typed_and_refuse_what_they_are_not():
    o = ExportOptions.given(None, texture_size=512, nviews=8)
    assert o == ExportOptions(texture_size=512, nviews=8) and o.simplify == 0.95 and o.bake_mode == "fast"
    assert ExportOptions().texture_size == DEFAULT_TEXTURE_SIZE == 1024
    assert ExportOptions.given(o) is o and ExportOptions.given(o, nviews=4).nviews == 4
    with pytest.raises(TypeError, match="textur_size"):
        ExportOptions.given(o, textur_size=256)
    with pytest.raises(TypeError, match="ExportOptions"):
        ExportOptions.given({"texture_size": 256})
    with pytest.raises(ValueError, match="bake_mode"):
        ExportOptions(bake_mode="slow")
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.texture_size = 256


def test_the_entry_points_name_what_they_do_not_take_before_any_work():
    # (no Gaussians, no mesh: each fails on its arguments first)
    with pytest.raises(TypeError, match="simplified"):
        to_glb(None, None, simplified=object())          # the scheduler's, not an option
    with pytest.raises(TypeError, match="nview"):
        to_obj(None, None, "x.obj", nview=8)
    with pytest.raises(TypeError, match="ExportOptions, not float"):
        bake_textured_mesh(None, None, 0.95)             # the reference's positional simplify: a keyword now
    with pytest.raises(TypeError, match="fill_hole"):
        clean_shape(None, fill_hole=True)
    with pytest.raises(TypeError, match="target_faces"):
        bake_onto_mesh(None, None, None, None, target_faces=100)   # keeps the user's mesh: nothing to decimate


def test_the_destination_lowers_the_face_target_to_its_limit():
    web = ExportOptions(destination="web", simplify=0.5)
    assert web.face_target(150_000) is None               # 75 000 kept: within the web's 100 000
    assert web.face_target(1_000_000) == 100_000
    assert ExportOptions(destination="web", target_faces=150_000).face_target(10 ** 6) == 100_000
    assert ExportOptions(destination="web", target_faces=5_000).face_target(10 ** 6) == 5_000
    assert ExportOptions(simplify=0.5).face_target(10 ** 6) is None
    assert ExportOptions(destination="print", target_faces=7).face_target(10 ** 6) == 7      # no triangle limit


def test_each_family_declares_its_texture_size_once_on_its_record():
    """TRELLIS v1's record defaults to the reference's to_glb texture, TRELLIS.2's to the reference app's; the PBR
    package keeps no default of its own beside the record's."""
    import trellis.export.pbr as pbr
    from trellis.export import PbrOptions

    assert ExportOptions().texture_size == 1024 and PbrOptions().texture_size == 2048
    assert PbrOptions.texture_size == 2048 and pbr.PbrOptions is PbrOptions
    with pytest.raises(AttributeError):
        pbr.DEFAULT_TEXTURE_SIZE


def test_the_pbr_options_are_typed_and_give_the_face_target():
    from trellis.export import PbrOptions

    o = PbrOptions.given(None, texture_size=64, target_faces=None, simplify=0.0)
    assert o == PbrOptions(texture_size=64, target_faces=None, simplify=0.0)
    with pytest.raises(TypeError, match="PbrOptions, not ExportOptions"):
        PbrOptions.given(ExportOptions())
    with pytest.raises(TypeError, match="nviews"):
        PbrOptions.given(None, nviews=8)                 # v1's renders: no option of the PBR bake
    with pytest.raises(ValueError, match="at least 8"):
        PbrOptions(texture_size=4)
    with pytest.raises(ValueError, match="simplify"):
        PbrOptions(target_faces=None, simplify=1.0)
    assert o.face_target(456) == 456                     # simplify 0: every face of the decoder's mesh
    assert PbrOptions(target_faces=None, simplify=0.9).face_target(1000) == 100
    assert PbrOptions(target_faces=300).face_target(1000) == 300
    assert PbrOptions().face_target(1000) == 500_000     # the default target: a smaller mesh keeps its own
    web = PbrOptions(target_faces=None, simplify=0.0, destination="web")
    from trellis.export import DESTINATION_LIMITS
    most = DESTINATION_LIMITS["web"]["max_triangles"]
    assert web.face_target(most * 3) == most and web.face_target(most // 2) == most // 2
