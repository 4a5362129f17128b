"""A job: what was asked (inputs, settings), where it stands (state, progress) and what it made (files).

Plain data, no torch: the worker fills it in, the UI, API and CLI read it."""
from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

from ..families import FAMILIES
from ..settings import GenerationSettings


class JobState:
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    FINISHED = (DONE, FAILED, CANCELLED)


# User-facing names of the stages a job goes through, in order.
STAGE_LABELS = {
    "queued": "Waiting",
    "starting": "Starting",
    "download": "Downloading the text model (once)",
    "load": "Loading model (once)",
    "preprocess": "Preparing image",
    "voxelize": "Reading the 3D model",
    "condition": "Reading the image or prompt",
    "sparse_structure": "Sampling structure",
    "slat": "Sampling details",
    "decode": "Decoding",
    "video": "Rendering preview",
    "encode": "Encoding preview",
    "ply": "Writing PLY",
    "bake": "Baking texture",
    "shape": "Preparing the mesh",
    "glb": "Writing GLB",
    "obj": "Writing OBJ",
    "stl": "Writing STL",
    "3mf": "Writing 3MF",
    "usdz": "Writing USDZ",
    "done": "Done",
    # each family's own stages in its words (TRELLIS.2's shape and texture flows)
    **{stage: words for family in FAMILIES.values() for stage, words in family.stage_words.items()},
}
# The export's own sub-stages (trellis.export.schedule's and trellis.export.pbr.export's progress names) in the
# user's words.
SUBSTAGE_LABELS = {
    "cluster": "simplifying the mesh",
    "orient": "turning the faces outward",
    "project": "finding the surface under each texel",
    "attributes": "painting the materials",
    "simplify": "simplifying the mesh",
    "final_simplify": "simplifying the mesh",
    "visibility": "finding hidden faces",
    "fill_holes": "closing holes",
    "uv_unwrap": "unfolding the surface",
    "observe": "rendering views",
    "bake": "painting the texture",
    "reobserve": "rendering views again",
    "resolve": "painting the texture again",
    "inpaint": "filling unseen texels",
    "normal_map": "baking the normal map",
    "assemble": "assembling the file",
}


# What a job makes: "generate" (image(s) -> asset), "export" (a kept result -> files), "text" (a prompt ->
# asset), "variant" (a 3-D model + a prompt or an image -> the same shape with a new look).
JOB_KINDS = ("generate", "export", "text", "variant")

# Kinds of failure (Job.error_kind), for callers that react differently (HTTP status, retry advice).
# "interrupted": the app was stopped (Ctrl-C, SIGTERM, ...) or killed while the job ran or waited.
# "damaged": an earlier job whose folder's records cannot be read (listed as it is, never run again).
ERROR_KINDS = ("input", "empty", "oom", "disk", "model", "background_removal", "cancelled", "interrupted",
               "internal", "damaged")


class InputError(ValueError):
    """The input image cannot be used (wrong type, broken, giant, fully transparent, ...)."""


class ModelLoadError(RuntimeError):
    """The pipeline could not be loaded (message says how to fix it)."""


class UnknownJobError(LookupError):
    """No job has this id."""


class NoResultError(RuntimeError):
    """An export was asked of a job whose decoded result is not (or no longer) in memory."""


class RerunError(Exception):
    """A job cannot be run again (it has not ended, is an export, or its folder is damaged); says why."""


@dataclass
class Progress:
    stage: str = "queued"
    step: int = 0
    total: int = 0
    fraction: float = 0.0          # of the whole job, 0..1
    eta_s: Optional[float] = None  # seconds left, None while unknown
    elapsed_s: float = 0.0
    message: str = ""
    measured: bool = False         # eta_s comes from this machine's measured stage times, not a rough share

    def __post_init__(self):
        # a sum of shares can round past 1 (Python 3.12's sum() is compensated, a running total is not); the API's
        # schema allows 0..1 only
        self.fraction = min(max(float(self.fraction), 0.0), 1.0)

    @property
    def label(self) -> str:
        """The stage in users' words: a family's own stage in the words its registry entry declares, else the app's."""
        from ..families import FAMILIES

        own = next((w for w in (f.stage_word(self.stage) for f in FAMILIES.values()) if w), None)
        return own or STAGE_LABELS.get(self.stage, self.stage)

    @property
    def detail(self) -> str:
        """The sub-stage in the user's words ("" for none): the message as reported when it has no label."""
        return SUBSTAGE_LABELS.get(self.message, self.message)


