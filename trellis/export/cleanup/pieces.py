"""Quadric decimation of a large mesh in pieces, in child processes that the caller's polling advances.

fast-simplification is single-threaded and its time grows faster than the faces, so a large mesh is cut into
compact pieces (recursive median splits of the faces' first corners along the longest extent); each piece is
decimated in a child process with its cut edges (and any open border) kept in place, to PIECE_SLACK times its
share of the target. The re-joined mesh then gets its final pass in pieces again, cut along other planes
(``SHIFTED_CUT``: the first round's seams lie inside the second round's pieces and are decimated there), each
piece to its share of the target; where those pieces would be small (``FINAL_PIECE_MIN_FACES``), the re-joined
mesh gets one pass with every edge free instead. The pieces depend on the
face count only, never on the machine's cores, so a mesh gives the same result everywhere; a child that fails or
cannot start is replaced by the same call in this process.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from typing import Optional

import numpy as np

from .. import processes, temp_dirs
from ..arrays import to_numpy
from ...core.concurrency import side_stream
from .cut import piece_arrays, shares, shifted_points, split_compact
from .weld import (merge_duplicate_vertices, merge_duplicate_vertices_on_device, tidy_decimated,
                   tidy_decimated_on_device)

__all__ = ["PIECE_MIN_FACES", "PIECES_FROM_FACES", "MAX_PIECES", "PIECE_SLACK", "FINAL_PIECE_MIN_FACES", "TEMP_PREFIX", "CHILD_IDLE_S", "PIECE_CHILD", "piece_child_code",
           "decimation_pieces", "in_pieces", "decimate_once", "warm_pool", "PieceDecimation"]

# Piece sizes that keep the seams' error at one pass's and pay off the children's start-up
# (docs/benchmarks/export.md#decimation).
PIECE_MIN_FACES = 80_000
PIECES_FROM_FACES = 300_000
MAX_PIECES = 16
PIECE_SLACK = 2.0
# The final pass over the re-joined mesh runs in pieces cut along SHIFTED_CUT's planes, in parallel, where each of
# those pieces has at least this many faces (its kept seam is then a small share of it), else as one pass in one
# child (docs/benchmarks/export.md#decimation).
FINAL_PIECE_MIN_FACES = 5_000
# The decimation's temp folder, owned by its process (``temp_dirs``): an app's start removes only dead ones'.
TEMP_PREFIX = "trellis_simplify_"

# A decimation child starts before its work is known (its imports overlap the caller's merge and cut), then
# reads one JSON line per batch of [input .npz, output .npz] pairs from stdin, writing each output under
# another name and renaming it when complete, until stdin closes; idle for CHILD_IDLE_S it exits by itself.
# No trellis import, so that it starts fast.
CHILD_IDLE_S = 300.0
_PIECE_IMPORTS = "import numpy as np, fast_simplification"
_PIECE_SERVE = """
    for src, dst in json.loads(line):
        d = np.load(src)
        v, f = fast_simplification.simplify(d["vertices"], d["faces"], target_count=int(d["target"]),
                                            preserve_border=bool(d["preserve_border"]))
        np.savez(dst + ".part.npz", vertices=np.asarray(v, dtype=np.float64), faces=np.asarray(f, dtype=np.int32))
        os.replace(dst + ".part.npz", dst)
"""


def piece_child_code(idle_s: float) -> str:
    """The decimation child's code, exiting after ``idle_s`` seconds without work."""
    return processes.served_child_code(_PIECE_IMPORTS, _PIECE_SERVE, idle_s)


PIECE_CHILD = piece_child_code(CHILD_IDLE_S)


def decimation_pieces(n_faces: int) -> int:
    """How many pieces ``simplify_mesh`` decimates a mesh of ``n_faces`` faces in: 1 below
    PIECES_FROM_FACES, else a power of two, each piece at least PIECE_MIN_FACES faces, at most MAX_PIECES."""
    p = 1
    while n_faces >= PIECES_FROM_FACES and p < MAX_PIECES and n_faces >= 2 * p * PIECE_MIN_FACES:
        p *= 2
    return p


def in_pieces(pieces: int, target: int, n_faces: int) -> bool:
    """Whether a decimation of ``n_faces`` to ``target`` goes through pieces (else one pass): only when
    the pieces' share (PIECE_SLACK x the target) still removes faces."""
    return pieces > 1 and target * PIECE_SLACK < n_faces


