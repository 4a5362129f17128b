"""Placement of an exported object (trellis/export/placement.py): its height exact to the float32 a file stores,
its base on 0, its pivot centred, its units and its up axis a proper rotation."""
import numpy as np
import pytest

from trellis.core.axes import Z_UP_TO_Y_UP
from trellis.export.placement import bounds, place, placement, turn_to


def blob(seed: int = 0) -> np.ndarray:
    """An off-centre, lopsided cloud inside the unit cube, float32 like the export's vertices."""
    rng = np.random.default_rng(seed)
    return (rng.random((500, 3)) ** 2 * [0.7, 0.4, 0.9] + [-0.1, 0.05, -0.45]).astype(np.float32)


def within_one_float32_step(value, target) -> bool:
    return abs(float(value) - float(target)) <= float(np.spacing(np.float32(target)))


def test_no_options_leave_the_vertices_as_they_are():
    v = blob()
    np.testing.assert_array_equal(place(v), v.astype(np.float64))
    np.testing.assert_array_equal(place(v, up="y"), v.astype(np.float64) @ Z_UP_TO_Y_UP)


@pytest.mark.parametrize("height", [0.05, 1.0, 1.8, 250.0])
def test_height_with_bottom_pivot_is_exact(height):
    v = blob(1)
    p = place(v, height=height, pivot="bottom").astype(np.float32)      # what a file stores
    low, high = p.min(axis=0), p.max(axis=0)
    assert low[2] == 0.0                                                # base exactly on the ground
    assert within_one_float32_step(high[2] - low[2], height), (high[2], height)
    size = high[2]
    assert abs(low[0] + high[0]) <= 4 * np.spacing(size) and abs(low[1] + high[1]) <= 4 * np.spacing(size)
    # uniform: the proportions are the object's own
    src_low, src_high = bounds(v)
    np.testing.assert_allclose((high - low) / (high - low)[2], (src_high - src_low) / (src_high - src_low)[2],
                               rtol=1e-6)


def test_center_pivot_centres_the_box():
    p = place(blob(2), height=0.3, pivot="center")
    low, high = bounds(p)
    np.testing.assert_allclose((low + high) / 2, 0, atol=1e-15)
    assert within_one_float32_step(high[2] - low[2], 0.3)


def test_pivot_without_height_keeps_the_size_and_height_without_pivot_keeps_the_origin():
    v = blob(3)
    low, high = bounds(v)
    moved = place(v, pivot="bottom")
    np.testing.assert_allclose(bounds(moved)[1] - bounds(moved)[0], high - low, rtol=1e-12)
    assert bounds(moved)[0][2] == 0.0
    scale, anchor = placement(v, height=2.0)
    np.testing.assert_array_equal(anchor, 0)
    np.testing.assert_allclose(place(v, height=2.0), v.astype(np.float64) * (2.0 / (high[2] - low[2])), rtol=1e-15)


def test_millimetres_are_a_thousand_times_metres():
    v = blob(4)
    metres = place(v, height=1.8, pivot="bottom")
    mm = place(v, height=1.8, pivot="bottom", units="mm")
    np.testing.assert_allclose(mm, metres * 1000, rtol=1e-15)
    assert within_one_float32_step(np.float32(mm[:, 2].max()), 1800.0)


def test_y_up_is_a_rotation_that_keeps_the_base_and_the_winding():
    v = blob(5)
    z_up = place(v, height=1.8, pivot="bottom")
    y_up = place(v, height=1.8, pivot="bottom", up="y")
    np.testing.assert_array_equal(y_up, z_up @ Z_UP_TO_Y_UP)
    assert np.isclose(np.linalg.det(Z_UP_TO_Y_UP), 1.0)                 # a rotation: no mirror, winding kept
    low, high = bounds(y_up)
    assert low[1] == 0.0 and within_one_float32_step(high[1] - low[1], 1.8)
    assert abs(low[0] + high[0]) < 1e-12 and abs(low[2] + high[2]) < 1e-12
    a, b, c = z_up[:3]
    n_z = np.cross(b - a, c - a)
    a, b, c = y_up[:3]
    np.testing.assert_allclose(np.cross(b - a, c - a), turn_to(n_z[None], "y")[0], atol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(pivot="top"), dict(up="x"), dict(units="cm"), dict(height=0.0),
                                    dict(height=-1.0), dict(height=float("nan")), dict(height=float("inf"))])
def test_bad_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        place(blob(), **kwargs)


def test_a_flat_or_empty_mesh_cannot_be_given_a_height():
    flat = blob()
    flat[:, 2] = 0.25
    with pytest.raises(ValueError, match="flat"):
        place(flat, height=1.0)
    np.testing.assert_allclose(place(flat, pivot="bottom")[:, 2], 0)     # it can still be moved
    with pytest.raises(ValueError, match="empty"):
        place(np.zeros((0, 3)), pivot="center")
