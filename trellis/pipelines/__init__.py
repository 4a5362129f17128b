"""Pipelines: samplers, preprocessing, the image- and text-to-3D pipelines of both model families (TRELLIS v1,
TRELLIS.2) and their memory policy."""
from __future__ import annotations

import os

from . import samplers
from .base import EmptyStructureError
from .memory import MemoryPolicy, pick_preset
from .model_sources import ModelNotFoundError
from .trellis_image_to_3d import TrellisImageTo3DPipeline
from .trellis_text_to_3d import PromptTruncatedWarning, TrellisTextTo3DPipeline
from .trellis2_image_to_3d import Trellis2ImageTo3DPipeline
from .trellis2_texturing import Trellis2TexturingPipeline

__all__ = ["samplers", "MemoryPolicy", "pick_preset", "EmptyStructureError", "ModelNotFoundError",
           "PromptTruncatedWarning", "TrellisImageTo3DPipeline", "TrellisTextTo3DPipeline", "Trellis2ImageTo3DPipeline",
           "Trellis2TexturingPipeline", "from_pretrained"]

_PIPELINES = {"TrellisImageTo3DPipeline": TrellisImageTo3DPipeline, "TrellisTextTo3DPipeline": TrellisTextTo3DPipeline,
              "Trellis2ImageTo3DPipeline": Trellis2ImageTo3DPipeline}


def from_pretrained(path: str, **kwargs):
    """Read `name` from pipeline.json and build that pipeline, of either family (spec §12; TRELLIS.2 facts §2.2)."""
    from ..models import read_config_json
    from .model_sources import resolve_pipeline_json

    config = read_config_json(resolve_pipeline_json(path))
    name = config.get("name") if isinstance(config, dict) else None
    if name not in _PIPELINES:
        raise ValueError(f"{os.path.join(path, 'pipeline.json')}: unknown pipeline {name!r}")
    return _PIPELINES[name].from_pretrained(path, **kwargs)
