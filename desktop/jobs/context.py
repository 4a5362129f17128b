"""What a step needs to run one job, handed to it by the worker: the steps (steps.py) reach nothing else, neither
the worker nor the runner.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..families import get_family
from .folder import JobFolder
from .job import Job
from .progress import ProgressTracker
from .stage_times import StageTimes


@dataclass
class JobContext:
    device: str                       # where the job runs ("cpu", "cuda:1")
    model_path: str                   # the image model, as settings.json names it
    outputs_dir: Path                 # the job folder goes in here
    # (the image pipeline, its model) or, for "text:<size>", (that text pipeline, where it was loaded from); loaded
    # on first use, so that a step checks its input before it waits for a model.
    pipeline: Callable[[str, ProgressTracker], tuple]
    background_remover: Callable[[], object]         # the loaded image pipeline's, or None (then the shared one)
    folder: Callable[[], JobFolder]                  # makes the job's folder (once): its lock held until the end
    cancelled: Callable[[], bool]                    # the job was asked to stop
    keep: Callable[[dict], None]                     # keeps {"gaussian", "mesh"} for exports (keep_result jobs)
    lock: threading.Lock = field(default_factory=threading.Lock)    # guards what readers of the job see
    on_progress: Optional[Callable] = None           # also told of every progress report: (job, Progress)
    source_result: Optional[dict] = None             # export jobs: the kept result they write from
    source_files: dict = field(default_factory=dict)  # export jobs: the files of the job they export
    # settings.json's entries that the job's caller knows and the job does not (a batch item's name and key)
    record: dict = field(default_factory=dict)

    # how long each stage took in this worker's earlier jobs (the next job's fraction and ETA); None: not learned
    stage_times: Optional[StageTimes] = None

    def tracker(self, job: Job, stages: list) -> ProgressTracker:
        """The job's progress over `stages`: reports turned into its fraction and ETA (learned from the earlier jobs
        of its kind: where the job's family has pipeline types, from those of its type; an approximate attention
        samples at another pace, so its jobs learn apart too)."""
        times = self.stage_times
        family = getattr(job, "family", None)
        parts = []
        if family and get_family(family).times_by_pipeline_type:
            parts.append(job.settings.pipeline_type)
        if job.settings.attention != "exact":
            parts.append(job.settings.attention)
        if times is not None and parts:
            times = times.of("/".join(parts))
        return ProgressTracker(job, stages, self.lock, self.on_progress, times=times)
