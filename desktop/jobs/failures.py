"""Why a job ended badly: each exception becomes one of ERROR_KINDS and a message that says what to do."""
from __future__ import annotations

import errno
import os
from typing import Optional

import torch

from trellis.core.callbacks import Cancelled

from ..options import DEFAULT_MODEL
from .job import ERROR_KINDS, InputError, ModelLoadError  # noqa: F401  (ERROR_KINDS: the kinds classified here)

# A decoder that gives NaN or out-of-range values (damaged weights, an fp16 overflow) leaves no surface to export.
EMPTY_MESH = ("the model made an empty mesh (no faces): its mesh decoder gave no surface for this input. Try another "
              "seed or image, or the fp32 precision (--precision fp32); if every job ends so, the model's files may "
              "be damaged: download them again.")


def is_oom(err: BaseException) -> bool:
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text.lower() or "can't allocate memory" in text)


# Free space under which a disk counts as the full one (a job's scratch files need more than this).
NEARLY_FULL_BYTES = 8 * 2 ** 20
# What a native library (USD, ffmpeg) says of a full disk in an error that is not an OSError.
DISK_FULL_WORDS = (os.strerror(errno.ENOSPC), "No space left on device")


def is_disk_full(err: BaseException) -> bool:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            return True
        if not isinstance(err, OSError) and any(words in str(err) for words in DISK_FULL_WORDS):
            return True
        err = err.__cause__ or err.__context__
    return False


def full_temp_folder(err: BaseException, outputs_dir) -> Optional[str]:
    """The system's temporary folder when it is the full one (a writer's scratch files go there; the error seldom
    names the file): its disk has almost no room left and the outputs folder's has; else None."""
    import tempfile

    temp = tempfile.gettempdir()
    return temp if nearly_full(temp) and not nearly_full(outputs_dir) else None


def nearly_full(path) -> bool:
    """Whether the disk of `path` (or of its nearest existing parent) has under NEARLY_FULL_BYTES free."""
    import shutil

    if not path:
        return False
    path = os.path.abspath(os.fspath(path))
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free < NEARLY_FULL_BYTES
    except OSError:
        return False


# How a folder the job writes into can be taken away under it: removed (or moved), made read-only, locked.
FOLDER_ERRNOS = (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS)


def folder_lost(err: BaseException, outputs_dir) -> Optional[str]:
    """The message for a file of the outputs folder that could not be written or read because its folder was
    removed or made unwritable while the job ran (a user, a sync client or an antivirus did it; not the app's fault
    and no full disk); None for any other error. Names the folder, not the hidden partial file being written."""
    if not (isinstance(err, OSError) and isinstance(err.filename, (str, bytes, os.PathLike)) and outputs_dir) \
            or err.errno not in FOLDER_ERRNOS:
        return None
    path = os.path.abspath(os.fsdecode(err.filename))
    root = os.path.abspath(os.fspath(outputs_dir))
    try:
        if os.path.commonpath([path, root]) != root:
            return None
    except ValueError:                    # another drive (Windows)
        return None
    inner = os.path.relpath(os.path.dirname(path), root)
    folder = root if inner == os.curdir else os.path.join(root, inner.split(os.sep)[0])   # the job's own folder
    if not os.path.isdir(os.path.dirname(path)):
        return (f"the job's folder {folder} was removed (or moved) while the job ran, its input and settings with "
                "it, so its files could not be written: submit the job again; other jobs are not affected.")
    if err.errno == errno.ENOENT:
        return None
    return (f"cannot write the job's files in {folder} ({err.strerror or err}): the folder was made read-only or "
            "another program holds it. Let this user write there (or choose another outputs folder), then run the "
            "job again.")


