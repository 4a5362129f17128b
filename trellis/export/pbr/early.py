"""The O-Voxel's mesh prepared for its bake (``prepare.prepare_ovoxel_mesh``: reduction, orientation, UV layout) from
the moment its shape is decoded, in a thread, while the texture flow still samples (the pipeline's ``on_shape``):

    early = {}
    meshes = pipeline.run(image, on_shape=lambda m: early.setdefault(0, EarlyPrepare(m[0], options)))
    textured = bake_ovoxel(meshes[0], options, prepared=early[0])      # waits for it; the same arrays as without

The preparation reads the mesh's vertices, faces and voxel size only, never its attributes (which the texture
decoder adds later to the same object), so the bake's result is the serial order's, bit for bit. The dense mesh is
taken and clustered (``reduce.cluster_stage``) in the sampling's thread and stream before the texture flow starts
(on a GPU busy with that flow each of the clustering's syncs would wait for its kernels); the rest is CPU work in a
thread (on a stream of its own for what still touches the GPU, synchronised at its end:
``core.concurrency.on_own_stream``). ``close`` stops it (an
error or a cancel of the job before the bake) and waits for it.
"""
from __future__ import annotations

import threading

from ...core.concurrency import Background, on_own_stream
from ..options import PbrOptions
from .prepare import PreparedMesh, dense_mesh, prepare_ovoxel_mesh
from .reduce import cluster_stage

__all__ = ["EarlyPrepare"]


class EarlyPrepare:
    """``prepare_ovoxel_mesh`` of ``mesh`` with ``options``' face target, texture size, hole size and UV method,
    started now in a thread; ``cancel()`` (and ``close``) stop it."""

    def __init__(self, mesh, options: PbrOptions | None = None, cancel=None):
        import torch

        self.mesh, self.options = mesh, PbrOptions.given(options)
        o = self.options
        if o.topology != "triangles":
            raise ValueError("the early preparation is the triangle export's; quads prepare their own mesh")
        self.info: dict = {"seconds": {}}
        self._stop = threading.Event()
        stopped = lambda: self._stop.is_set() or (cancel is not None and cancel())     # noqa: E731
        dense = dense_mesh(mesh)                      # here: the sampling's stream has made the mesh
        device = dense[0].device
        target = o.face_target(int(mesh.faces.shape[0]))
        try:                # here too, on a GPU the sampling leaves idle a moment: alone, milliseconds
            clustered = cluster_stage(*dense, target, mesh.voxel_size, cancel=stopped, info={})
        except Exception:   # noqa: BLE001 (the thread's own reduction raises it again, from result())
            clustered = None
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()

        def prepare() -> PreparedMesh:
            return prepare_ovoxel_mesh(mesh, target, o.texture_size, o.max_hole_perimeter, o.uv_method,
                                       o.uv_time_budget_s, None, stopped, self.info, dense=dense,
                                       clustered=clustered)
        self._work = Background("trellis-pbr-prepare", lambda: on_own_stream(device, prepare))

    def fits(self, mesh, options: PbrOptions) -> bool:
        """Whether this preparation is what ``bake_ovoxel(mesh, options)`` would make itself."""
        o, p = options, self.options
        return mesh is self.mesh and (o.face_target(int(mesh.faces.shape[0])), o.texture_size, o.max_hole_perimeter,
                                      o.uv_method, o.uv_time_budget_s, o.topology) == \
            (p.face_target(int(mesh.faces.shape[0])), p.texture_size, p.max_hole_perimeter, p.uv_method,
             p.uv_time_budget_s, p.topology)

    def result(self) -> tuple[PreparedMesh, dict, float]:
        """(the prepared mesh, its record as ``prepare_ovoxel_mesh`` writes it, the seconds it ran), waited for;
        its error raised here."""
        prepared = self._work.result()
        return prepared, self.info, self._work.seconds

    def running(self) -> bool:
        return self._work.running()

    def close(self) -> None:
        """Stop it (at its next cancel check) and wait for it."""
        self._stop.set()
        self._work.join()
