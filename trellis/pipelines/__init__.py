"""Pipelines: samplers, preprocessing, the image-to-3D pipeline and its memory policy."""
from __future__ import annotations

import json
import os

from . import samplers
from .memory import MemoryPolicy, pick_preset
from .trellis_image_to_3d import EmptyStructureError, TrellisImageTo3DPipeline

__all__ = ["samplers", "MemoryPolicy", "pick_preset", "EmptyStructureError", "TrellisImageTo3DPipeline",
           "from_pretrained"]

_PIPELINES = {"TrellisImageTo3DPipeline": TrellisImageTo3DPipeline}


def from_pretrained(path: str):
    """Read `name` from pipeline.json and build that pipeline (spec §12)."""
    from .trellis_image_to_3d import _resolve_pipeline_json

    with open(_resolve_pipeline_json(path), encoding="utf-8") as f:
        name = json.load(f).get("name")
    if name not in _PIPELINES:
        raise ValueError(f"{os.path.join(path, 'pipeline.json')}: unknown pipeline {name!r}")
    return _PIPELINES[name].from_pretrained(path)
