"""The runner's queue: the jobs waiting for a worker, in order, each with the runner's record of it (`Entry`),
under one lock that also guards what the readers of a job see (its state and progress).

A worker takes the first job it may run (`take`): an export job only on the device that holds its result. The
queue also carries the runner's stop (`stopping`) and its call off of a warm-up (`warm_cancel`). With `max_waiting`,
a job past that many waiting ones is refused (QueueFullError): a server's clients cannot queue without end.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from .folder import JobFolder
from .job import Job, JobState, Progress

# What `take` gives a worker that is asked to warm up while no job waits for it.
WARMUP = object()


class QueueFullError(RuntimeError):
    """The queue holds its most waiting jobs; `retry_after_s`: a guess of when one will have started."""

    def __init__(self, waiting: int, retry_after_s: int = 30):
        super().__init__(f"the queue is full: {waiting} jobs are waiting already; try again later (in about "
                         f"{retry_after_s} s), or cancel a queued job")
        self.waiting, self.retry_after_s = waiting, retry_after_s


@dataclass
class Entry:
    """The runner's record of a job from its submit to its end (the job itself holds only what callers read)."""
    job: Job
    device: Optional[str] = None            # export jobs run on the device that holds their result
    source_result: Optional[dict] = None    # export jobs: the result they write from, until they end
    interrupted: Optional[str] = None       # why the app stopped it (JobRunner.shutdown(reason=)), as its message
    folder: Optional[JobFolder] = None      # its folder once made: its lock is released when the job ends
    source_folder: Optional[JobFolder] = None   # export jobs whose result is not in memory: read from here


class JobQueue:
    def __init__(self, max_waiting: Optional[int] = None):
        if max_waiting is not None and max_waiting < 1:
            raise ValueError(f"max_waiting must be at least 1, not {max_waiting}")
        self.max_waiting = max_waiting
        self.lock = threading.Lock()
        self.wakeup = threading.Condition(self.lock)
        self.waiting: collections.deque = collections.deque()   # entries, first come first
        self.live: dict = {}                    # job id -> entry, from submit to end
        self.stopping = False
        self.warm_cancel = threading.Event()

    def check_room(self) -> None:
        """QueueFullError when no other job may wait (the caller holds `lock`)."""
        if self.max_waiting is not None and len(self.waiting) >= self.max_waiting:
            raise QueueFullError(len(self.waiting))

    def put(self, entry: Entry) -> None:
        """Queue a job (the caller holds `lock`; QueueFullError past `max_waiting`); every worker is woken, as one
        bound to a device must reach it."""
        self.check_room()
        self.live[entry.job.id] = entry
        self.waiting.append(entry)
        self.wakeup.notify_all()

    def take(self, device: str, warm_wanted: Callable[[], bool]):
        """The first waiting job this worker may run, marked running; WARMUP when `warm_wanted()` and no job waits
        for it; None once the runner stops and nothing waits for it. Blocks until one of those."""
        with self.wakeup:
            while True:
                entry = next((e for e in self.waiting if e.device in (None, device)), None)
                if entry is not None:
                    break
                if self.stopping:
                    return None
                if warm_wanted():
                    return WARMUP
                self.wakeup.wait()
            self.waiting.remove(entry)
            job = entry.job
            job.state = JobState.RUNNING
            job.started = time.time()
            job.progress = Progress("starting")
            return entry

    def unqueue(self, job_id: str) -> Optional[Entry]:
        """The entry of a waiting job, taken off the queue (the caller holds `lock`); None if it is not waiting."""
        entry = next((e for e in self.waiting if e.job.id == job_id), None)
        if entry is not None:
            self.waiting.remove(entry)
        return entry

    def ended(self, job_id: str) -> None:
        """Forget a job that has ended (the caller holds `lock`)."""
        self.live.pop(job_id, None)

    def position(self, job_id: str) -> Optional[int]:
        """0 for the next job to start, None when not waiting."""
        with self.lock:
            return next((i for i, e in enumerate(self.waiting) if e.job.id == job_id), None)

    def waits_for(self, device: str) -> bool:
        """A job waits that this device's worker may run."""
        with self.lock:
            return any(e.device in (None, device) for e in self.waiting)

    def waiting_jobs(self) -> list:
        return [e.job for e in self.waiting]
