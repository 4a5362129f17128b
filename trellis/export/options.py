"""The export's options, one typed record per model family: ``ExportOptions`` (TRELLIS v1: Gaussians and mesh baked
into a texture) and ``PbrOptions`` (TRELLIS.2: an O-Voxel's PBR bake); each declares its family's defaults (the
texture size among them: ``ExportOptions().texture_size``, ``PbrOptions().texture_size``). And the observation views
the v1 export uses by device.

Light to import (numpy only; torch where a function needs it): the chart layout's child process imports modules
that take their defaults from here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .normals import DEFAULT_CREASE_ANGLE

__all__ = ["DEFAULT_TEXTURE_SIZE", "BAKE_MODES", "TOPOLOGIES", "ExportOptions", "PbrOptions", "DEFAULT_TARGET_FACES",
           "MAX_HOLE_PERIMETER", "GPU_OBSERVATIONS", "CPU_OBSERVATIONS", "observation_settings", "mesh_arrays"]

DEFAULT_TEXTURE_SIZE = 1024     # texels per side of v1's baked texture (the reference's to_glb), ExportOptions'
BAKE_MODES = ("fast", "opt")
# The exported mesh's faces: the clean-up's triangles, or a quad remesh of that surface (quads.bake).
TOPOLOGIES = ("triangles", "quads")
DEFAULT_TARGET_FACES = 500_000  # an O-Voxel's decimation target (a face count: the reference app's), PbrOptions'
MAX_HOLE_PERIMETER = 0.03       # world units (the object spans 1): the O-Voxel holes closed, as the reference does


class OptionRecord:
    """What the option records share: ``given`` (a record with changes, unknown keywords named)."""

    @classmethod
    def given(cls, options=None, **changes):
        """``options`` (default: the defaults) with ``changes``; a TypeError names any keyword that is no option."""
        if options is None:
            options = cls()
        elif not isinstance(options, cls):
            raise TypeError(f"options must be a {cls.__name__}, not {type(options).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(changes) - names
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}; known options: {sorted(names)}")
        return dataclasses.replace(options, **changes) if changes else options


def within_destination(n_faces: int, simplify: float, target_faces: Optional[int], destination: Optional[str]):
    """``target_faces`` (None: ``simplify``'s share, left to the clean-up), lowered to ``destination``'s triangle
    limit where the budget for a mesh of ``n_faces`` faces would pass it."""
    from .cleanup.chain import face_budget
    from .report import DESTINATION_LIMITS

    most = DESTINATION_LIMITS.get(destination or "", {}).get("max_triangles")
    if most is None or face_budget(n_faces, simplify, target_faces) <= most:
        return target_faces
    return most


def check_topology(topology: str) -> None:
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r} (use one of {TOPOLOGIES})")


@dataclass(frozen=True)
class ExportOptions(OptionRecord):
    """How a TRELLIS result is exported: the reference's ``to_glb`` arguments, then ours. ``to_glb`` / ``to_obj``
    build one from their keywords; ``bake_textured_mesh``, ``bake_uv_mesh``, ``clean_shape``, ``bake_onto_mesh``
    and ``job.ExportJob`` take one (or the same keywords)."""

    # the reference's
    simplify: float = 0.95                 # fraction of the faces removed (0.95 keeps 5 %)
    fill_holes: bool = True                # hidden-face removal and hole filling (cleanup.chain)
    fill_holes_max_size: float = 0.04      # the largest hole the hidden-face removal may open
    texture_size: int = DEFAULT_TEXTURE_SIZE
    debug: bool = False                    # info also holds the texture before inpainting and its observed texels
    verbose: bool = False                  # each stage's seconds printed (the reference's to_glb prints: True there)
    # ours
    bake_mode: str = "fast"                # "fast" (bake.least_squares) | "opt" (the reference's optimisation)
    nviews: Optional[int] = None           # observation views; None: by device (observation_settings)
    render_resolution: Optional[int] = None    # observation size; None: by device (reference: 1024)
    uv_time_budget_s: float = 10.0         # the UV layouts' budget before the chart-layout fallback
    uv_method: str = "auto"                # "auto" | "xatlas" | "geometric" | "charts" (uv.unwrap.unwrap_uv)
    steps: int = 2500                      # "opt" bake steps (reference: 2500)
    lambda_tv: float = 0.01                # "opt" TV weight (reference: 0.01)
    cg_iterations: int = 30                # "fast" bake solver iterations
    observation_scale: Optional[float] = None  # the Gaussians' scale in the bake's renders; None: for "fast"
    #                                        bake.observations.sharpening_scale, for "opt" 1 (the reference's renders)
    device: object = None                  # where the export runs; None: the Gaussians' device
    overlap_uv: bool = True                # views rendered while the decimation / UV layout run (same result)
    target_faces: Optional[int] = None     # faces in the file (instead of the fraction kept, 1 - simplify)
    destination: Optional[str] = None      # report.DESTINATION_LIMITS' name: the faces kept within its limit
    crease_angle: Optional[float] = DEFAULT_CREASE_ANGLE   # normals split at sharper edges (degrees); None: none
    normal_map: bool = False               # also bake a tangent-space normal map from the dense mesh
    topology: str = "triangles"            # TOPOLOGIES; "quads": target_faces counts quads (no normal map yet)

    def __post_init__(self):
        if self.bake_mode not in BAKE_MODES:
            raise ValueError(f"unknown bake_mode {self.bake_mode!r} (use 'fast' or 'opt')")
        check_topology(self.topology)

    def face_target(self, n_faces: int) -> Optional[int]:
        """The clean-up's ``target_faces`` for a mesh of ``n_faces`` faces: ``target_faces`` (None: ``simplify``'s
        share), lowered to the destination's triangle limit where that budget would pass it."""
        return within_destination(n_faces, self.simplify, self.target_faces, self.destination)

    def device_for(self, app_rep):
        """The torch device the export runs on: ``device``, else ``app_rep``'s."""
        import torch

        return torch.device(self.device) if self.device is not None else app_rep.device


