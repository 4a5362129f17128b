"""An export started before the caller's other work on the same result, so that the CPU's share of it overlaps
that work: the first decimation of the mesh runs in child processes (``cleanup.decimate.BackgroundSimplify``)
while, for example, the app writes the PLY and renders the preview video on the GPU.

    with ExportJob(gaussian, mesh, simplify=0.95, texture_size=1024) as export:   # the decimation starts
        ...                                                                          # other work
        textured = export.bake(progress=report, cancel=stop)                         # a TexturedMesh
    textured.save_glb("model.glb"); textured.save_obj("model.obj")

The result is the same as ``bake_textured_mesh`` with the same arguments (same arrays, same texture).
"""
from __future__ import annotations

from . import processes
from .cleanup import decimate, pieces
from .cleanup.chain import first_reduction
from .options import export_options, mesh_arrays
from .schedule import Progress, bake_textured_mesh
from .textured import TexturedMesh

__all__ = ["ExportJob", "warm_processes"]


class ExportJob:
    """``bake_textured_mesh``'s arguments (``simplified`` excepted: this class makes it). ``early=False``
    starts nothing now (the whole export then runs in ``bake``; on a CPU that is better when there is no other
    work to overlap, as the decimation and the observation renders would compete for the same cores)."""

    def __init__(self, app_rep, mesh, simplify=0.95, fill_holes=True, fill_holes_max_size=0.04,
                 texture_size=1024, bake_mode="fast", early: bool = True, **kwargs):
        if "simplified" in kwargs:
            raise TypeError("ExportJob makes its own `simplified`; do not pass one")
        opt = export_options(kwargs)
        self.app_rep, self.mesh = app_rep, mesh
        self.args = dict(simplify=simplify, fill_holes=fill_holes, fill_holes_max_size=fill_holes_max_size,
                         texture_size=texture_size, bake_mode=bake_mode)
        self.kwargs = kwargs
        self.early = None             # the decimation started now, in child processes (None: not started)
        if early:
            # kept on the mesh's device: a GPU merges and cuts it in milliseconds (``decimate._prepare``)
            vertices, faces = mesh_arrays(mesh)
            reduction = first_reduction(int(faces.shape[0]), simplify, fill_holes, opt["target_faces"])
            if reduction > 0:
                self.early = decimate.BackgroundSimplify(vertices, faces, reduction)

    def bake(self, progress: Progress = None, cancel=None, verbose: bool = False, debug: bool = False
             ) -> TexturedMesh:
        """The clean-up (taking the early decimation's result), UV unwrap and texture bake; the child processes
        are released whatever happens."""
        try:
            return bake_textured_mesh(self.app_rep, self.mesh, **self.args, debug=debug, verbose=verbose,
                                      progress=progress, cancel=cancel, simplified=self.early, **self.kwargs)
        finally:
            self.close()

    def close(self) -> None:
        """End the early decimation's child processes (idempotent)."""
        if self.early is not None:
            self.early.close()
            self.early = None

    def __enter__(self) -> "ExportJob":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def warm_processes() -> int:
    """Start the decimation's child processes and a chart layout's (``uv.in_child``) now (they import numpy and
    fast-simplification or scipy, half a second on a busy host), so that the next export finds them waiting;
    returns how many wait."""
    from .uv import in_child

    pieces.warm_pool()
    in_child.warm()
    return processes.pooled_children()