@dataclass
class Job:
    id: str
    inputs: list                      # what was submitted: paths (str), PIL images or bytes (images and
                                      # bytes become the path of their copy once the job folder is made)
    settings: GenerationSettings      # as submitted; `used_settings` holds the seed actually used
    kind: str = "generate"            # one of JOB_KINDS
    source_id: Optional[str] = None   # export jobs: the job whose result they export
    keep_result: bool = False         # keep the decoded result in memory for later exports
    prompt: Optional[str] = None      # text jobs, and variants described by a prompt
    mesh: object = None               # variant jobs: the 3-D model (path, or (name, bytes) of an upload)
    family: Optional[str] = None      # generations and exports: the id of the image model family (desktop/families)
    warnings: list = field(default_factory=list)   # what the user should know about a finished job
    state: str = JobState.QUEUED
    progress: Progress = field(default_factory=Progress)
    error: Optional[str] = None       # user-facing message when failed
    error_kind: Optional[str] = None  # one of ERROR_KINDS
    detail: Optional[str] = None      # traceback of an unexpected failure
    out_dir: Optional[str] = None
    files: dict = field(default_factory=dict)     # kind -> absolute path
    timings: dict = field(default_factory=dict)
    used_settings: Optional[GenerationSettings] = None
    asked_settings: Optional[GenerationSettings] = None    # as submitted, where the family's rule changed them
    device: Optional[str] = None
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    finished: Optional[float] = None
    result_kept: bool = False         # its decoded result is in memory: an export can be made from it (the runner
                                      # sets it while it keeps the result)

    def __post_init__(self):
        self._cancel = threading.Event()
        self._done = threading.Event()

    def warn(self, text: str) -> None:
        """A warning for the job's every surface (API `warnings`, CLI, page status); timings.json gets it too."""
        self.warnings.append(text)
        self.timings["warnings"] = list(self.warnings)

    @property
    def seed(self) -> Optional[int]:
        return self.used_settings.seed if self.used_settings else None

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def request_cancel(self) -> None:
        """Ask the running job to stop at its next step (the runner's cancel; the steps poll `cancel_requested`)."""
        self._cancel.set()

    def mark_ended(self) -> None:
        """Wake every `wait()`: called once the job's final state is set."""
        self._done.set()

    @property
    def finished_ok(self) -> bool:
        return self.state == JobState.DONE

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the job is done, failed or cancelled; False on timeout."""
        return self._done.wait(timeout)

    def remote_error(self, outputs_dir) -> Optional[str]:
        """`error` as a client on another computer gets it: a path in the outputs folder `outputs_dir` (or beside
        the job's own folder) named relative to it ("<job folder>/error.json"), none absolute."""
        parent = os.path.dirname(os.fspath(self.out_dir).rstrip("/\\")) if self.out_dir else None
        return relative_paths(self.error, [outputs_dir, parent])

    def to_dict(self) -> dict:
        p = asdict(self.progress)
        p["label"] = self.progress.label
        return {"id": self.id, "kind": self.kind, "source_id": self.source_id, "state": self.state,
                "model_family": self.family, "progress": p, "error": self.error,
                "error_kind": self.error_kind, "out_dir": self.out_dir,
                "files": dict(self.files), "timings": _snapshot(self.timings), "device": self.device,
                "inputs": [describe_input(x) for x in self.inputs], "prompt": self.prompt,
                "mesh": describe_input(self.mesh) if self.mesh is not None else None,
                "warnings": list(self.warnings),
                "settings": (self.used_settings or self.settings).to_dict(), "seed": self.seed,
                "created": self.created, "started": self.started, "finished": self.finished,
                "keep_result": self.keep_result, "result_kept": self.result_kept}


def relative_paths(text: Optional[str], folders) -> Optional[str]:
    """`text` with each path inside one of `folders` named relative to that folder, and each folder named by its
    last part: what it says without this computer's absolute paths."""
    for folder in dict.fromkeys(os.fspath(f).rstrip("/\\") for f in folders if f):
        if not text or not folder:
            continue
        # only where a path starts (not inside a longer one), and only a whole last part ("out", not "out2")
        start = r"(?<![\w.~/\\-])" + re.escape(folder)
        text = re.sub(start + r"[/\\]+", "", text)
        text = re.sub(start + r"(?![\w-]|\.\w)", lambda _: os.path.basename(folder) or folder, text)
    return text


def describe_input(x) -> str:
    """An input as text: its path, or what it is (an upload held in memory)."""
    if isinstance(x, (str, os.PathLike)):
        return os.fspath(x)
    if isinstance(x, (bytes, bytearray, memoryview)):
        return f"<{len(x)} bytes>"
    if isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], (bytes, bytearray)):     # (name, bytes)
        return f"<{x[0]}: {len(x[1])} bytes>"
    return f"<{type(x).__name__}>"


def _snapshot(d: dict) -> dict:
    """A copy of a dict the worker may be adding to (dict() copies without releasing the GIL, so
    another thread can iterate the copy safely), nested dicts included."""
    return {k: _snapshot(v) if isinstance(v, dict) else v for k, v in dict(d).items()}
