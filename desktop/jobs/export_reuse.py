"""What an export takes from the job it exports instead of making it again: the preview video. The preview is a
turntable of the Gaussians, which an export never changes, so the source's preview.mp4 is the export's as long as
its frames, size and rate are the same; it is then linked (or copied) into the export's folder, not rendered."""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

from ..settings import GenerationSettings
from .folder import JobFolder, atomic_path
from .job import Job

# The settings a preview video depends on, besides the Gaussians.
PREVIEW_FIELDS = ("video_frames", "video_resolution", "video_fps")


def source_preview(source_files: dict, settings: GenerationSettings) -> str | None:
    """The source job's preview.mp4 (`source_files`: its Job.files) when an export with `settings` asks for a
    preview and would render this very video; otherwise None."""
    path, record = source_files.get("mp4"), source_files.get("settings")
    if "mp4" not in settings.formats or not path or not record or not os.path.isfile(path):
        return None
    used = (JobFolder(Path(record).parent).settings_record() or {}).get("settings")
    if not isinstance(used, dict):
        return None
    return str(path) if all(used.get(name) == getattr(settings, name) for name in PREVIEW_FIELDS) else None


def without_preview(settings: GenerationSettings) -> GenerationSettings | None:
    """`settings` for the files left to make once the preview is taken from the source; None when none is left."""
    rest = tuple(kind for kind in settings.formats if kind != "mp4")
    return dataclasses.replace(settings, formats=rest) if rest else None


def link_preview(job: Job, folder: JobFolder, source: str) -> dict:
    """`source` as the job folder's preview.mp4: a hard link where the disk allows it, else a copy (atomic either
    way; timings["export"]["mp4_from_source"]: its seconds); its files."""
    t = time.perf_counter()
    dest = folder.file("mp4")
    with atomic_path(dest) as tmp:
        try:
            os.link(source, tmp)
        except OSError:                     # another disk, or a file system without hard links
            shutil.copyfile(source, tmp)
    job.timings.setdefault("export", {})["mp4_from_source"] = time.perf_counter() - t
    return {"mp4": str(dest)}
