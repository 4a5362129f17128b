"""The export's scheduler: ``ExportJob`` starts an export before the caller's other work on the same result, runs the
caller's side work beside it, and writes the files side by side (trellis/export/DESIGN.md: the whole schedule).

    beside = [SideWork("result", lambda stopped: save_result("result.npz", gaussian, mesh))]
    with ExportJob(gaussian, mesh, ExportOptions(simplify=0.95), beside=beside) as export:   # the decimation starts
        ...                                                                     # the caller's own work
        textured = export.bake(progress=report, cancel=stop)                    # a TexturedMesh
        export.side_result("result")                                            # waited for; its error raised here
    textured.save_glb("model.glb"); textured.save_obj("model.obj")

At its start: the mesh's first decimation in child processes (``cleanup.decimate.BackgroundSimplify``), so that the
CPU's share of the export overlaps the caller's work (the app writes the PLY meanwhile); then the side work due at
once. ``bake`` starts the side work due with the bake (the app's preview video: on a CUDA stream of its own, held by
``gate.GpuGate`` while the bake runs a stage on the job's critical GPU path), then runs the export: the textured bake
(``schedule.bake_textured_mesh``: the same arrays and texture as called directly), the clean-up alone for files
without a texture (``texture=False``: ``shape_only.clean_shape``), or the look baked onto the given mesh as it is
(``keep_mesh=True``: ``keep_mesh.bake_onto_mesh``). ``side_by_side`` writes the files from its result, one thread
each. ``close`` (also on an error or a cancel) stops the side work, waits for it and ends the children.

TRELLIS.2's O-Voxel (a ``MeshWithVoxel``) goes through the same scheduler with a ``PbrOptions``: its export is the
PBR bake (``pbr.bake_ovoxel``; no early decimation: its reduction is a clustering on the mesh's device), and the
caller's side work runs beside it as beside v1's:

    with ExportJob(None, ovoxel, PbrOptions(texture_size=1024), beside=[SideWork("result", save)]) as export:
        textured = export.bake()                                                # a PbrTexturedMesh
        export.start_side(SideWork("preview", lambda stopped: video(textured, stopped), on_gpu=True))
"""
from __future__ import annotations

import dataclasses
import importlib
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..core.callbacks import StageProgress
from . import processes
from .cleanup import decimate, pieces
from .cleanup.chain import first_reduction
from ..core.concurrency import Background, on_own_stream, run_together
from .gate import GpuGate
from .options import ExportOptions, PbrOptions, mesh_arrays
from .schedule import bake_textured_mesh
from .textured import TexturedMesh

__all__ = ["SideWork", "ExportJob", "warm_processes"]


@dataclass(frozen=True)
class SideWork:
    """Work the caller hands an ``ExportJob`` to run beside the export, in a thread of its own named
    ``trellis-<name>``: ``run(stopped)`` returns its value (``side_result``); ``stopped()`` says whether to stop now
    (the job failed, was cancelled or closed). ``on_gpu``: on a CUDA stream of its own, and ``stopped()`` waits while
    the export runs a stage on the job's critical GPU path (``gate``). ``with_bake``: started when the bake starts,
    not at once. ``imports``: modules the work imports, imported in the caller's thread before it starts (two threads
    importing modules with native parts for the first time at once can deadlock)."""
    name: str
    run: Callable[[Callable[[], bool]], Any]
    on_gpu: bool = False
    with_bake: bool = False
    imports: tuple = ()


