"""Inputs and measures shared by the GPU tests (tests/gpu): random splats made on the CPU's generator and moved to
the GPU, one job's stage-1 latent on the tiny pipeline, and the relative RMS error of a result against its twin."""
import math

import torch

from trellis.representations.gaussian import SH_C0, Gaussian

# The structure sampling of kept-graph jobs: 6 steps with the CFG interval and rescale of the reference's settings.
STRUCTURE_PARAMS = {"steps": 6, "cfg_strength": 7.5, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}


def random_splats(n, seed, kind, device="cuda") -> Gaussian:
    """`n` random Gaussians ("shell": a noisy sphere of radius 0.35, else uniform in the unit cube), small and
    anisotropic, colours partly outside [0, 1], on `device`."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "shell":
        d = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
        xyz = d * (0.35 + 0.03 * torch.randn(n, 1, generator=gen))
    else:
        xyz = torch.rand(n, 3, generator=gen) - 0.5
    g = Gaussian([-0.5, -0.5, -0.5, 1.0, 1.0, 1.0], mininum_kernel_size=0.0)
    g.from_xyz(xyz)
    g.from_scaling(torch.exp(torch.empty(n, 3).uniform_(math.log(0.002), math.log(0.03), generator=gen)))
    g.from_rotation(torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1))
    g.from_opacity(torch.empty(n, 1).uniform_(0.02, 0.999, generator=gen))
    g.from_features(((torch.rand(n, 3, generator=gen) * 1.2 - 0.1 - 0.5) / SH_C0).reshape(-1, 1, 3))
    return g.to(device)


def structure_latent(pipe, cond, seed):
    """Stage 1's dense latent (the flow's output before the decoder) of one job on `pipe` (on CUDA)."""
    flow = pipe.models["sparse_structure_flow_model"]
    noise = torch.randn(1, flow.in_channels, *(flow.resolution,) * 3, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return pipe._sample("sparse_structure", pipe.sparse_structure_sampler, "sparse_structure_flow_model",
                            pipe.sparse_structure_sampler_params, noise.cuda(), cond, STRUCTURE_PARAMS, None, None)


def rel_rms(a, b):
    """||a - b|| / ||b|| over all elements, in float32 (a zero b counts as 1e-12)."""
    a, b = a.float(), b.float()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-12)).item()
