"""xatlas in groups (``trellis.export.uv.xatlas_groups``), cut into 4-5 groups, on a small TRELLIS.2 blob
(tests/helpers/ovoxel_blobs.py's noisy sheets of tiny charts, the PBR export's worst case: the groups' atlases placed
side by side) and on a smooth sphere (large charts: packed again as one atlas): every face keeps its corners and
lands in the texture, no chart is mirrored, the texture is used at least as well as by one xatlas atlas, overlaps
stay a sliver, and the layout does not depend on how many children made it. And when "auto" takes this path, and
that its budget, a cancel and a failing child stop the children."""
from __future__ import annotations

import time

import numpy as np
import pytest

from trellis.core.callbacks import Cancelled
from trellis.export.pbr.prepare import dense_mesh
from trellis.export.uv import geometric, xatlas as uvx, xatlas_groups
from trellis.export.uv.stats import atlas_stats
from trellis.export.uv.unwrap import unwrap_uv, xatlas_route
from trellis.export.uv.winding import mirrored_faces
from trellis.export.uv.xatlas import xatlas_layout

from tests.helpers.meshes import bumpy_sphere
from tests.helpers.ovoxel_blobs import random_blob

pytest.importorskip("xatlas")

SIZE = 512
GROUP_FACES = 2500          # ~9 k faces: 4 groups


@pytest.fixture(scope="module")
def blob():
    v, f = dense_mesh(random_blob(30, latent=16, seed=0))
    return v.numpy(), f.numpy()


def check_layout(v, f, **kw):
    """group_layout's result checked against one xatlas atlas of the same mesh: (its record, its stats, one's)."""
    info = {}
    vv, ff, uv, vm = xatlas_groups.group_layout(v, f, 60, SIZE, 2, None, None, workers=2, info=info, **kw)
    assert ff.shape == f.shape
    np.testing.assert_array_equal(vm[ff], f)                 # same faces, same corners, in the input order
    np.testing.assert_array_equal(vv, v[vm])
    assert np.isfinite(uv).all() and uv.min() >= 0 and uv.max() <= 1
    assert mirrored_faces(ff, uv).sum() == 0                 # the placement turns no chart over
    got = atlas_stats(ff, uv, SIZE)
    one = atlas_stats(*xatlas_layout(v, f, 60, SIZE, 2, None, None)[1:3], SIZE)
    print(f"\ngroups {info} {got}\none atlas {one}")
    assert got["outside"] == 0
    assert got["texel_use"] >= 0.95 * one["texel_use"]
    return info, got, one


def test_groups_of_tiny_charts_lay_out_every_face_as_well_as_one_atlas(blob):
    v, f = blob
    info, got, one = check_layout(v, f, group_faces=GROUP_FACES)
    assert info["groups"] == 4 and info["workers"] == 2 and not info["repacked"]     # placed side by side
    assert got["charts"] == one["charts"]                    # xatlas's charts: the groups only place them
    # xatlas's margins end below a texel where charts are this many: a few texel centres claimed twice, no more
    assert got["overlap_texels"] <= 1e-3 * got["texel_use"] * SIZE * SIZE


def test_groups_of_large_charts_are_packed_again_as_one_atlas():
    v, f = bumpy_sphere(5)                                    # 20 k faces, smooth: large charts
    info, got, one = check_layout(np.asarray(v, np.float32), np.asarray(f, np.int64), group_faces=5000)
    assert info["groups"] == 5 and info["repacked"]
    assert got["overlap_texels"] == 0
    assert got["charts"] <= 1.1 * one["charts"]


def test_the_layout_does_not_depend_on_the_children(blob):
    v, f = blob
    a = xatlas_groups.group_layout(v, f, 60, SIZE, 2, None, None, workers=1, group_faces=GROUP_FACES)
    b = xatlas_groups.group_layout(v, f, 60, SIZE, 2, None, None, workers=3, group_faces=GROUP_FACES)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_auto_routes_large_meshes_to_groups():
    # the blob's export: 500 k faces in a 10 s budget, one atlas estimated past it
    assert xatlas_route(500_000, 10.0) in ("groups", None)
    assert xatlas_route(500_000, 10.0) == ("groups" if xatlas_groups.group_time_estimate(500_000) <= 10 else None)
    assert xatlas_route(1_000_000, 30.0) == "groups"
    assert xatlas_route(500_000, 60.0) == "whole"            # one atlas where it fits the budget, as before
    assert xatlas_route(40_000, 10.0) == "whole"
    assert xatlas_route(xatlas_groups.GROUP_MIN_FACES - 1, 1.0) is None
    assert xatlas_groups.group_time_estimate(500_000, workers=16) < xatlas_groups.group_time_estimate(500_000, 1)


def test_auto_lays_out_in_groups_where_one_atlas_would_not_fit_the_budget(blob, monkeypatch):
    v, f = blob
    monkeypatch.setattr(xatlas_groups, "GROUP_MIN_FACES", 1000)              # the blob stands for a large mesh
    monkeypatch.setattr(uvx, "xatlas_time_estimate", lambda n: 1e9)          # ... whose one atlas is hopeless
    monkeypatch.setattr(geometric, "geometric_time_estimate", lambda n: 1e9)
    info = {}
    vv, ff, uv, vm = unwrap_uv(v, f, time_budget_s=60, texture_size=SIZE, info=info)
    assert info["method"] == "xatlas" and info["xatlas_groups"]["groups"] == 1
    np.testing.assert_array_equal(vm[ff], f)
    assert atlas_stats(ff, uv, SIZE)["outside"] == 0


def test_budget_and_cancel_stop_the_children(blob):
    v, f = blob
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        xatlas_groups.group_layout(v, f, 0.05, SIZE, 2, None, None, workers=2, group_faces=GROUP_FACES)
    with pytest.raises(Cancelled):
        xatlas_groups.group_layout(v, f, 60, SIZE, 2, None, lambda: True, workers=2, group_faces=GROUP_FACES)
    assert time.monotonic() - t0 < 10


def test_a_failing_child_is_reported_and_stops_the_others(blob, monkeypatch):
    v, f = blob
    # the child of the first groups fails at once, the other would run a minute
    monkeypatch.setattr(xatlas_groups, "GROUPS_CHILD", "import sys, time\n"
                        "if sys.argv[3] == '0': sys.exit('xatlas: no such luck')\ntime.sleep(60)")
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="no such luck"):
        xatlas_groups.group_layout(v, f, 60, SIZE, 2, None, None, workers=2, group_faces=GROUP_FACES)
    assert time.monotonic() - t0 < 10
