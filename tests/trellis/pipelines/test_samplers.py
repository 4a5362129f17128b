"""Flow Euler samplers against a direct transcription of spec §10 (time grid, Euler step, CFG, interval)."""
import pytest
import torch

from trellis.modules.sparse import SparseTensor
from trellis.pipelines.samplers import (FlowEulerCfgSampler, FlowEulerGuidanceIntervalSampler, FlowEulerSampler,
                                        time_grid)
from trellis.core.callbacks import Cancelled

SPEC_GRID_25_3 = [1.0, 0.9863, 0.9718, 0.9565, 0.9403, 0.9231, 0.9048, 0.8852, 0.8644, 0.8421, 0.8182, 0.7925,
                  0.7647, 0.7347, 0.7021, 0.6667, 0.6279, 0.5854, 0.5385, 0.4865, 0.4286, 0.3636, 0.2903, 0.2069,
                  0.1111, 0.0]


class ToyFlow(torch.nn.Module):
    """A deterministic stand-in network whose output depends on x, t and cond, item by item."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, cond):
        self.calls.append((t.clone(), cond.shape[0]))
        feats = x.feats if isinstance(x, SparseTensor) else x
        if isinstance(x, SparseTensor):
            per_row_t = t[x.coords[:, 0].long()][:, None]
            per_row_c = cond.mean(dim=(1, 2))[x.coords[:, 0].long()][:, None]
            return x.replace(torch.sin(feats) * per_row_t / 1000 + per_row_c)
        shape = (-1,) + (1,) * (feats.ndim - 1)
        return torch.sin(feats) * (t / 1000).view(shape) + cond.mean(dim=(1, 2)).view(shape)


def reference_loop(model, x, cond, neg, steps, rescale_t, w=0.0, interval=None, sigma_min=1e-5):
    """Spec §10 written out plainly, sequential conditional and unconditional passes."""
    ts = time_grid(steps, rescale_t)
    xs, x0s = [], []
    for k in range(steps):
        t, tn = ts[k], ts[k + 1]
        tt = torch.full((x.shape[0],), 1000 * t, dtype=torch.float32)
        v = model(x, tt, cond)
        if w and (interval is None or interval[0] <= t <= interval[1]):
            v = (1 + w) * v - w * model(x, tt, neg)
        x0s.append((1 - sigma_min) * x - (sigma_min + (1 - sigma_min) * t) * v)
        x = x - (t - tn) * v
        xs.append(x)
    return x, xs, x0s


def test_time_grid_matches_spec():
    grid = time_grid(25, 3.0)
    assert grid[0] == 1.0 and grid[-1] == 0.0
    assert grid == pytest.approx(SPEC_GRID_25_3, abs=6e-5)
    assert sum(0.5 <= t <= 1.0 for t in grid[:-1]) == 19


@pytest.mark.parametrize("cfg_batch", [True, False])
def test_guidance_interval_sampler_matches_spec(cfg_batch):
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 3, 4, 4, 4, generator=g)
    cond, neg = torch.randn(2, 5, 6, generator=g), torch.zeros(2, 5, 6)
    out = FlowEulerGuidanceIntervalSampler(1e-5).sample(ToyFlow(), noise, cond, neg, steps=25, cfg_strength=5.0,
                                                        cfg_interval=[0.5, 1.0], rescale_t=3.0, verbose=False,
                                                        cfg_batch=cfg_batch)
    ref, xs, x0s = reference_loop(ToyFlow(), noise, cond, neg, 25, 3.0, 5.0, (0.5, 1.0))
    torch.testing.assert_close(out.samples, ref, atol=1e-6, rtol=1e-6)
    assert len(out.pred_x_t) == len(out.pred_x_0) == 25
    for a, b in zip(out.pred_x_0, x0s):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert out["samples"] is out.samples


def test_guided_passes_counted():
    model = ToyFlow()
    x = torch.randn(1, 2, 2, 2, 2)
    FlowEulerGuidanceIntervalSampler().sample(model, x, torch.ones(1, 3, 4), torch.zeros(1, 3, 4), steps=25,
                                              cfg_strength=5.0, cfg_interval=[0.5, 1.0], rescale_t=3.0,
                                              cfg_batch=False)
    assert len(model.calls) == 19 * 2 + 6
    assert model.calls[0][0].item() == pytest.approx(1000.0)    # first step guided (t = 1 is inside)


def test_cfg_and_plain_samplers_and_cond_broadcast():
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(3, 2, 4, 4, 4, generator=g)
    cond = torch.randn(1, 4, 5, generator=g)                       # batch 1 -> repeated to 3
    out = FlowEulerCfgSampler().sample(ToyFlow(), noise, cond, torch.zeros_like(cond), steps=7, cfg_strength=3.0,
                                       rescale_t=1.0)
    ref, _, _ = reference_loop(ToyFlow(), noise, cond.expand(3, -1, -1), torch.zeros(3, 4, 5), 7, 1.0, 3.0)
    torch.testing.assert_close(out.samples, ref, atol=1e-6, rtol=1e-6)
    plain = FlowEulerSampler().sample(ToyFlow(), noise, cond.expand(3, -1, -1), steps=5)
    ref, _, _ = reference_loop(ToyFlow(), noise, cond.expand(3, -1, -1), None, 5, 1.0)
    torch.testing.assert_close(plain.samples, ref)


def test_sparse_sampling_batched_cfg_equals_sequential():
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 2, 3], [1, 4, 4, 4], [1, 0, 1, 0], [1, 2, 2, 2]], dtype=torch.int32)
    noise = SparseTensor(torch.randn(5, 3, generator=torch.Generator().manual_seed(2)), coords)
    cond = torch.randn(2, 3, 4)
    kw = dict(steps=6, cfg_strength=2.0, cfg_interval=[0.3, 1.0], rescale_t=2.0)
    a = FlowEulerGuidanceIntervalSampler().sample(ToyFlow(), noise, cond, torch.zeros_like(cond), cfg_batch=True, **kw)
    b = FlowEulerGuidanceIntervalSampler().sample(ToyFlow(), noise, cond, torch.zeros_like(cond), cfg_batch=False, **kw)
    assert isinstance(a.samples, SparseTensor) and torch.equal(a.samples.coords, coords)
    torch.testing.assert_close(a.samples.feats, b.samples.feats, atol=1e-6, rtol=1e-6)
    assert isinstance(a.pred_x_0[0], SparseTensor)


def test_progress_and_cancel():
    seen = []
    FlowEulerSampler().sample(ToyFlow(), torch.randn(1, 1, 2, 2, 2), torch.zeros(1, 1, 1), steps=4,
                              progress=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    calls = iter([False, False, True])
    model = ToyFlow()
    with pytest.raises(Cancelled):
        FlowEulerCfgSampler().sample(model, torch.randn(1, 1, 2, 2, 2), torch.zeros(1, 1, 1), torch.zeros(1, 1, 1),
                                     steps=10, cancel=lambda: next(calls))
    assert len(model.calls) == 2              # stopped before the third step


def test_multi_image_modes():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 2, 2, 2, generator=g)
    conds = torch.randn(3, 4, 5, generator=g)
    neg = torch.zeros(1, 4, 5)
    sampler = FlowEulerCfgSampler()
    model = ToyFlow()
    # stochastic: step k sees image k mod K
    v = sampler._velocity(model, x, 0.7, conds, step=4, neg_cond=neg, cfg_strength=2.0, multi_mode="stochastic")
    t = torch.tensor([700.0])
    expected = 3.0 * model(x, t, conds[1:2]) - 2.0 * model(x, t, neg)
    torch.testing.assert_close(v, expected)
    # multidiffusion: mean of the conditional velocities
    v = sampler._velocity(model, x, 0.7, conds, step=0, neg_cond=neg, cfg_strength=2.0, multi_mode="multidiffusion")
    mean = torch.stack([model(x, t, conds[i:i + 1]) for i in range(3)]).mean(0)
    torch.testing.assert_close(v, 3.0 * mean - 2.0 * model(x, t, neg))
    with pytest.raises(ValueError, match="multi-image mode"):
        sampler._velocity(model, x, 0.7, conds, step=0, neg_cond=neg, multi_mode="vote")


def test_cfg_batch_builds_the_repeated_structure_once_per_run():
    """Batched CFG hands the network the same repeated coordinates (and so the same cache of neighbour maps,
    windows, sequence lengths) at every guided step of a run: before, each step built a new repeated tensor
    and every sparse map was rebuilt per step (and a CUDA graph keyed on the coordinates never replayed)."""
    class Recording(ToyFlow):
        def forward(self, x, t, cond):
            self.seen.append((x.coords, "maps" in x.cache))
            x.cache.setdefault("maps", object())          # what a sparse conv would cache on first use
            return super().forward(x, t, cond)

    g = torch.Generator().manual_seed(0)
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 2, 3, 1]], dtype=torch.int32)
    noise = SparseTensor(torch.randn(3, 4, generator=g), coords)
    cond, neg = torch.randn(1, 5, 6, generator=g), torch.zeros(1, 5, 6)
    model = Recording()
    for run in range(2):
        model.seen = []
        FlowEulerGuidanceIntervalSampler().sample(model, noise, cond, neg, steps=5, cfg_strength=3.0,
                                                  cfg_interval=(0.0, 1.0), cfg_batch=True, verbose=False)
        assert len(model.seen) == 5
        first = model.seen[0][0]
        assert first.shape[0] == 6 and all(c is first for c, _ in model.seen)
        assert [cached for _, cached in model.seen] == [False] + [True] * 4
