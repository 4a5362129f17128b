"""The Euler sampler with TRELLIS.2's guidance names and CFG rescale, against TRELLIS2_FACTS §4 and §16a.2."""
import numpy as np
import pytest
import torch

from trellis.modules.sparse import SparseTensor
from trellis.pipelines.samplers import FlowEulerGuidanceIntervalSampler, time_grid
from trellis.pipelines.samplers.guidance import resolve_guidance, sample_std

# Facts §4: r = 3, 12 steps (4 decimals).
GRID_12_3 = [1, 0.9706, 0.9375, 0.9, 0.8571, 0.8077, 0.75, 0.6818, 0.6, 0.5, 0.375, 0.2143, 0.]
# Facts §4: r = 5, 12 steps (5 decimals).
GRID_12_5 = [1, .98214, .96154, .9375, .90909, .875, .83333, .78125, .71429, .625, .5, .3125, 0]
SIGMA_MIN = 1e-5


class Recorder(torch.nn.Module):
    """A toy flow whose output depends on x, t and cond per item; records every call's timestep and cond mean."""

    def __init__(self, constant=None):
        super().__init__()
        self.calls, self.constant = [], constant

    def forward(self, x, t, cond):
        self.calls.append((float(t[0]) / 1000, float(cond.mean())))
        feats = x.feats if isinstance(x, SparseTensor) else x
        if self.constant is not None:
            return torch.full_like(feats, self.constant)
        if isinstance(x, SparseTensor):
            b = x.coords[:, 0].long()
            return x.replace(torch.cos(feats) * (t[b] / 1000)[:, None] + cond.mean(dim=(1, 2))[b][:, None] * feats)
        shape = (-1,) + (1,) * (feats.ndim - 1)
        return torch.cos(feats) * (t / 1000).view(shape) + cond.mean(dim=(1, 2)).view(shape) * feats


def test_time_grid_and_guided_step_counts_match_the_facts():
    assert time_grid(12, 3.0) == pytest.approx(GRID_12_3, abs=5e-5)
    assert time_grid(12, 5.0) == pytest.approx(GRID_12_5, abs=5e-6)
    assert time_grid(12, 3.0)[8] == 0.6            # float64: the 9th step starts at 0.6 exactly and is guided
    for rescale_t, guided in ((3.0, 9), (5.0, 10)):
        model = Recorder(constant=0.5)
        FlowEulerGuidanceIntervalSampler(SIGMA_MIN).sample(
            model, torch.zeros(1, 2, 2, 2, 2), torch.ones(1, 3, 4), torch.zeros(1, 3, 4), steps=12,
            guidance_strength=7.5, guidance_interval=[0.6, 1.0], rescale_t=rescale_t, cfg_batch=False)
        neg_calls = [t for t, c in model.calls if c == 0.0]
        assert len(neg_calls) == guided and len(model.calls) == 12 + guided
        assert min(neg_calls) == (0.6 if rescale_t == 3.0 else pytest.approx(0.625))


def test_strength_one_is_cond_only_and_zero_is_neg_only():
    for w, expect_cond in ((1.0, [1.0] * 12), (0.0, None)):
        model = Recorder()
        FlowEulerGuidanceIntervalSampler().sample(
            model, torch.randn(1, 2, 2, 2, 2), torch.ones(1, 3, 4), torch.zeros(1, 3, 4), steps=12,
            guidance_strength=w, guidance_rescale=0.7, guidance_interval=[0.6, 0.9], rescale_t=3.0)
        conds = [c for _, c in model.calls]
        assert len(model.calls) == 12                  # one pass per step: never both
        if expect_cond is not None:
            assert conds == expect_cond
        else:   # neg only inside [0.6, 0.9], cond outside (strength treated as 1 there)
            inside = [0.6 <= t <= 0.9 for t in time_grid(12, 3.0)[:-1]]
            assert conds == [0.0 if i else 1.0 for i in inside] and sum(inside) == 6


def reference_trellis2(model, x, coords, cond, neg, steps, rescale_t, w, rho, interval):
    """Facts §4 transcribed with plain tensors and numpy; `coords` given: x is [N, C] rows of a sparse batch."""
    ts = time_grid(steps, rescale_t)
    for k in range(steps):
        t, tn = ts[k], ts[k + 1]
        tt = torch.full((int(coords[:, 0].max()) + 1 if coords is not None else x.shape[0],), 1000 * t)
        call = (lambda c: model(SparseTensor(x, coords), tt, c).feats) if coords is not None else \
            (lambda c: model(x, tt, c))
        v = call(cond)
        if interval[0] <= t <= interval[1]:
            v_pos, v_neg = v, call(neg)
            v_cfg = w * v_pos + (1 - w) * v_neg
            sig = SIGMA_MIN + (1 - SIGMA_MIN) * t
            x0_pos = ((1 - SIGMA_MIN) * x - sig * v_pos).double().numpy()
            x0_cfg = ((1 - SIGMA_MIN) * x - sig * v_cfg).double().numpy()
            if coords is None:      # dense: ddof 1 per sample
                s_pos = np.array([a.std(ddof=1) for a in x0_pos])[:, None, None, None, None]
                s_cfg = np.array([a.std(ddof=1) for a in x0_cfg])[:, None, None, None, None]
            else:                   # sparse: population std of each sample's rows
                b = coords[:, 0].numpy()
                s_pos = np.array([x0_pos[b == i].std() for i in range(b.max() + 1)])[b][:, None]
                s_cfg = np.array([x0_cfg[b == i].std() for i in range(b.max() + 1)])[b][:, None]
            x0 = rho * x0_cfg * s_pos / s_cfg + (1 - rho) * x0_cfg
            v = ((1 - SIGMA_MIN) * x - torch.from_numpy(x0).float()) / sig
        x = x - (t - tn) * v
    return x


