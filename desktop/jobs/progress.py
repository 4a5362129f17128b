"""A job's progress: (stage, step, total) reports -> the fraction of the whole job and an ETA.

Each stage has a rough share of the run time (STAGE_WEIGHTS); the ETA is elapsed / fraction."""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from ..settings import GenerationSettings
from ..settings_table import MESH_FORMATS
from .job import Job, Progress

# Rough share of the run time of each stage (for the overall fraction and the ETA).
STAGE_WEIGHTS = {"download": 1, "voxelize": 2, "preprocess": 2, "condition": 1, "sparse_structure": 12, "slat": 20, "decode": 4,
                 "video": 8, "encode": 1, "ply": 1, "bake": 30, "shape": 6, "glb": 1, "obj": 1, "stl": 1, "3mf": 1, "usdz": 1}

# Stages whose progress comes as several sub-stages, and about how many there are.
MULTI_STEP = {"bake": 9, "shape": 5}     # simplify, visibility, remove_invisible, fill_holes, final_simplify,
#                                          (bake:) uv_unwrap, observe, bake, inpaint

# The stages of a generation before its files are written.
GENERATE_STAGES = ["preprocess", "condition", "sparse_structure", "slat", "decode"]
TEXT_STAGES = ["condition", "sparse_structure", "slat", "decode"]
VARIANT_STAGES = ["voxelize", "preprocess", "condition", "slat", "decode"]


def textured_files(settings: GenerationSettings) -> bool:
    """Whether a mesh file the settings write holds a texture (GLB, OBJ, USDZ and not geometry-only): without one,
    the export cleans the mesh up and bakes nothing (stage "shape", ``mesh_files.ShapeOnly``)."""
    from trellis.export.formats import FORMATS as FILE_FORMATS

    return not settings.geometry_only and any(FILE_FORMATS[kind].texture_formats for kind in MESH_FORMATS
                                               if kind in settings.formats)


def export_stages(settings: GenerationSettings, overlap: bool = False) -> list:
    """The stages that write the requested files, in the order they run (steps.write_outputs); with `overlap`, the
    preview video, made while the mesh is baked, is waited for last."""
    fmt = set(settings.formats)
    # The mesh files share one bake (clean-up, UV unwrap, texture; the clean-up alone, "shape", where no file holds
    # a texture), then each is written from it.
    meshes = [s for s in MESH_FORMATS if s in fmt]
    preview = ["video", "encode"] if "mp4" in fmt else []
    mesh_stages = ([("bake" if textured_files(settings) else "shape")] if meshes else []) + meshes
    ply = ["ply"] if "ply" in fmt else []
    return ply + (mesh_stages + preview if overlap and meshes else preview + mesh_stages)


class ProgressTracker:
    """Turns (stage, step, total) reports into the job's overall fraction and ETA (elapsed / fraction)."""

    def __init__(self, job: Job, stages: list, lock: threading.Lock, listener: Optional[Callable] = None):
        self.job, self.lock, self.listener = job, lock, listener
        self.weights = {s: STAGE_WEIGHTS.get(s, 1) for s in stages}
        self.order = list(stages)
        self.total_weight = float(sum(self.weights.values())) or 1.0
        self.t0 = time.perf_counter()
        self.substages: dict = {}

    def restart_clock(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, stage: str, step: int, total: int, message: str = "") -> None:
        inner = min(step, total) / total if total else 0.0
        if stage in MULTI_STEP and message:
            # Exports report their own sub-stages, each counting from 0: spread them over the stage.
            names = self.substages.setdefault(stage, [])
            if message not in names:
                names.append(message)
            inner = (names.index(message) + inner) / max(MULTI_STEP[stage], len(names))
        if stage in self.order:
            done = sum(self.weights[s] for s in self.order[:self.order.index(stage)])
            fraction = (done + self.weights[stage] * inner) / self.total_weight
        else:
            fraction = self.job.progress.fraction
        fraction = max(fraction, self.job.progress.fraction)
        elapsed = time.perf_counter() - self.t0
        eta = elapsed * (1 - fraction) / fraction if fraction > 0.02 else None
        with self.lock:
            self.job.progress = progress = Progress(stage, step, total, fraction, eta, elapsed, message)
        if self.listener is not None:
            self.listener(self.job, progress)
