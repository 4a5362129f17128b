"""TRELLIS.2's grids and the cascade's re-quantisation (TRELLIS2_FACTS §3, §3.2), as pure functions.

A pipeline type fixes the sparse-structure grid the shape flow starts on, the output resolution R (the shape
decoder's 16x fine grid) and whether a low-resolution shape pass at 32^3 is re-quantised to the R/16 latent
grid of a second, high-resolution pass. A cascade above 1024 lowers R by 128 until the high-resolution pass has
fewer than `max_num_tokens` voxels (1024 is always accepted).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["PIPELINE_TYPES", "PipelineType", "pipeline_type", "requantise", "cascade_coords", "DECODER_UPSAMPLE",
           "RES_STEP", "MIN_CASCADE_RES", "MAX_NUM_TOKENS"]

DECODER_UPSAMPLE = 16        # the SC-VAE decoders' four C2S levels: latent grid L -> fine grid 16 L
RES_STEP = 128               # how far the token cap lowers a cascade's resolution each time
MIN_CASCADE_RES = 1024       # always accepted, whatever its token count
MAX_NUM_TOKENS = 49152       # the reference run's default cap


class PipelineType(NamedTuple):
    """One pipeline type (facts §3): the structure grid, the flows' resolutions (512: 32^3 latents, 1024: 64^3)
    and the target output resolution."""
    ss_res: int              # the occupancy grid the first shape pass runs on (64^3 pooled 2x to 32^3, or 64^3)
    shape: str               # the (first) shape flow: "512" or "1024"
    cascade: bool            # re-quantise and run the 1024 shape flow again
    tex: str                 # the texture flow
    res: int                 # target output resolution (a cascade may lower it, `cascade_coords`)

    @property
    def cond_sizes(self) -> tuple[int, ...]:
        """The DINOv3 input sizes this type needs: 512 always (the structure stage), 1024 unless type 512."""
        return (512,) if self.res == 512 else (512, 1024)


PIPELINE_TYPES = {
    "512": PipelineType(32, "512", False, "512", 512),
    "1024": PipelineType(64, "1024", False, "1024", 1024),
    "1024_cascade": PipelineType(32, "512", True, "1024", 1024),
    "1536_cascade": PipelineType(32, "512", True, "1024", 1536),
}


def pipeline_type(name) -> PipelineType:
    key = str(name)
    if key not in PIPELINE_TYPES:
        raise ValueError(f"unknown pipeline_type {name!r}; choose from {', '.join(PIPELINE_TYPES)}")
    return PIPELINE_TYPES[key]


def requantise(coords: torch.Tensor, fine_res: int, grid: int) -> torch.Tensor:
    """int32 rows (batch, x, y, z) on a fine_res^3 grid -> the unique rows q = floor((c + 0.5) / fine_res * grid)
    on a grid^3 grid, batch index kept, sorted (torch.unique's order: batch, then x, y, z)."""
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"coords must be [N, 4] (batch, x, y, z), got {tuple(coords.shape)}")
    # (c + 0.5) / fine_res is exact in float64 for any grid the models use; floor of a non-negative value.
    q = torch.floor((coords[:, 1:].double() + 0.5) / fine_res * grid).to(torch.int32)
    rows = torch.cat([coords[:, :1].to(torch.int32), q], dim=1)
    return torch.unique(rows, dim=0)


def cascade_coords(fine_coords: torch.Tensor, fine_res: int, res: int, max_num_tokens: int = MAX_NUM_TOKENS
                   ) -> tuple[torch.Tensor, int]:
    """The high-resolution pass's coords and the final resolution R (facts §3.2): re-quantise to R/16 and, while
    that gives max_num_tokens or more rows and R is not MIN_CASCADE_RES, lower R by RES_STEP and retry."""
    if res % DECODER_UPSAMPLE:
        raise ValueError(f"the resolution must be a multiple of {DECODER_UPSAMPLE}, got {res}")
    while True:
        coords = requantise(fine_coords, fine_res, res // DECODER_UPSAMPLE)
        if coords.shape[0] < max_num_tokens or res <= MIN_CASCADE_RES:
            return coords, res
        res -= RES_STEP