@pytest.mark.parametrize("cfg_batch", [True, False])
def test_rescale_matches_an_independent_recomputation_dense(cfg_batch):
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 2, 2, 2, 2, generator=g)     # few values: ddof 1 vs 0 shows
    cond, neg = torch.randn(2, 5, 6, generator=g) + 0.5, torch.zeros(2, 5, 6)
    out = FlowEulerGuidanceIntervalSampler(SIGMA_MIN).sample(
        Recorder(), noise, cond, neg, steps=12, guidance_strength=7.5, guidance_rescale=0.7,
        guidance_interval=[0.6, 1.0], rescale_t=5.0, cfg_batch=cfg_batch)
    ref = reference_trellis2(Recorder(), noise, None, cond, neg, 12, 5.0, 7.5, 0.7, (0.6, 1.0))
    torch.testing.assert_close(out.samples, ref, atol=2e-5, rtol=2e-5)
    plain = FlowEulerGuidanceIntervalSampler(SIGMA_MIN).sample(
        Recorder(), noise, cond, neg, steps=12, guidance_strength=7.5, guidance_interval=[0.6, 1.0], rescale_t=5.0)
    assert (plain.samples - out.samples).abs().max() > 1e-2         # the rescale does something here


@pytest.mark.parametrize("cfg_batch", [True, False])
def test_rescale_matches_an_independent_recomputation_sparse(cfg_batch):
    g = torch.Generator().manual_seed(1)
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 2, 3], [0, 3, 3, 3], [1, 4, 4, 4], [1, 0, 1, 0]], dtype=torch.int32)
    feats = torch.randn(5, 2, generator=g) * torch.tensor([1.0, 1, 1, 4, 4])[:, None]     # samples' spreads differ
    cond, neg = torch.randn(2, 3, 6, generator=g) + 0.5, torch.zeros(2, 3, 6)
    out = FlowEulerGuidanceIntervalSampler(SIGMA_MIN).sample(
        Recorder(), SparseTensor(feats, coords), cond, neg, steps=12, guidance_strength=7.5, guidance_rescale=0.3,
        guidance_interval=[0.6, 1.0], rescale_t=3.0, cfg_batch=cfg_batch)
    ref = reference_trellis2(Recorder(), feats, coords, cond, neg, 12, 3.0, 7.5, 0.3, (0.6, 1.0))
    assert torch.equal(out.samples.coords, coords)
    torch.testing.assert_close(out.samples.feats, ref, atol=2e-5, rtol=2e-5)


def test_the_std_differs_between_dense_and_sparse_as_the_reference():
    g = torch.Generator().manual_seed(2)
    dense = torch.randn(2, 8, 2, 2, 2, generator=g, dtype=torch.float64)
    got = sample_std(dense, dense).flatten()
    want = [float(np.std(a.numpy(), ddof=1)) for a in dense]
    assert got.tolist() == pytest.approx(want, rel=1e-12)
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 2, 0, 0], [1, 5, 5, 5], [1, 6, 5, 5]], dtype=torch.int32)
    rows = torch.randn(5, 3, generator=g, dtype=torch.float64)
    got = sample_std(rows, SparseTensor(rows, coords))
    assert got.shape == (5, 1)
    pop = [float(np.std(rows[:3].numpy())), float(np.std(rows[3:].numpy()))]       # ddof 0
    assert got[:, 0].tolist() == pytest.approx([pop[0]] * 3 + [pop[1]] * 2, rel=1e-9)
    # The same 9 values as a dense sample give the ddof-1 std: larger by sqrt(n / (n - 1)).
    as_dense = sample_std(rows[:3].reshape(1, 9), rows[:3].reshape(1, 9)).item()
    assert as_dense == pytest.approx(pop[0] * (9 / 8) ** 0.5, rel=1e-9)


def test_the_two_spellings_and_their_errors():
    assert resolve_guidance(cfg_strength=5.0, cfg_interval=[0.5, 1.0]).style == "v1"
    g = resolve_guidance(guidance_strength=7.5, guidance_interval=[0.6, 1.0], guidance_rescale=0.7)
    assert (g.style, g.strength, g.interval, g.rescale) == ("trellis2", 7.5, (0.6, 1.0), 0.7)
    assert resolve_guidance().strength == 3.0      # v1's default
    for bad in (dict(cfg_strength=3.0, guidance_strength=3.0), dict(cfg_interval=[0, 1], guidance_interval=[0, 1]),
                dict(guidance_interval=[0.9, 0.6]), dict(guidance_rescale=-0.1)):
        with pytest.raises(ValueError):
            resolve_guidance(**bad)
    # v1's w and TRELLIS.2's w + 1 are the same guidance, up to rounding.
    g = torch.Generator().manual_seed(3)
    noise, cond = torch.randn(1, 2, 3, 3, 3, generator=g), torch.randn(1, 3, 4, generator=g)
    kw = dict(steps=6, rescale_t=3.0)
    a = FlowEulerGuidanceIntervalSampler().sample(Recorder(), noise, cond, torch.zeros_like(cond), cfg_strength=2.0,
                                                  cfg_interval=[0.5, 1.0], **kw)
    b = FlowEulerGuidanceIntervalSampler().sample(Recorder(), noise, cond, torch.zeros_like(cond),
                                                  guidance_strength=3.0, guidance_interval=[0.5, 1.0], **kw)
    torch.testing.assert_close(a.samples, b.samples, atol=1e-5, rtol=1e-5)
