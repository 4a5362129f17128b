"""Euler samplers for the rectified-flow models, with classifier-free guidance (spec §10; TRELLIS.2 facts §4).

x_t = (1 - t) x_0 + (sigma_min + (1 - sigma_min) t) eps; the network predicts v = (1 - sigma_min) eps - x_0.
Sampling walks a warped time grid from t = 1 (noise) to t = 0 with x <- x - (t_k - t_{k+1}) v_hat.

Extras over the reference, none of which changes its numbers: a progress callback, a cancel check
every step, conditional and unconditional passes batched into one forward (`cfg_batch`), and the
multi-image modes of §11.7 built in rather than patched in from outside.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ...core.callbacks import CancelCheck, StepProgress, check
from ...modules.context_cache import context_cache, for_context
from ...modules.sparse import SparseTensor
from ...modules.sparse.spatial import share_first_copy
from .cuda_graph import GraphedFlow
from .guidance import Guidance, resolve_guidance, rescale_velocity


class SampleResult(dict):
    """A dict whose keys are also attributes (`result.samples`), like the reference's return value."""

    __getattr__ = dict.__getitem__

    def __setattr__(self, key, value):
        self[key] = value


def time_grid(steps: int, rescale_t: float) -> list[float]:
    """t_0 = 1 ... t_steps = 0 in float64, warped by t -> r t / (1 + (r - 1) t)."""
    t = np.linspace(1, 0, steps + 1)
    t = rescale_t * t / (1 + (rescale_t - 1) * t)
    return [float(v) for v in t]


def _batch_size(x) -> int:
    return x.batch_size if isinstance(x, SparseTensor) else x.shape[0]


def _match_batch(cond: torch.Tensor, batch: int) -> torch.Tensor:
    if cond.shape[0] == 1 and batch > 1:
        return cond.expand(batch, *cond.shape[1:])
    return cond


class _Repeated:
    """x repeated n times along the batch, rebuilt cheaply every step (sparse coordinates are fixed).

    For a SparseTensor the repeated coordinates and their cached maps (neighbours, windows, ...) are
    built once per sampling run: the sampler keeps one instance per n for the whole run (`_repeater`), so
    every guided step hands the model the same coordinates object (and a CUDA graph keyed on it replays).
    """

    def __init__(self, n: int):
        self.n, self._coords_of, self._template = n, None, None

    def __call__(self, x):
        if self.n == 1:
            return x
        if not isinstance(x, SparseTensor):
            return torch.cat([x] * self.n, dim=0)
        if self._coords_of is not x.coords:
            coords = torch.cat([x.coords + torch.tensor([k * x.batch_size, 0, 0, 0], dtype=x.coords.dtype,
                                                        device=x.coords.device) for k in range(self.n)])
            self._template = SparseTensor(torch.cat([x.feats] * self.n), coords)
            self._coords_of = x.coords
        return self._template.replace(torch.cat([x.feats] * self.n))

    def share_maps(self, x) -> None:
        """Give x (this run's state, unrepeated) the cached maps of its first copy in the repeated template
        (``share_first_copy``): the unguided steps then run without building them again."""
        if isinstance(x, SparseTensor) and self._template is not None and self._coords_of is x.coords:
            share_first_copy(self._template, x)


def _repeater(run: Optional[dict], n: int) -> _Repeated:
    """The run's `_Repeated` for n branches (a fresh one when called outside a sampling run)."""
    if run is None:
        return _Repeated(n)
    return run.setdefault(("repeat", n), _Repeated(n))


def _split(out, n: int):
    if isinstance(out, SparseTensor):
        return out.feats.chunk(n, dim=0)
    return out.chunk(n, dim=0)


def _feats(x):
    return x.feats if isinstance(x, SparseTensor) else x