def classify_failure(err: BaseException, outputs_dir, device: str, error_file: Optional[str] = None,
                     vram_budget: Optional[float] = None, stage: str = "") -> tuple:
    """(kind, user-facing message) for an exception that ended a job; `error_file`: where its details
    are written (an unexpected error's message points there), None when the job has no folder; `vram_budget`: the
    job's VRAM budget in GiB (an out-of-memory error on a GPU then says it hit the budget); `stage`: where the job
    was, in the user's words (an out-of-memory error names it)."""
    from trellis.pipelines import EmptyStructureError
    from trellis.pipelines.preprocess import BackgroundRemovalUnavailable

    if isinstance(err, Cancelled):
        return "cancelled", "cancelled"
    from trellis.export import DamagedResultError, QuadTargetError
    from trellis.representations.voxels import MeshInputError

    # A damaged result.npz is the export's input, whatever it would have run into (NaN, a claimed 12 TB array).
    if isinstance(err, (InputError, MeshInputError, DamagedResultError, QuadTargetError)):
        return "input", f"bad input: {err}"
    if isinstance(err, EmptyStructureError):
        return "empty", str(err)
    from trellis.export import EmptyMeshError

    if isinstance(err, EmptyMeshError):
        return "empty", EMPTY_MESH
    if is_oom(err):
        where = f" while {stage}" if stage else ""
        if str(device).startswith("cuda") and vram_budget is not None:
            return "oom", (f"out of GPU memory{where} within the VRAM budget of {vram_budget:g} GiB (vram_budget, "
                           f"--vram-budget): raise the budget, or lower the texture size or the bake views, or "
                           f"leave the budget empty to use what the GPU has free. The memory was freed; the app "
                           f"keeps running.")
        if str(device).startswith("cuda"):
            return "oom", (f"out of GPU memory{where}: try the low-vram preset (--preset low-vram), a smaller texture "
                           "size or fewer steps, and close other programs that use the GPU. The memory was freed; "
                           "the app keeps running.")
        return "oom", (f"out of memory{where}: close other programs, or try the fast preset (--preset fast) or a smaller "
                       "texture size. The memory was freed; the app keeps running.")
    if is_disk_full(err):
        temp = full_temp_folder(err, outputs_dir)
        if temp is not None:
            return "disk", (f"the temporary folder is full ({temp}): free some disk space there, or point TMPDIR (TEMP "
                            "on Windows) at a folder on a disk with room, then try again.")
        return "disk", (f"the outputs folder is full ({outputs_dir}): free some disk space there or choose "
                        "another outputs folder, then try again.")
    if isinstance(err, ModelLoadError):
        return "model", str(err)
    if isinstance(err, BackgroundRemovalUnavailable):
        return "background_removal", str(err)
    lost = folder_lost(err, outputs_dir)
    if lost is not None:
        return "disk", lost
    if isinstance(err, OSError) and err.filename:
        return "internal", f"could not write or read {err.filename}: {err.strerror or err}"
    where = f" The details are in {error_file}." if error_file else ""
    return "internal", f"unexpected error ({type(err).__name__}: {err}).{where}"


def model_load_message(model: str, err: BaseException) -> str:
    """What to do when the pipeline at `model` (a folder or a hub repo) could not be loaded."""
    if isinstance(err, RuntimeError) and "DINOv2" in str(err):     # the image encoder's own download
        return f"could not load the image encoder of the model: {err}"
    from trellis.models import WeightsFileError

    if isinstance(err, OSError) and not isinstance(err, WeightsFileError) and err.filename \
            and not isinstance(err, FileNotFoundError):
        err = WeightsFileError(err.filename, err.strerror or str(err), err.errno)  # e.g. pipeline.json unreadable
    if isinstance(err, WeightsFileError):
        again = (f"re-download it with `python -m installer weights --repair` (the app's own model files) "
                 f"or `hf download {DEFAULT_MODEL} --local-dir {model}`")
        if err.errno in (errno.EACCES, errno.EPERM):
            again = f"let this user read it (e.g. chmod -R a+rX {model}), or {again}"
        return f"could not load the model from {model}: {err}; {again}."
    local = os.path.exists(model) or os.path.isabs(model) or model.startswith(".")
    if local:
        return (f"could not load the model from {model}: {str(err).rstrip('.?!')}. The folder must hold pipeline.json and ckpts/ "
                f"(a copy of {DEFAULT_MODEL}).")
    return (f"could not load the model {model!r} ({type(err).__name__}: {err}). Check the internet connection "
            f"and try again, or download the model with `hf download {model} --local-dir DIR` (on any computer "
            f"with internet access, then copy DIR here) and pass --model DIR.")


def drop_tracebacks(err: BaseException) -> None:
    """Drop the tracebacks of `err` and its causes: their frames hold the run's tensors."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        err.__traceback__ = None
        err = err.__cause__ or err.__context__
