"""The grouped UV layout (``uv.grouped``) and ``unwrap_uv``'s use of it: half the texture or more in use, no
overlap, every face with UV area, seams split as ``unwrap_uv`` promises, on closed shapes (a sphere, a torus, a
thin-walled cup) at the PBR export's default and game settings; "auto" never ends in the single-face layout."""
import numpy as np
import pytest

from trellis.export.options import PbrOptions
from trellis.export.uv.overlap import chart_self_overlaps, signed_area
from trellis.export.uv.stats import atlas_stats, chart_ids
from trellis.export.uv.unwrap import LOW_TEXEL_USE, unwrap_uv

# the PBR export's texture at its defaults, and a game asset's (the app's texture size)
SETTINGS = {"default": PbrOptions().texture_size, "game": 1024}


def revolve(profile, steps, closed=False):
    """A surface of revolution about z of the (r, z) polyline ``profile``: its ends on the axis (r = 0) become
    poles, or with ``closed`` the polyline is a loop off the axis. Faces wound outward."""
    profile = np.asarray(profile, np.float64)
    ring_rows = profile if closed else profile[1:-1]
    ang = np.arange(steps) * 2 * np.pi / steps
    rings = np.stack([ring_rows[:, None, 0] * np.cos(ang), ring_rows[:, None, 0] * np.sin(ang),
                      np.broadcast_to(ring_rows[:, None, 1], (len(ring_rows), steps))], -1).reshape(-1, 3)
    n = len(ring_rows)
    i, j = np.meshgrid(np.arange(n if closed else n - 1), np.arange(steps), indexing="ij")
    a, b = i * steps + j, i * steps + (j + 1) % steps
    c, d = ((i + 1) % n) * steps + (j + 1) % steps, ((i + 1) % n) * steps + j
    f = [np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)]
    v = rings
    if not closed:
        lo, hi = len(rings), len(rings) + 1
        v = np.concatenate([rings, [[0, 0, profile[0, 1]], [0, 0, profile[-1, 1]]]])
        jj = np.arange(steps)
        last = (n - 1) * steps
        f += [np.stack([np.full(steps, lo), (jj + 1) % steps, jj], -1),
              np.stack([np.full(steps, hi), last + jj, last + (jj + 1) % steps], -1)]
    f = np.concatenate(f)
    p = v[f]
    if np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() < 0:      # signed volume: wind outward
        f = f[:, ::-1]
    return v, np.ascontiguousarray(f)


def resample(points, step):
    """The polyline ``points`` with segments cut into pieces of about ``step``."""
    out = [points[0]]
    for p, q in zip(points[:-1], points[1:]):
        k = max(int(np.ceil(np.linalg.norm(np.subtract(q, p)) / step)), 1)
        out += [np.add(p, np.subtract(q, p) * t / k) for t in range(1, k + 1)]
    return np.array(out)


def shape(name, faces=12_000, noise=0.1, seed=0):
    """A closed shape of about ``faces`` faces, its vertices jittered by ``noise`` of an edge."""
    steps = int(np.sqrt(faces))
    if name == "sphere":
        t = np.linspace(-np.pi / 2, np.pi / 2, steps // 2 + 1)
        v, f = revolve(np.stack([0.5 * np.cos(t), 0.5 * np.sin(t)], 1), steps)
    elif name == "torus":
        t = np.linspace(0, 2 * np.pi, steps // 2, endpoint=False)
        v, f = revolve(np.stack([0.32 + 0.13 * np.cos(t), 0.13 * np.sin(t)], 1), steps, closed=True)
    else:       # a cup: walls and floor 2 % of its height thick
        w = 0.01
        v, f = revolve(resample([(0, -0.5), (0.35, -0.5), (0.35, 0.5), (0.35 - 2 * w, 0.5), (0.35 - 2 * w, -0.48),
                                 (0, -0.48)], 2.6 / (steps // 2)), steps)
    edge = np.sqrt(4.0 / len(f))
    v = v + noise * edge * np.random.default_rng(seed).standard_normal(v.shape)
    return v.astype(np.float32), f.astype(np.int64)


def check_layout(v, f, out, size):
    vv, ff, uv, vm = out
    assert ff.shape == f.shape and np.array_equal(vm[ff], f)           # faces keep their order and corners
    assert np.allclose(vv, v[vm]) and len(uv) == len(vv)
    assert uv.min() >= 0 and uv.max() <= 1
    stats = atlas_stats(ff, uv, size)
    assert stats["overlap_texels"] == 0 and stats["outside"] == 0
    tri = uv[ff].astype(np.float64)
    assert not chart_self_overlaps(ff, chart_ids(ff), tri).any()
    assert (signed_area(tri) > 0).all()                                 # every face has area, none mirrored
    return stats


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("name", ["sphere", "torus", "cup"])
def test_grouped_layout_uses_half_the_texture_without_overlap(name, setting):
    size = SETTINGS[setting]
    v, f = shape(name)
    info = {}
    out = unwrap_uv(v, f, texture_size=size, method="grouped", info=info)
    stats = check_layout(v, f, out, size)
    assert info["method"] == "grouped" and info["texel_use"] == pytest.approx(stats["texel_use"], abs=1e-3)
    assert stats["texel_use"] >= LOW_TEXEL_USE, stats
    assert stats["single_triangle_share"] < 0.5


def test_a_fold_of_the_surface_is_cut_out_not_laid_over_itself():
    # a sphere with a pleat: a band of faces pushed in past its neighbours, so that its projection overlaps
    v, f = shape("sphere", 6000, noise=0.0)
    band = np.abs(v[:, 2] - 0.1) < 0.02
    v[band, :2] *= 0.8
    out = unwrap_uv(v, f, texture_size=1024, method="grouped")
    check_layout(v, f, out, 1024)


def test_auto_past_its_budget_ends_in_the_grouped_layout():
    v, f = shape("sphere", 100_000)
    info = {}
    out = unwrap_uv(v, f, time_budget_s=0.5, texture_size=2048, info=info)
    assert info["method"] == "grouped", info["method"]       # never the single-face chart layout
    assert info["texel_use"] >= LOW_TEXEL_USE
    assert atlas_stats(out[1], out[2], 2048)["overlap_texels"] == 0


def test_an_empty_mesh_lays_out_nothing():
    out = unwrap_uv(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), method="grouped")
    assert out[1].shape == (0, 3) and out[2].shape == (0, 2)


def test_a_shattering_surface_keeps_the_layout_that_gives_more_faces_a_texel():
    import trimesh

    from trellis.export.uv.stats import faces_with_texel
    from trellis.export.uv.unwrap import GROUPED_MIN_FACES_WITH_TEXEL, unwrap_uv

    m = trimesh.creation.icosphere(subdivisions=5)
    rng = np.random.default_rng(0)
    v = m.vertices * (1 + 0.2 * rng.standard_normal((len(m.vertices), 1)))    # a noise blob's folds everywhere
    info: dict = {}
    _, faces, uvs, _ = unwrap_uv(v, m.faces, time_budget_s=0.0, texture_size=128, info=info)
    record = info["grouped"]
    assert record["faces_with_texel"] < GROUPED_MIN_FACES_WITH_TEXEL        # so the axis charts were tried too
    best = max(("grouped", record["faces_with_texel"]), ("charts", record["charts_faces_with_texel"]),
               key=lambda kv: kv[1])
    assert info["method"] == best[0]
    assert faces_with_texel(faces, uvs, 128) == pytest.approx(best[1])