class FlowEulerSampler:
    """Plain Euler sampler (no guidance)."""

    def __init__(self, sigma_min: float = 1e-5):
        self.sigma_min = sigma_min

    # ------------------------------------------------------------------ model call
    def _call_model(self, model, x, t: float, cond, **kwargs):
        t_model = torch.full((_batch_size(x),), 1000 * t, dtype=torch.float32, device=_feats(x).device)
        return model(x, t_model, cond, **kwargs)

    def _velocity(self, model, x, t: float, cond, step: int, cfg_batch: bool = True, _run: Optional[dict] = None,
                  **kwargs) -> torch.Tensor:
        """Velocity prediction as a tensor shaped like x's features (no guidance here: cfg_batch unused)."""
        if cond is not None:
            cond = _match_batch(cond, _batch_size(x))
        return _feats(self._call_model(model, x, t, cond, **kwargs))

    # ------------------------------------------------------------------ loop
    def sample(self, model, noise, cond=None, steps: int = 50, rescale_t: float = 1.0, verbose: bool = True,
               progress: StepProgress = None, cancel: CancelCheck = None, cuda_graph: bool = False,
               cache_context: bool = False, **kwargs) -> SampleResult:
        """`cuda_graph=True` replays each distinct forward as a CUDA graph (same numbers, far fewer
        launches); it applies on CUDA devices only. A ``GraphedFlow`` of `model` is used as it is (graphs kept
        from run to run by the caller). `cache_context=True` computes what depends on the condition alone (its
        cast, the cross-attentions' keys and values) at the first step and reuses it for the run (same numbers;
        costs the memory of what is kept, see ``modules.context_cache``)."""
        with context_cache(cache_context):
            return self._loop(model, noise, cond, steps, rescale_t, progress, cancel, cuda_graph, **kwargs)

    def _loop(self, model, noise, cond, steps: int, rescale_t: float, progress: StepProgress, cancel: CancelCheck,
              cuda_graph, **kwargs) -> SampleResult:
        ts = time_grid(steps, rescale_t)
        sparse = isinstance(noise, SparseTensor)
        if isinstance(cuda_graph, GraphedFlow):
            if cuda_graph.model is not model:
                raise ValueError("cuda_graph is a GraphedFlow of another model")
            if _feats(noise).is_cuda:
                model = cuda_graph
        elif cuda_graph and _feats(noise).is_cuda:
            model = GraphedFlow(model)
        x = noise
        run: dict = {}        # what lives for this run only (the CFG batch's repeated coordinates)
        result = SampleResult(samples=None, pred_x_t=[], pred_x_0=[])
        for k in range(steps):
            check(cancel)
            t, t_next = ts[k], ts[k + 1]
            if isinstance(model, GraphedFlow):
                model.steps_left = steps - k - 1
            v = self._velocity(model, x, t, cond, step=k, _run=run, **kwargs)
            xf = _feats(x)
            x0 = (1 - self.sigma_min) * xf - (self.sigma_min + (1 - self.sigma_min) * t) * v
            xf_next = xf - (t - t_next) * v
            x = x.replace(xf_next) if sparse else xf_next
            result.pred_x_t.append(x)
            result.pred_x_0.append(x.replace(x0) if sparse else x0)
            if progress is not None:      # (the reference's `verbose` tqdm bar: callers pass `progress`)
                progress(k + 1, steps)
        result.samples = x
        return result


