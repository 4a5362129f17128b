"""A job that ended without its files but after its sampling (stopped, killed, a full disk or out of memory while its
files were written) keeps its folder's result.npz, written whole or not at all: an export makes its files again from
it, without sampling. Which jobs those are, why one cannot be exported, and the words each surface adds."""
from __future__ import annotations

from pathlib import Path

from .folder import JobFolder
from .job import JobState

# Appended where such a job's failure is shown; `how` names the surface's own way to export it.
SAMPLING_KEPT = "Its sampling finished (its result.npz is kept): {how} makes its files without sampling again."
# The ended states whose folder may hold a finished sampling (interrupted jobs are cancelled ones).
STOPPED = (JobState.FAILED, JobState.CANCELLED)


def folder_result(job):
    """The job's folder's result.npz when it is there (None otherwise)."""
    out_dir = getattr(job, "out_dir", None)     # the page's status also reads job-like records
    if not out_dir:
        return None
    path = JobFolder(Path(out_dir)).file("result")
    return path if path.is_file() else None


def sampling_kept(job) -> bool:
    """True when `job` ended failed, cancelled or interrupted after its sampling: its folder holds result.npz (an
    export job samples nothing; a damaged folder's records cannot be trusted)."""
    if job.state not in STOPPED or getattr(job, "kind", None) == "export" or job.error_kind == "damaged":
        return False
    return folder_result(job) is not None


def kept_words(job, how: str) -> str:
    """SAMPLING_KEPT with `how` when `sampling_kept(job)`, else ""."""
    return SAMPLING_KEPT.format(how=how) if sampling_kept(job) else ""


def with_kept_words(text, job, how: str):
    """`text` (a failure's words) followed by `kept_words`, when there are some."""
    words = kept_words(job, how)
    return f"{text.rstrip()} {words}" if words and text else (text or words or text)


def export_refusal(job):
    """Why the ended or running `job` cannot be exported from its folder (None when it can): it has not ended, its
    folder is damaged, or its sampling did not finish."""
    if job.state not in JobState.FINISHED:
        return f"job {job.id} is {job.state}: it can be exported once it has ended"
    if job.state == JobState.DONE:
        return None
    if job.error_kind == "damaged":
        return f"job {job.id} cannot be exported: its folder is damaged ({job.detail})"
    if job.kind != "export" and folder_result(job) is not None:
        return None
    ended = "interrupted" if job.error_kind == "interrupted" else job.state
    return (f"job {job.id} ended ({ended}) before its sampling finished (its folder keeps no result.npz), so there "
            "is nothing to export: run the job again")