class ExportJob:
    """The export of ``mesh`` (as ``bake_textured_mesh`` takes it; with ``keep_mesh``, an object with vertices,
    faces and uvs; an O-Voxel, with ``PbrOptions``; None: nothing to export, only the side work) and ``app_rep``
    (the Gaussians; None for an O-Voxel) with ``options`` (an ``ExportOptions``, or a ``PbrOptions`` where ``mesh``
    is an O-Voxel; ``kwargs``: changes to them). ``early=False`` starts no decimation now (the whole export then runs
    in ``bake``; on a CPU that is better when there is no other work to overlap, as the decimation and the
    observation renders would compete for the same cores). ``beside``: the caller's ``SideWork``; ``cancel()``: the side work's stop, and
    the bake's unless ``bake`` is given its own. ``prepared``: an O-Voxel's ``pbr.early.EarlyPrepare`` (its mesh made
    ready while the texture sampled), used by the bake and stopped by ``close``."""

    def __init__(self, app_rep, mesh, options: Optional[ExportOptions] = None, *, texture: bool = True,
                 keep_mesh: bool = False, early: bool = True, beside=(), cancel=None, prepared=None, **kwargs):
        if "simplified" in kwargs:
            raise TypeError("ExportJob makes its own `simplified`; do not pass one")
        self.pbr = isinstance(options, PbrOptions) or is_ovoxel(mesh)
        if self.pbr and keep_mesh:
            raise ValueError("an O-Voxel's export makes its own mesh: keep_mesh is for a TRELLIS v1 look")
        self.options = (PbrOptions if self.pbr else ExportOptions).given(options, **kwargs)
        self.app_rep, self.mesh, self.texture, self.keep_mesh = app_rep, mesh, texture, keep_mesh
        self.prepared = prepared        # an O-Voxel's ``pbr.early.EarlyPrepare``, started while its texture sampled
        self.cancel = cancel
        self.gate = GpuGate()
        self.early = None             # the decimation started now, in child processes (None: not started)
        self._stop = threading.Event()
        self._side: dict = {}
        self._with_bake = [work for work in beside if work.with_bake]
        try:
            if early and mesh is not None and texture and not keep_mesh and not self.pbr:
                # kept on the mesh's device: a GPU merges and cuts it in milliseconds (``decimate._prepare``)
                vertices, faces = mesh_arrays(mesh)
                o = self.options
                n_faces = int(faces.shape[0])
                reduction = first_reduction(n_faces, o.simplify, o.fill_holes, o.face_target(n_faces))
                if reduction > 0:
                    self.early = decimate.BackgroundSimplify(vertices, faces, reduction)
            for work in beside:
                if not work.with_bake:
                    self.start_side(work)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ the export
    def bake(self, progress: StageProgress = None, cancel=None) -> Optional[TexturedMesh]:
        """The side work due with the bake started, then the export (None when there is no mesh); the gate opens
        and the early decimation's children are released whatever happens."""
        cancel = self.cancel if cancel is None else cancel
        for work in self._with_bake:
            self.start_side(work)
        self._with_bake = []

        def report(stage, done, total):
            self.gate.on_progress(stage, done, total)
            if progress is not None:
                progress(stage, done, total)
        try:
            return None if self.mesh is None else self._export(report, cancel)
        finally:
            self.gate.release()
            self._end_early()

    def _export(self, report, cancel) -> TexturedMesh:
        from .keep_mesh import bake_onto_mesh
        from .shape_only import clean_shape

        o, mesh = self.options, self.mesh
        if self.pbr:
            from .pbr.export import bake_ovoxel

            return bake_ovoxel(mesh, o, progress=report, cancel=cancel, prepared=self.prepared)
        if self.keep_mesh and not self.texture:       # the user's own vertices and faces, nothing cleaned up
            return clean_shape((mesh.vertices, mesh.faces), simplify=0, fill_holes=False, progress=report,
                               cancel=cancel)
        if self.keep_mesh:
            return bake_onto_mesh(self.app_rep, mesh.vertices, mesh.faces, getattr(mesh, "uvs", None), o,
                                  progress=report, cancel=cancel)
        if not self.texture:
            return clean_shape(mesh, dataclasses.replace(o, device=o.device_for(self.app_rep)), progress=report,
                               cancel=cancel)
        return bake_textured_mesh(self.app_rep, mesh, options=o, simplified=self.early, progress=report,
                                  cancel=cancel)

    def side_by_side(self, calls: dict) -> list:
        """[(key, value, seconds)] of ``calls`` ({key: fn}, e.g. one file writer each) run one thread each; every call
        has ended before this returns or raises the first error in ``calls``' order."""
        return run_together(calls, "trellis-mesh-file")

    # ------------------------------------------------------------------ the side work
    def start_side(self, work: SideWork) -> None:
        """Start ``work`` now (a name given twice is a ValueError)."""
        if work.name in self._side:
            raise ValueError(f"side work {work.name!r} is already started")
        for module in work.imports:
            importlib.import_module(module)
        if work.on_gpu:
            device = self.device()
            gated = lambda: self.gate.stopped(self._stopped)        # noqa: E731
            fn = lambda: on_own_stream(device, lambda: work.run(gated))     # noqa: E731
        else:
            fn = lambda: work.run(self._stopped)     # noqa: E731
        self._side[work.name] = Background(f"trellis-{work.name}", fn)

    def device(self):
        """The torch device the export runs on: the O-Voxel's, else ``ExportOptions.device_for``'s."""
        import torch

        if self.pbr:
            return torch.device("cpu") if self.mesh is None else torch.device(self.mesh.vertices.device)
        return self.options.device_for(self.app_rep)

    def _stopped(self) -> bool:
        return self._stop.is_set() or (self.cancel is not None and self.cancel())

    def side_running(self, name: str) -> bool:
        """Whether side work ``name`` runs still."""
        return self._side[name].running()

    def side_result(self, name: str):
        """Side work ``name``'s value, waited for; its error is raised here."""
        return self._side[name].result()

    def side_seconds(self, name: str) -> float:
        """How long side work ``name`` ran (once it has ended)."""
        return self._side[name].seconds

    def side_value_if_any(self, name: str):
        """Side work ``name``'s value once it has ended, None where it failed or was never started."""
        work = self._side.get(name)
        return None if work is None else work.value_if_any()

    @property
    def held_s(self) -> float:
        """How long side work on the GPU waited at the gate."""
        return self.gate.held_s

    # ------------------------------------------------------------------ the end
    def _end_early(self) -> None:
        if self.early is not None:
            self.early.close()
            self.early = None

    def close(self) -> None:
        """Stop the side work and wait for it, end the early decimation's child processes (idempotent)."""
        self._stop.set()
        self.gate.release()
        for work in self._side.values():
            work.join()
        self._end_early()
        if self.prepared is not None:
            self.prepared.close()

    def __enter__(self) -> "ExportJob":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def is_ovoxel(mesh) -> bool:
    """Whether ``mesh`` is TRELLIS.2's O-Voxel (a ``representations.ovoxel.MeshWithVoxel``)."""
    if mesh is None:
        return False
    from ..representations.ovoxel import MeshWithVoxel

    return isinstance(mesh, MeshWithVoxel)


def warm_processes() -> int:
    """Start the decimation's child processes and a chart layout's (``uv.in_child``) now (they import numpy and
    fast-simplification or scipy, half a second on a busy host), so that the next export finds them waiting;
    returns how many wait."""
    from .uv import in_child

    pieces.warm_pool()
    in_child.warm()
    return processes.pooled_children()