@dataclass(frozen=True)
class PbrOptions(OptionRecord):
    """How an O-Voxel (TRELLIS.2's ``MeshWithVoxel``) is exported: ``pbr.bake_ovoxel``, ``pbr.ovoxel_to_glb`` and
    ``job.ExportJob`` take one (or the same keywords). The face target is ``target_faces``, or with it None the share
    ``simplify`` leaves (0: every face of the decoder's mesh), lowered to ``destination``'s triangle limit."""

    target_faces: Optional[int] = DEFAULT_TARGET_FACES     # faces in the file (a mesh with fewer keeps its own)
    simplify: float = 0.95                 # fraction of the faces removed where target_faces is None
    destination: Optional[str] = None      # report.DESTINATION_LIMITS' name: the faces kept within its limit
    texture_size: int = 2048               # texels per side of the PBR maps (the reference app's)
    normal_map: bool = True                # a tangent-space normal map from the dense mesh
    project: bool = True                   # texels sampled at the dense mesh's closest point (else where they lie)
    crease_angle: Optional[float] = DEFAULT_CREASE_ANGLE   # normals split at sharper edges (degrees); None: none
    max_hole_perimeter: float = MAX_HOLE_PERIMETER         # the largest hole closed
    uv_method: str = "auto"                # as ExportOptions' (uv.unwrap.unwrap_uv)
    uv_time_budget_s: float = 10.0         # the UV layouts' budget before the chart-layout fallback
    verbose: bool = False                  # each step's seconds printed
    topology: str = "triangles"            # TOPOLOGIES; "quads": target_faces counts quads

    def __post_init__(self):
        check_topology(self.topology)
        if int(self.texture_size) < 8:
            raise ValueError(f"texture_size must be at least 8 (got {self.texture_size})")
        if self.target_faces is not None and int(self.target_faces) < 1:
            raise ValueError(f"target_faces must be at least 1 (got {self.target_faces})")
        if not 0 <= self.simplify < 1:
            raise ValueError(f"simplify must be in [0, 1) (got {self.simplify}); 0.95 keeps 5 % of the faces")

    def face_target(self, n_faces: int) -> int:
        """The reduction's target for a decoder mesh of ``n_faces`` faces (see the class docstring)."""
        from .cleanup.chain import face_budget

        target = within_destination(n_faces, self.simplify, self.target_faces, self.destination)
        return int(target) if target is not None else face_budget(n_faces, self.simplify)


# Observation views when the caller does not choose: (views for "fast", for "opt", resolution). A CPU renders
# and rasterises a view many times slower than a GPU, so there fewer and smaller views are used
# (docs/benchmarks/export.md#observations).
GPU_OBSERVATIONS = (50, 100, 1024)
CPU_OBSERVATIONS = (24, 48, 512)


def observation_settings(device, bake_mode: str = "fast") -> tuple:
    """(nviews, render_resolution) ``to_glb`` uses on ``device`` when the caller sets neither:
    50 ("fast") / 100 ("opt", the reference) views at 1024^2 on an accelerator, 24 / 48 at 512^2
    on a CPU."""
    import torch

    fast, opt, res = CPU_OBSERVATIONS if torch.device(device).type == "cpu" else GPU_OBSERVATIONS
    return (fast if bake_mode == "fast" else opt), res


def mesh_arrays(mesh, device=None):
    """(vertices float32 [V,3], faces int64 [F,3]) on ``device`` (None: the vertices' own, the CPU for numpy) of a
    mesh given as (v, f), a dict with "vertices" / "faces", or an object with those attributes (torch or numpy)."""
    import torch

    if isinstance(mesh, (tuple, list)):
        v, f = mesh[0], mesh[1]
    elif isinstance(mesh, dict):
        v, f = mesh["vertices"], mesh["faces"]
    else:
        v, f = mesh.vertices, mesh.faces
    v = torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v)
    device = v.device if device is None else device
    v = v.to(device, torch.float32)
    f = torch.as_tensor(np.asarray(f) if not torch.is_tensor(f) else f).to(device, torch.int64)
    return v.reshape(-1, 3), f.reshape(-1, 3)
