"""The short-axis reductions (``trellis.export.rows``) against numpy's own: the same bits, zeros' signs, NaN and
infinities included, for every axis length the export uses and past numpy's pairwise threshold."""
from __future__ import annotations

import numpy as np
import pytest

from trellis.export import rows


def awkward(shape, dtype, seed):
    """Random values of mixed magnitude with zeros of both signs, infinities and NaN sprinkled in."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape) * 10.0 ** rng.integers(-8, 9, shape)
    pick = rng.random(shape)
    a[pick < 0.03] = 0.0
    a[(pick >= 0.03) & (pick < 0.06)] = -0.0
    a[(pick >= 0.06) & (pick < 0.07)] = np.inf
    a[(pick >= 0.07) & (pick < 0.08)] = -np.inf
    a[(pick >= 0.08) & (pick < 0.09)] = np.nan
    return a.astype(dtype)


def same_bits(x, y):
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == y.shape and x.dtype == y.dtype
    if x.dtype.kind == "f":
        x, y = x.view(f"u{x.dtype.itemsize}"), y.view(f"u{y.dtype.itemsize}")
        # numpy's NaNs may differ in payload only: compare them as NaN
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 6, 7, 8, 9])
def test_float_reductions_along_a_short_axis_are_numpys_bit_for_bit(dtype, k):
    a = awkward((5000, k), dtype, k)
    finite = np.where(np.isfinite(a), a, dtype(1.5))
    for got, want in ((rows.row_min(a), a.min(1)), (rows.row_max(a), a.max(1)),
                      (rows.row_sum(finite), finite.sum(1)), (rows.row_norm(finite), np.linalg.norm(finite, axis=1))):
        nan = np.isnan(want)
        assert (np.isnan(got) == nan).all()
        same_bits(got[~nan], want[~nan])
    same_bits(rows.column_min(a[:, :1].repeat(3, 1)), a[:, :1].repeat(3, 1).min(0))
    assert np.array_equal(rows.column_max(finite), finite.max(0))


def test_corners_coordinates_and_ends():
    q = awkward((4000, 3, 2), np.float64, 1)
    same_bits(rows.row_min(q), q.min(1))
    same_bits(rows.row_max(q[..., 0]), q[..., 0].max(1))
    e = np.random.default_rng(2).integers(-5, 5, (4000, 2))
    assert np.array_equal(rows.row_min(e), e.min(1)) and np.array_equal(rows.row_max(e), e.max(1))
    b = np.random.default_rng(3).random((4000, 3)) < 0.5
    assert np.array_equal(rows.row_all(b), b.all(1)) and np.array_equal(rows.row_any(b), b.any(1))
    assert rows.row_all(b).dtype == bool


def test_the_input_is_left_alone_and_a_wrong_shape_is_refused():
    a = np.arange(12.0).reshape(4, 3)
    keep = a.copy()
    rows.row_sum(a), rows.row_max(a), rows.row_min(a[:, :1])
    assert np.array_equal(a, keep)
    with pytest.raises(ValueError):
        rows.row_max(np.arange(3.0))
    with pytest.raises(ValueError):
        rows.row_sum(np.zeros((3, 0)))


def test_any_short_axis_of_a_stack():
    a = awkward((40, 30, 3), np.float64, 4)
    finite = np.where(np.isfinite(a), a, 2.0)
    for axis in (-1, 2, 1):
        same_bits(rows.row_sum(finite, axis), finite.sum(axis))
        same_bits(rows.row_norm(finite, axis), np.linalg.norm(finite, axis=axis))
        same_bits(rows.row_max(finite, axis), finite.max(axis))
    b = a > 0
    assert np.array_equal(rows.row_any(b, -1), b.any(-1)) and np.array_equal(rows.row_all(b, 2), b.all(2))


def test_block_any_is_numpys():
    rng = np.random.default_rng(5)
    for n_rows, n_cols, b in ((1, 1, 1), (3, 5, 2), (20, 30, 4), (7, 9, 8)):
        a = rng.random((n_rows * b, n_cols * b)) < 0.05
        got = rows.block_any(a, b)
        assert got.dtype == bool and np.array_equal(got, a.reshape(n_rows, b, n_cols, b).any(axis=(1, 3)))
    with pytest.raises(ValueError):
        rows.block_any(np.zeros((5, 4), bool), 2)
