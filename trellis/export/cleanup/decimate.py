"""Spec §15.1: quadric decimation (fast-simplification, MIT), in pieces for large meshes (``pieces``), and in
child processes the caller starts early and collects later (``BackgroundSimplify``).

Arrays are numpy float32 vertices [V,3] and int64 faces [F,3]; torch tensors are accepted too.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable, Optional

import numpy as np

from ...core.callbacks import StageProgress, check
from .. import processes
from ..arrays import output, report, to_numpy
from ...core.concurrency import start_thread
from .pieces import PIECE_SLACK, PieceDecimation, decimate_once, decimation_pieces, in_pieces
from .weld import merge_duplicate_vertices, merge_duplicate_vertices_on_device, tidy_decimated

__all__ = ["CHILD_PASS_FROM_FACES", "simplify_mesh", "simplify_time_estimate", "BackgroundSimplify"]

# ``simplify_mesh``'s one pass over a mesh of at least this many faces runs in a child process (the same call, the
# same arrays), which a cancel ends: fast-simplification holds the GIL and cannot be interrupted, and a smaller pass
# takes about a second (docs/benchmarks/export.md#decimation).
CHILD_PASS_FROM_FACES = 300_000


def _on_accelerator(x) -> bool:
    return hasattr(x, "detach") and getattr(x, "device", None) is not None and x.device.type != "cpu"


def _prepare(vertices, faces, reduction):
    """(merged vertices float64, faces int64, target face count, the same two on the accelerator or None) for a
    decimation by ``reduction``: tensors on an accelerator are merged there and kept there for the cut into
    pieces; the first two are then those tensors too (``to_numpy`` copies them out where a step needs numpy: the
    cut into pieces does not, and a copy of the whole mesh would be a wasted copy on the job's critical path)."""
    if reduction >= 1:
        raise ValueError(f"reduction must be below 1 (got {reduction}); 0.95 removes 95 % of faces")
    if reduction > 0 and _on_accelerator(vertices) and _on_accelerator(faces) and len(faces):
        v, f = merge_duplicate_vertices_on_device(vertices, faces, host=False)
        return v, f, max(1, int(round(len(f) * (1.0 - reduction)))), (v, f)
    v, f = to_numpy(vertices, faces)
    if reduction <= 0 or len(f) == 0:
        return v, f, len(f), None
    v, f = merge_duplicate_vertices(v, f)
    # Count from the merged mesh so that "remove 95 %" means the same with or without duplicates.
    return v, f, max(1, int(round(len(f) * (1.0 - reduction)))), None


def _finish(v, f, tidied: bool = False):
    """Decimator output -> (float32 vertices, int64 faces): degenerate and coincident faces dropped (unless
    ``tidied`` says that was done already)."""
    return output(v, f) if tidied else output(*tidy_decimated(*to_numpy(v, f)))


def simplify_mesh(vertices, faces, reduction: float, progress: StageProgress = None, cancel=None,
                  pieces: Optional[int] = None, while_waiting: Optional[Callable[[], None]] = None,
                  info: Optional[dict] = None):
    """Quadric decimation removing the fraction ``reduction`` of the faces (0.95 keeps 5 %).

    Duplicate vertices are merged first (decimation needs shared vertices to see connectivity);
    non-manifold input is fine (the decimator works on any triangle set). A large mesh is decimated
    in ``pieces`` (default ``decimation_pieces(faces)``; 1: one pass, in this process) in parallel
    child processes, then once more as a whole (``pieces`` module); by default a single pass over
    ``CHILD_PASS_FROM_FACES`` faces or more runs in one child process too; meanwhile ``while_waiting()``, if
    given, is called over and over (e.g. to render something on the GPU; keep each call short).
    Afterwards, faces that collapsed onto the same three vertices are cancelled
    (``weld.cancel_coincident_faces``). ``reduction <= 0`` returns the input unchanged (as float32 /
    int64 arrays). StageProgress is reported per piece; cancel is checked between steps and while the
    children run (which it kills). ``info``, if a dict, receives "timeline" for a decimation in pieces:
    (seconds, event) from the children's start to the result (benchmarks/decimation.py --timeline).
    """
    # The children start before the merge of duplicate vertices when the face count says that pieces
    # will be used (they import meanwhile); the merged count decides, as everywhere.
    n_raw = len(faces)
    job = None
    if 0 < reduction < 1 and n_raw:
        p = decimation_pieces(n_raw) if pieces is None else max(1, int(pieces))
        t = max(1, int(round(n_raw * (1.0 - reduction))))
        if in_pieces(p, t, n_raw) or (pieces is None and n_raw >= CHILD_PASS_FROM_FACES):
            job = PieceDecimation(PieceDecimation.children_for(p, t, n_raw))
    try:
        v, f, target, on_device = _prepare(vertices, faces, reduction)
        if reduction <= 0 or len(f) == 0:
            report(progress, "simplify", 1, 1)          # nothing to remove: the step is done
            return output(*to_numpy(v, f))
        check(cancel)
        in_child = pieces is None and len(f) >= CHILD_PASS_FROM_FACES    # in pieces or whole, in children
        pieces = decimation_pieces(len(f)) if pieces is None else max(1, int(pieces))
        if target >= len(f):
            return _finish(v, f)
        if not in_pieces(pieces, target, len(f)) and not in_child:
            if job is not None:
                job.close()
            report(progress, "simplify", 0, 1)
            v, f = decimate_once(*to_numpy(v, f), target)
            check(cancel)
            report(progress, "simplify", 1, 1)
            return _finish(v, f)
        if job is None:
            job = PieceDecimation(PieceDecimation.children_for(pieces, target, len(f)))
        job.mark("merged")
        job.begin(v, f, target, pieces, on_device=on_device)
        report(progress, "simplify", 0, job.steps)
        done = 0
        while not job.poll():
            check(cancel)
            if job.finished_steps() != done:
                done = job.finished_steps()
                report(progress, "simplify", done, job.steps)
            if while_waiting is not None:
                while_waiting()
            else:
                time.sleep(0.005)
        v, f = job.result()
        tidied = job.tidied
        job.mark("done")
        if info is not None:
            info["timeline"] = job.timeline
    finally:                                 # also on cancel or an error: children killed, files removed
        if job is not None:
            job.close()
    check(cancel)
    report(progress, "simplify", job.steps, job.steps)
    return _finish(v, f, tidied)


def simplify_time_estimate(n_faces: int) -> float:
    """Rough seconds of ``simplify_mesh`` on ``n_faces`` faces, for progress only: a rate measured on a GPU
    host's CPU, doubled for a slower desktop CPU; a mesh in pieces takes its pieces' share on this
    machine's cores plus the final pass (docs/benchmarks/export.md#decimation)."""
    pieces = decimation_pieces(n_faces)
    if pieces == 1:
        return 0.5 + 3.7e-6 * n_faces
    rounds = math.ceil(pieces / processes.usable_cores())
    return 0.8 + 3.7e-6 * n_faces * rounds / pieces + 3.7e-6 * n_faces * 0.05 * PIECE_SLACK


class BackgroundSimplify:
    """``simplify_mesh`` in child processes, started now, collected with ``result()``.

    fast-simplification holds the GIL for the whole decimation (seconds on a million faces), so in a
    thread it would stall the caller's Python; in child processes the caller's GPU work (e.g. the app's
    preview video) goes on meanwhile. The merge of duplicate vertices and the cut into pieces happen
    here, at once; then the decimation runs as a ``PieceDecimation`` (one child for a mesh below
    ``decimation_pieces`` > 1, else one per piece and then the re-joined mesh's final round), advanced by a thread
    of its own that polls the children every few milliseconds: a round's end is seen and the next round given out
    at once, whatever the caller does meanwhile (``result``'s ``while_waiting`` renders views of tens of
    milliseconds each). ``result()`` returns exactly what ``simplify_mesh``
    returns for the same input (same code, same arrays); a child that fails is replaced by the same
    call in this process. ``close()`` (also on ``cancel``) kills the children and removes their files.
    """

    POLL_S = 0.002          # the driving thread's pause between looks at the children

    def __init__(self, vertices, faces, reduction: float):
        # the face count only: a host copy of a decoder's mesh on the GPU would be a wasted copy on the job's
        # critical path (the merge and the cut happen on the device)
        shape = tuple(getattr(faces, "shape", np.shape(faces)))
        self.n_faces = int(shape[0]) if len(shape) == 2 else int(np.prod(shape)) // 3
        self.reduction = float(reduction)
        self._result, self._job, self._driver = None, None, None
        self._stop, self._ended, self._error = threading.Event(), threading.Event(), None
        # children started first (they import while the duplicate vertices are merged), as many as the
        # face count says; the merged count decides the pieces
        n = self.n_faces
        job = None
        if 0 < self.reduction < 1 and n:
            t = max(1, int(round(n * (1.0 - self.reduction))))
            job = PieceDecimation(PieceDecimation.children_for(decimation_pieces(n), t, n))
        try:
            # the given arrays, not the host copies: tensors on a GPU are merged there (``_prepare``)
            v, f, target, on_device = _prepare(vertices, faces, self.reduction)
            if self.reduction <= 0 or len(f) == 0:
                self._result = output(*to_numpy(v, f))
            elif target >= len(f):
                self._result = _finish(v, f)
            else:
                job.begin(v, f, target, decimation_pieces(len(f)), on_device=on_device)
                self._job, job = job, None
                self._job.poll()
                self._driver = start_thread(self._drive, "trellis-decimation")
        finally:
            if job is not None:              # not needed, or an error
                job.close()

    def _drive(self) -> None:
        """The driving thread: polls until the result is in, ``close()`` stops it, or polling fails (kept for
        ``result()`` to raise)."""
        try:
            while not self._stop.is_set() and not self._job.poll():
                self._stop.wait(self.POLL_S)
        except BaseException as e:          # noqa: BLE001 (re-raised in the caller's thread)
            self._error = e
        finally:
            self._ended.set()

    @property
    def decimation(self) -> Optional[PieceDecimation]:
        """The decimation in child processes (None when none was needed)."""
        return self._job

    @property
    def folder(self) -> Optional[str]:
        """The children's temporary folder (None when no decimation was needed)."""
        return self._job.folder if self._job is not None else None

    @property
    def process(self):
        """The last child process started (None if none was)."""
        return self._job.proc if self._job is not None else None

    def running(self) -> bool:
        """Whether the decimation is still going on (False once its result is in or it failed)."""
        if self._result is not None or self._job is None:
            return False
        return not self._ended.is_set()

    def result(self, progress: StageProgress = None, cancel=None, while_waiting: Optional[Callable[[], None]] = None):
        """(vertices float32 [V,3], faces int64 [F,3]) as ``simplify_mesh(vertices, faces, reduction)``.
        ``progress("simplify", percent, 100)`` about every 0.2 s while the children work (an estimate
        from the face count, ``simplify_time_estimate``), 100 when the result is in. ``while_waiting()``,
        if given, is called over and over meanwhile (as in ``simplify_mesh``)."""
        if self._result is not None:
            return self._result
        report(progress, "simplify", 0, 100)
        self._job.mark("result wanted")
        # The decimation is native calls without progress of their own: while waiting for them, report
        # the time spent against an estimate (in percent, capped at 99), about every 0.2 s.
        start, last, estimate = time.monotonic(), 0.0, simplify_time_estimate(self.n_faces)
        try:
            while not self._ended.is_set():
                check(cancel)
                if while_waiting is not None:
                    while_waiting()
                else:
                    self._ended.wait(0.005)
                elapsed = time.monotonic() - start
                if elapsed - last >= 0.2:
                    last = elapsed
                    report(progress, "simplify", min(99, int(100 * elapsed / estimate)), 100)
            if self._error is not None:
                raise self._error
            self._job.mark("result taken")
            self._result = _finish(*self._job.result(), self._job.tidied)
        finally:                       # also on cancel: the children are killed, their files removed
            self.close()
        report(progress, "simplify", 100, 100)
        return self._result

    def close(self) -> None:
        """Stops the driving thread (it ends its poll first), then kills the children and removes their files."""
        self._stop.set()
        if self._driver is not None and self._driver is not threading.current_thread():
            self._driver.join()
        if self._job is not None:
            self._job.close()
