"""TRELLIS.2's pipeline types and the cascade's re-quantisation with its token cap (TRELLIS2_FACTS §3, §3.2,
§16a.6)."""
import pytest
import torch

from trellis.pipelines.trellis2_cascade import PIPELINE_TYPES, cascade_coords, pipeline_type, requantise


def rows(*r):
    return torch.tensor(r, dtype=torch.int32)


def test_fine_coord_511_goes_to_63_and_95():
    fine = rows([0, 511, 0, 256], [1, 511, 511, 511])
    assert requantise(fine, 512, 64).tolist() == [[0, 63, 0, 32], [1, 63, 63, 63]]
    assert requantise(fine, 512, 96).tolist() == [[0, 95, 0, 48], [1, 95, 95, 95]]


def test_requantise_is_floor_of_the_cell_centre_and_unique_per_batch_item():
    fine = torch.stack(torch.meshgrid(torch.arange(2), torch.arange(512), torch.arange(1), torch.arange(1),
                                      indexing="ij"), -1).reshape(-1, 4).int()
    for grid in (64, 72, 80, 88, 96):
        q = requantise(fine, 512, grid)
        assert q.dtype == torch.int32 and q.shape == (2 * grid, 4)              # every cell of the line, per item
        assert q[:, 0].tolist() == [0] * grid + [1] * grid
        expect = sorted({int((c + 0.5) / 512 * grid) for c in range(512)})     # independent: the cells' centres
        assert q[:grid, 1].tolist() == expect == list(range(grid))
    assert requantise(rows([0, 7, 8, 15]), 512, 64).tolist() == [[0, 0, 1, 1]]    # 8 fine per cell at 1024
    assert requantise(rows([0, 5, 6, 0]), 512, 96).tolist() == [[0, 1, 1, 0]]     # floor(5.5 * 96 / 512) = 1
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        requantise(torch.zeros(3, 3, dtype=torch.int32), 512, 64)


def test_the_token_cap_lowers_the_resolution_by_128_down_to_1024():
    line = torch.stack([torch.zeros(512), torch.arange(512), torch.zeros(512), torch.zeros(512)], 1).int()
    coords, res = cascade_coords(line, 512, 1536, max_num_tokens=97)
    assert (res, coords.shape[0]) == (1536, 96)                  # 96 < 97: accepted
    coords, res = cascade_coords(line, 512, 1536, max_num_tokens=96)
    assert (res, coords.shape[0]) == (1408, 88)                  # 96 >= 96: one step down
    coords, res = cascade_coords(line, 512, 1536, max_num_tokens=10)
    assert (res, coords.shape[0]) == (1024, 64)                  # 1024 always accepted
    coords, res = cascade_coords(line, 512, 1024, max_num_tokens=10)
    assert res == 1024 and int(coords[:, 1].max()) == 63
    with pytest.raises(ValueError, match="multiple of 16"):
        cascade_coords(line, 512, 1000)


def test_pipeline_types():
    assert set(PIPELINE_TYPES) == {"512", "1024", "1024_cascade", "1536_cascade"}
    t = pipeline_type("512")
    assert (t.ss_res, t.shape, t.cascade, t.tex, t.res, t.cond_sizes) == (32, "512", False, "512", 512, (512,))
    t = pipeline_type(1024)
    assert (t.ss_res, t.shape, t.cascade, t.tex, t.cond_sizes) == (64, "1024", False, "1024", (512, 1024))
    for name, res in (("1024_cascade", 1024), ("1536_cascade", 1536)):
        t = pipeline_type(name)
        assert (t.ss_res, t.shape, t.cascade, t.tex, t.res) == (32, "512", True, "1024", res)
    with pytest.raises(ValueError, match="unknown pipeline_type '2048'"):
        pipeline_type("2048")