def decimate_once(v, f, target: int, preserve_border: bool = False):
    """One fast-simplification call in this process: (float64 vertices, int64 faces [F,3])."""
    import fast_simplification

    v2, f2 = fast_simplification.simplify(v, f.astype(np.int32, copy=False), target_count=target,
                                          preserve_border=preserve_border)
    return np.asarray(v2, dtype=np.float64), np.asarray(f2, dtype=np.int64).reshape(-1, 3)


def warm_pool(children: Optional[int] = None) -> int:
    """Start decimation children into the pool now (default: as many as the decimation of a decoder's mesh of a
    million faces uses, ``min(cores, decimation_pieces(10**6))``), so that the next export's decimation finds
    them warm; returns how many wait there. Nothing where children cannot be pooled."""
    if not processes.SAFE_PATH:
        return 0
    default = min(processes.usable_cores(), decimation_pieces(1_000_000))
    want = min(MAX_PIECES, children if children is not None else default)
    code = PIECE_CHILD
    have = sum(1 for p in processes.pooled_processes(code) if p.poll() is None)
    for _ in range(max(0, want - have)):
        proc = processes.start(code, (), processes.working_folder(""), stdin=True)
        if proc is None:
            break
        processes.give_back(code, proc, MAX_PIECES)
    return processes.pooled_children()


