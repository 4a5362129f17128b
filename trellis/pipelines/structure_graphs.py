"""The sparse-structure flow's kept CUDA graphs made while the rest of the pipeline still loads: ``capture`` calls the
flow as a stage-1 run does (the CFG pair, batch 2, and the unguided steps' single batch; zeros of the job's shapes and
dtypes) until each of the two is captured; ``TrellisPipeline.keep_structure_graphs`` then adopts them, so that the
first job replays them instead of paying the flow's eager first calls and the captures
(docs/benchmarks/app.md#launch-to-first-glb). A graph copies each call's inputs in: the values it was made with do not
matter, only the shapes and dtypes.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch

from .samplers.cuda_graph import GraphedFlow

__all__ = ["KeptGraphs", "flow_weights", "condition_shape", "capture", "warm_decoder"]


class KeptGraphs(NamedTuple):
    weights: tuple          # flow_weights of the flow when its graphs were captured
    graphed: GraphedFlow


def flow_weights(flow: torch.nn.Module) -> tuple:
    """The addresses and dtypes a graph of `flow` replays: graphs made with other ones must not replay."""
    return tuple((t.data_ptr(), t.dtype) for t in (*flow.parameters(), *flow.buffers()))


def condition_shape(cond_model) -> tuple:
    """(tokens, channels) of the image conditioner's answer for one image: its patches, the class token and the
    registers (spec §9: 37² + 1 + 4 = 1374 tokens of 1024 for DINOv2 ViT-L/14 at 518 px)."""
    a = cond_model.vit.args
    return (a["img_size"] // a["patch_size"]) ** 2 + 1 + a.get("num_register_tokens", 0), a["embed_dim"]


def capture(flow, cond_shape: tuple, dtype: torch.dtype, cancel: Optional[Callable[[], bool]] = None) -> KeptGraphs:
    """The kept graphs of `flow` (on a CUDA device; its torso set to `dtype` first, as the pipeline will) for the calls
    of a stage-1 run with batched CFG on a condition of `cond_shape` (tokens, channels). The flow must not be in use
    elsewhere meanwhile; no generator is touched. ``cancel()`` is checked between calls; RuntimeError where a graph
    was not made (cancelled, or its capture failed) or the weights moved meanwhile (the graphs replay the addresses
    they were captured with: ``KeptGraphs.weights``)."""
    device = next(flow.parameters()).device
    if device.type != "cuda":
        raise ValueError("the structure flow's graphs are made on a CUDA device")
    reso = flow.resolution
    with torch.no_grad():
        flow.set_torso_dtype(dtype)
        weights = flow_weights(flow)
        graphed = GraphedFlow(flow, kept=True)
        for batch in (2, 1):          # as the sampler calls it: the guided steps' pair, then the unguided steps
            x = torch.zeros(batch, flow.in_channels, reso, reso, reso, device=device)
            t = torch.full((batch,), 500.0, dtype=torch.float32, device=device)
            cond = torch.zeros(batch, *cond_shape, device=device)
            key = GraphedFlow.key(x, t, cond)
            for _ in range(GraphedFlow.EAGER_CALLS + 1):
                if key in graphed.graphs or (cancel is not None and cancel()):
                    break
                graphed(x, t, cond)
            if graphed.graphs.get(key) is None:      # cancelled, or a capture that failed: nothing to keep
                raise RuntimeError("the structure flow's graphs were not captured")
        torch.cuda.current_stream(device).synchronize()
    if flow_weights(flow) != weights:            # converted or moved meanwhile (the pipeline's own set-up)
        raise RuntimeError("the structure flow's weights moved while its graphs were captured")
    return KeptGraphs(weights, graphed)


def warm_decoder(decoder, channels: int, resolution: int, dtype: torch.dtype) -> None:
    """The occupancy decoder's first call (its convolutions' first use at the stage's shapes) and the occupied voxels'
    gather, as stage 1 ends, on a zero latent of `channels` x `resolution`³; its torso set to `dtype` first, as the
    pipeline will. The decoder must not be in use elsewhere meanwhile; no generator is touched."""
    device = next(decoder.parameters()).device
    with torch.no_grad():
        decoder.set_torso_dtype(dtype)
        z = torch.zeros(1, channels, resolution, resolution, resolution, device=device)
        torch.argwhere(decoder(z) > 0)
