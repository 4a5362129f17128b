"""trellis/export/pbr/texel_fit.py: sub-texel points lie where their UVs say, and fitted texels show a sharp edge
through a bilinear lookup better than point samples do (what the PBR bake lost before the fit)."""
import torch

from trellis.export.pbr.texel_fit import SUBSAMPLES, fit_bilinear, subsample_points


def test_subsample_points_follow_the_uv_map():
    v = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.1, 0.2], [0.2, 0.6, 0.4]])
    f = torch.tensor([[0, 1, 2]])
    uv = torch.tensor([[0.2, 0.3], [0.7, 0.35], [0.3, 0.8]])
    size = 64
    bary = torch.tensor([[0.3, 0.3, 0.4]])
    point = bary @ v
    sub = subsample_points(v, f, uv, torch.tensor([0]), point, size)          # [4, 1, 3]
    # barycentrics of each sub-point back through the triangle give its UV: the texel's UV plus the offset
    e = torch.stack([v[1] - v[0], v[2] - v[0]], 1)                              # [3, 2]
    for k, (ox, oy) in enumerate(SUBSAMPLES):
        ab = torch.linalg.lstsq(e, (sub[k, 0] - v[0])[:, None]).solution[:, 0]
        got = uv[0] + ab[0] * (uv[1] - uv[0]) + ab[1] * (uv[2] - uv[0])
        want = bary @ uv + torch.tensor([ox / size, -oy / size])
        assert torch.allclose(got, want[0], atol=1e-6)


def _bilinear(tex, x, y):
    """Readings of tex [S, S] at texel coordinates x, y (texel centres at integers), edges clamped."""
    s = tex.shape[0]
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()

    def at(yy, xx):
        return tex[yy.clamp(0, s - 1), xx.clamp(0, s - 1)]
    return ((at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx) * (1 - fy)
            + (at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx) * fy)


def test_fitted_texels_keep_an_edge_sharper_than_point_samples():
    s = 32
    # a slanted step edge and a line one texel wide, crossing texels at every phase
    def signal(x, y):
        step = ((x + 0.37 * y) > 13.3).float()
        line = ((x - 0.21 * y - 22.0).abs() < 0.5).float()
        return (step * 0.8 + 0.1) * (1 - line) + 0.05 * line
    rows, cols = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    point = signal(cols.float(), rows.float())                                  # point samples at texel centres
    pix = torch.arange(s * s)
    samples = torch.cat([signal(cols.reshape(-1).float() + ox, rows.reshape(-1).float() + oy)
                         for ox, oy in SUBSAMPLES])[:, None]
    fitted, solved = fit_bilinear(point.reshape(-1, 1), pix, samples, s)
    assert bool(solved.all())
    fitted = fitted.reshape(s, s)
    # what a viewer reads: bilinear lookups at 8 x 8 points per texel, inside the texture's interior
    t = (torch.arange(8 * (s - 8)).float() + 0.5) / 8 + 3.5
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    truth = signal(xx, yy)
    err_point = ((_bilinear(point, xx, yy) - truth) ** 2).mean()
    err_fit = ((_bilinear(fitted, xx, yy) - truth) ** 2).mean()
    assert err_fit < 0.93 * err_point                                          # about 0.5 dB
    # a smooth signal stays as it was (the fit does not invent detail)
    smooth = 0.3 + 0.01 * cols.float() + 0.005 * rows.float()
    ramp = torch.cat([0.3 + 0.01 * (cols.reshape(-1).float() + ox) + 0.005 * (rows.reshape(-1).float() + oy)
                      for ox, oy in SUBSAMPLES])[:, None]
    kept, _ = fit_bilinear(smooth.reshape(-1, 1), pix, ramp, s)
    inner = kept.reshape(s, s)[4:-4, 4:-4]                                  # off the clamped image border
    assert torch.allclose(inner, smooth[4:-4, 4:-4], atol=1e-3)


def test_the_readings_transpose_is_their_adjoint():
    from trellis.export.pbr.texel_fit import quarter_blend, quarter_blend_t

    g = torch.Generator().manual_seed(0)
    x = torch.rand(7, 7, 2, generator=g)
    y = torch.rand(7, 7, 2, generator=g)
    for axis in (0, 1):
        for off in (-0.25, 0.25):
            forward = (quarter_blend(x, axis, off) * y).sum()
            assert torch.allclose(forward, (x * quarter_blend_t(y, axis, off)).sum(), atol=1e-5)