class PieceDecimation:
    """The decimation of a merged mesh to ``target`` faces in child processes that ``poll()`` advances
    (it never blocks on a child): either one child for the whole mesh, or ``pieces`` compact pieces (borders
    kept, PIECE_SLACK times their share) shared out among at most one child per core (each child decimates
    its pieces one after the other, so a machine with few cores starts few interpreters), and then the
    re-joined mesh: in as many pieces cut along other planes (module docstring), shared out the same way, or
    whole, given to the first child that is done with its pieces. The children are started first, so
    their start-up overlaps the cut and the writing of the pieces. ``result()`` is the raw decimator output;
    ``close()`` gives the idle children to the pool of warm children, kills the busy ones and removes the
    folder (``folder``)."""

    def __init__(self, children: int):
        """Starts the folder and ``children`` child processes (they import while the caller prepares the
        mesh); ``begin()`` gives them the work."""
        self._t0 = time.perf_counter()
        self.timeline = []           # (seconds since construction, event): where the time goes (benchmarks)
        # Owned (an OS lock held until close()): another process's start tells it from a killed export's leftover.
        self._owned = temp_dirs.make(TEMP_PREFIX)
        self.folder = self._owned.path
        self.proc = None             # the last child started
        self._idle, self._busy, self._done, self._result, self._pending = [], {}, {}, None, []
        self.child_calls = 0         # calls whose result a child wrote (the rest were done here)
        self.tidied = False          # whether ``result()`` is tidied already (``weld.tidy_decimated``)
        self.pooled = 0              # children taken warm from the pool
        self.steps = 0
        self._steps_before = 0       # steps of the rounds already re-joined
        self._files = -1
        self._code = PIECE_CHILD
        self._device = None          # the accelerator the mesh came on: the re-joins' merge runs there
        self._stream = None          # ... on a stream of its own (made at the first re-join)
        try:
            for _ in range(children):
                self._start_child()
        except BaseException:
            self.close()
            raise
        self.mark(f"{len(self._idle)} children started")

    @staticmethod
    def children_for(pieces: int, target: int, n_faces: int) -> int:
        """The children a decimation of ``n_faces`` to ``target`` in ``pieces`` uses."""
        return min(pieces, processes.usable_cores()) if in_pieces(pieces, target, n_faces) else 1

    def begin(self, v, f, target: int, pieces: int, on_device=None) -> None:
        """Cuts and writes the work (the merged mesh ``v``, ``f`` to ``target`` faces, in ``pieces``) and
        gives it out; starts more children if this needs more than were started. ``on_device``: the same mesh as
        tensors on a GPU, where it is cut (the same pieces, in milliseconds)."""
        try:
            self.target, self.pieces = target, pieces
            self.phase = "pieces" if in_pieces(pieces, target, len(f)) else "whole"
            for _ in range(self.children_for(pieces, target, len(f)) - len(self._idle)):
                self._start_child()
            if on_device is not None:
                self._device = on_device[0].device
            if self.phase == "pieces":
                cv, cf = on_device if on_device is not None else (v, f)
                groups = split_compact(cv[cf[:, 0]], pieces)    # a face's first corner stands for the face
                n_faces = len(f)
                targets = [max(1, int(math.ceil(target * PIECE_SLACK * len(g) / n_faces))) for g in groups]
                files = self._give_out(zip(piece_arrays(cv, cf, groups), targets), len(groups))
                self.mark(f"{len(files)} pieces written")
                # the final round's work: in as many pieces where the re-joined mesh (about PIECE_SLACK x the
                # target) gives them enough faces, else the whole mesh
                self.steps = len(files) + (pieces if self.final_in_pieces(target * PIECE_SLACK) else 1)
            else:
                self._pending = [[self._write(*to_numpy(v, f), target, False)]]
                self.steps = 1
        except BaseException:
            self.close()
            raise

    def final_in_pieces(self, faces: float) -> bool:
        """Whether a re-joined mesh of ``faces`` faces gets its final pass in pieces."""
        return self.pieces > 1 and faces >= self.pieces * FINAL_PIECE_MIN_FACES

    def _give_out(self, work, count: int) -> list:
        """Write the ``count`` pieces of ``work`` ((vertices, faces), target share; their borders kept) one by one and
        give them out in runs, one run per idle child (at least one run), each run sent as soon as its last piece
        is written: the first children decimate while the later pieces are cut and written. Returns the calls."""
        runs = max(1, min(len(self._idle), count))
        ends = {int(math.ceil(count * (r + 1) / runs)) for r in range(runs)}   # a run ends after these many pieces
        files, run = [], []
        for (pv, pf), share in work:
            run.append(self._write(pv, pf, share, True))
            files.append(run[-1])
            if len(files) in ends:
                if self._idle:
                    self._send(run)
                else:                  # no idle child now: the run waits for one (``poll``)
                    self._pending.append(run)
                run = []
        return files

    def _start_child(self) -> None:
        proc = processes.take(self._code)
        if proc is not None:
            self.pooled += 1
        else:
            proc = processes.start(self._code, (), processes.working_folder(self.folder), stdin=True)
        if proc is not None:
            self.proc = proc
            self._idle.append(proc)

    def mark(self, event: str) -> None:
        """Note ``event`` on the timeline."""
        self.timeline.append((round(time.perf_counter() - self._t0, 4), event))

    def children(self) -> list:
        """The child processes this decimation holds now (idle and busy)."""
        return list(self._idle) + [p for p, _ in self._busy.values()]

    def _write(self, v, f, target, preserve_border):
        """(index, input file, output file) of one decimation call, its input written."""
        i = self._files = self._files + 1
        src, dst = os.path.join(self.folder, f"in{i}.npz"), os.path.join(self.folder, f"out{i}.npz")
        np.savez(src, vertices=v, faces=f.astype(np.int32), target=target, preserve_border=preserve_border)
        return i, src, dst

    def finished_steps(self) -> int:
        return self._steps_before + len(self._done)

    def _send(self, calls) -> None:
        """Give ``calls`` to an idle child, or do them here when there is none or it cannot take them."""
        while self._idle:
            proc = self._idle.pop(0)
            try:
                proc.stdin.write((json.dumps([[src, dst] for _, src, dst in calls]) + "\n").encode())
                proc.stdin.flush()
            except (OSError, ValueError):     # it has exited (e.g. no fast-simplification there)
                processes.stop(proc)
                continue
            self._busy[id(proc)] = (proc, calls)
            self.mark(f"calls {[i for i, _, _ in calls]} sent")
            return
        for i, src, dst in calls:
            self._done[i] = self._collect(False, src, dst)

    def poll(self) -> bool:
        """Gives out what may start, collects what ended; True once the result is in."""
        if self._result is not None:
            return True
        for key, (proc, calls) in list(self._busy.items()):
            complete = all(os.path.exists(dst) for _, _, dst in calls)
            if not complete and proc.poll() is None:
                continue
            del self._busy[key]
            for i, src, dst in calls:         # a child that died: what it did not write is done here
                written = os.path.exists(dst)
                self.child_calls += written
                self._done[i] = self._collect(written, src, dst)
            if complete and proc.poll() is None:
                self._idle.append(proc)
            else:
                processes.stop(proc)
            self.mark(f"calls {[i for i, _, _ in calls]} collected")
        while self._pending and (self._idle or not self._busy):
            self._send(self._pending.pop(0))
        if self._pending or self._busy:
            return False
        parts = [self._done[i] for i in sorted(self._done)]
        if self.phase in ("pieces", "shifted"):
            # Re-join: a piece's border vertices never moved, so the pieces' copies of a seam vertex are
            # bit-identical and merge.
            base, faces = 0, []
            for pv, pf in parts:
                faces.append(pf + base)
                base += len(pv)
            first_round = self.phase == "pieces"
            # the fins the pieces folded (back-to-back pairs) would count toward the target: tidied after the first
            # round; after the final one too where the accelerator does it (the caller's ``tidy_decimated`` then has
            # nothing left to do: ``tidied``)
            tidy = first_round or self._device is not None
            v, f = self._merged(np.concatenate([pv for pv, _ in parts]), np.concatenate(faces), tidy=tidy)
            self.mark(f"re-joined: {len(f)} faces")
            self._steps_before += len(self._done)
            self._done = {}
            if first_round and self.target < len(f):
                # the final round: the first round's seams inside pieces cut along other planes, or the whole mesh
                # once more with every edge free
                if self.final_in_pieces(len(f)):
                    self.phase = "shifted"
                    # numpy's cut: on the accelerator (one sort per level, a stream of its own) it was no faster
                    groups = split_compact(shifted_points(v[f[:, 0]]), self.pieces)
                    files = self._give_out(zip(piece_arrays(v, f, groups),
                                               shares(self.target, [len(g) for g in groups])), len(groups))
                    self.mark(f"{len(files)} shifted pieces written")
                else:
                    self.phase = "whole"
                    self._pending = [[self._write(v, f, self.target, False)]]
                self.steps = self._steps_before + sum(map(len, self._pending)) + sum(
                    len(calls) for _, calls in self._busy.values())
                return self.poll()
            parts, self.tidied = [(v, f)], tidy
        self._result = parts[0]
        return True

    def _merged(self, v, f, tidy: bool):
        """``merge_duplicate_vertices`` of the re-joined pieces, then with ``tidy`` ``tidy_decimated``; on the mesh's
        accelerator where it came on one (the same arrays, bit for bit: ``weld.merge_duplicate_vertices_on_device``,
        ``weld.tidy_decimated_on_device``), on a stream of this decimation's own, so that its copies back wait for
        its own kernels only, not for the caller's work queued meanwhile (view renders)."""
        if self._device is None:
            v, f = merge_duplicate_vertices(v, f)
            return tidy_decimated(v, f) if tidy else (v, f)
        import torch
        if self._stream is None:
            self._stream = side_stream(self._device)
        with torch.cuda.stream(self._stream) if self._stream is not None else contextlib.nullcontext():
            v, f = merge_duplicate_vertices_on_device(torch.from_numpy(v).to(self._device),
                                                      torch.from_numpy(f).to(self._device), host=not tidy)
            return tidy_decimated_on_device(v, f) if tidy else (v, f)

    @staticmethod
    def _collect(written: bool, src, dst):
        if written:
            try:
                with np.load(dst) as out:
                    return out["vertices"], out["faces"].astype(np.int64).reshape(-1, 3)
            except (OSError, ValueError, KeyError):
                pass
        with np.load(src) as d:              # the child failed: the same call in this process
            return decimate_once(d["vertices"], d["faces"], int(d["target"]), bool(d["preserve_border"]))

    def result(self):
        """The decimator's output (vertices, faces), tidied where ``tidied`` says so; None until ``poll()`` is True."""
        return self._result

    def close(self) -> None:
        # Idle children go to the pool for the next decimation; busy ones (cancel, error) are killed and waited
        # for (where children cannot be pooled, idle ones too, so that their working folder, this decimation's,
        # can go: Windows keeps a process's working folder).
        for proc in self._idle:
            processes.give_back(self._code, proc, MAX_PIECES)
        processes.stop_all(proc for proc, _ in self._busy.values())      # one grace period for all of them
        self._idle, self._busy = [], {}
        self._owned.remove()