class FlowEulerCfgSampler(FlowEulerSampler):
    """Euler sampler with classifier-free guidance at every step.

    Strength in TRELLIS v1's spelling, `cfg_strength` w: v = (1 + w) v(cond) - w v(neg_cond); or in TRELLIS.2's,
    `guidance_strength` w: v = w v(cond) + (1 - w) v(neg_cond), one pass only for w = 1 (cond) or w = 0 (neg).
    `guidance_rescale` > 0 adds TRELLIS.2's CFG rescale to a step that mixes both passes (``guidance``)."""

    def _guided(self, step: int, t: float, cfg_interval) -> bool:
        return True

    @staticmethod
    def _conds(cond, step: int, multi_mode: Optional[str]) -> list:
        """Conditions for this step: one image, or K images (multi-image modes, §11.7)."""
        if multi_mode is None:
            return [cond]
        if multi_mode == "stochastic":
            idx = step % cond.shape[0]
            return [cond[idx:idx + 1]]
        if multi_mode == "multidiffusion":
            return [cond[i:i + 1] for i in range(cond.shape[0])]
        raise ValueError(f"multi-image mode must be 'stochastic' or 'multidiffusion', got {multi_mode!r}")

    def _velocity(self, model, x, t: float, cond, step: int, neg_cond=None, guidance: Optional[Guidance] = None,
                  cfg_strength: Optional[float] = None, cfg_interval=None, guidance_strength: Optional[float] = None,
                  guidance_interval=None, guidance_rescale: float = 0.0, cfg_batch: bool = True,
                  multi_mode: Optional[str] = None, _run: Optional[dict] = None, **kwargs):
        if guidance is None:
            guidance = resolve_guidance(cfg_strength, guidance_strength, cfg_interval, guidance_interval,
                                        guidance_rescale)
        b = _batch_size(x)
        want_pos, want_neg = guidance.branches(self._guided(step, t, guidance.interval), neg_cond is not None)
        conds = self._conds(cond, step, multi_mode) if want_pos else []
        branches = [_match_batch(c, b) for c in conds]
        if want_neg:
            branches.append(_match_batch(neg_cond, b))
        # Extra tensor inputs (a texture flow's concat_cond) are per item: such a model runs its passes one by one.
        batchable = not any(isinstance(v, (torch.Tensor, SparseTensor)) for v in kwargs.values())
        if cfg_batch and batchable and len(branches) > 1:
            rep = _repeater(_run, len(branches))
            if multi_mode is None and want_pos:    # the same pair at every guided step: one tensor (context_cache)
                pair = for_context(("cfg_pair", b), (cond, neg_cond), lambda: torch.cat(branches))
            else:
                pair = torch.cat(branches)
            outs = _split(self._call_model(model, rep(x), t, pair, **kwargs), len(branches))
        else:
            if _run and isinstance(x, SparseTensor):
                for key, rep in _run.items():
                    if key[0] == "repeat":
                        rep.share_maps(x)
            outs = [_feats(self._call_model(model, x, t, c, **kwargs)) for c in branches]
        if want_neg:
            *pos, neg = outs
        else:
            pos, neg = outs, None
        v_pos = None if not pos else (pos[0] if len(pos) == 1 else torch.stack(pos).mean(dim=0))
        v = guidance.combine(v_pos, neg)
        if guidance.rescale > 0 and v_pos is not None and neg is not None:
            v = rescale_velocity(x, t, v_pos, v, guidance.rescale, self.sigma_min)
        return v

    def sample(self, model, noise, cond, neg_cond, steps: int = 50, rescale_t: float = 1.0,
               cfg_strength: Optional[float] = None, verbose: bool = True, progress: StepProgress = None,
               cancel: CancelCheck = None, guidance_strength: Optional[float] = None, guidance_rescale: float = 0.0,
               cfg_interval=None, guidance_interval=None, **kwargs) -> SampleResult:
        """`cfg_strength` (v1, default 3) or `guidance_strength` (TRELLIS.2); `guidance_rescale` (default 0: off)."""
        guidance = resolve_guidance(cfg_strength, guidance_strength, cfg_interval, guidance_interval,
                                    guidance_rescale)
        return super().sample(model, noise, cond, steps=steps, rescale_t=rescale_t, verbose=verbose,
                              progress=progress, cancel=cancel, neg_cond=neg_cond, guidance=guidance, **kwargs)


class FlowEulerGuidanceIntervalSampler(FlowEulerCfgSampler):
    """CFG only while interval[0] <= t <= interval[1] (inclusive, on the float64 grid); the interval is named
    `cfg_interval` (v1) or `guidance_interval` (TRELLIS.2), default [0, 1]."""

    def _guided(self, step: int, t: float, cfg_interval) -> bool:
        return cfg_interval[0] <= t <= cfg_interval[1]
