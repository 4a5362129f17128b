"""The sparse-structure flow's kept CUDA graphs made while the rest of the pipeline still loads: ``capture`` runs one
stage-1 sampling run of the flow, as a job would, on zero noise and the conditioner's answer to a blank image, and
keeps its graphs (a CFG pair and the unguided steps' single batch); ``TrellisPipeline.keep_structure_graphs`` then
adopts them, so that the first job replays them instead of paying the flow's eager first calls and the captures
(docs/benchmarks/app.md#launch-to-first-glb). A graph copies each call's inputs in, so the values it was made with do
not matter, only their shapes and dtypes. The conditioner's first forward (its kernels' first use) happens on the way.
"""
from __future__ import annotations

import contextlib
from typing import Callable, NamedTuple, Optional

import torch

from . import samplers
from .samplers.cuda_graph import GraphedFlow

__all__ = ["KeptGraphs", "flow_weights", "encode_images", "capture"]


class KeptGraphs(NamedTuple):
    weights: tuple          # flow_weights of the flow when its graphs were captured
    graphed: GraphedFlow


def flow_weights(flow: torch.nn.Module) -> tuple:
    """The addresses and dtypes a graph of `flow` replays: graphs made with other ones must not replay."""
    return tuple((t.data_ptr(), t.dtype) for t in (*flow.parameters(), *flow.buffers()))


def encode_images(cond_model, images: torch.Tensor, device: torch.device, half: bool) -> torch.Tensor:
    """The conditioner's tokens for `images` [B,3,H,W] in [0,1], as float32; under fp16 autocast where `half`."""
    precision = torch.autocast("cuda", dtype=torch.float16) if half else contextlib.nullcontext()
    with precision:
        return cond_model(images.to(device, torch.float32)).float()


def capture(flow, cond_model, sampler_entry: dict, dtype: torch.dtype, half_conditioner: bool,
            cancel: Optional[Callable[[], bool]] = None) -> KeptGraphs:
    """The kept graphs of `flow` (on a CUDA device, its torso set to `dtype` first, as the pipeline will) for a run
    of the pipeline.json sampler `sampler_entry` ({"name", "args", "params"}) on a condition of `cond_model`'s
    shape. The flow must not be in use elsewhere meanwhile; no generator is touched."""
    device = next(flow.parameters()).device
    if device.type != "cuda":
        raise ValueError("the structure flow's graphs are made on a CUDA device")
    size = int(cond_model.vit.args["img_size"])
    with torch.no_grad():
        cond = encode_images(cond_model, torch.zeros(1, 3, size, size), device, half_conditioner)
        flow.set_torso_dtype(dtype)
        sampler = getattr(samplers, sampler_entry["name"])(**sampler_entry.get("args", {}))
        graphed = GraphedFlow(flow, kept=True)
        reso = flow.resolution
        noise = torch.zeros(1, flow.in_channels, reso, reso, reso, device=device)
        sampler.sample(flow, noise, cond=cond, neg_cond=torch.zeros_like(cond), **sampler_entry.get("params", {}),
                       verbose=False, cancel=cancel, cfg_batch=True, cuda_graph=graphed, cache_context=True)
        torch.cuda.current_stream(device).synchronize()
    return KeptGraphs(flow_weights(flow), graphed)
