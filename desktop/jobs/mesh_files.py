"""A job's mesh files from its settings: the library's export (``trellis.export.ExportJob``) with the face target the
settings and their destination allow, then every mesh format asked for, the levels of detail and export.json (what
the files hold, and whether they meet the destination's limits)."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

from ..settings import GenerationSettings
from ..settings_table import MESH_FORMATS
from .background import Background
from .folder import JobFolder, lod_kind
from .job import Job
from .progress import textured_files

LOD_STEP = 0.25          # each level of detail keeps a quarter of the previous one's triangles
# A user's own model keeps its place and size, and its vertices: normals are not split at creases.
OWN_MESH_OPTIONS = {"height": None, "pivot": None, "crease_angle": 180.0}


class timed:
    """`with timed(job, "glb"):` adds the block's seconds to job.timings["export"]["glb"] (also on failure)."""

    def __init__(self, job: Job, name: str):
        self.job, self.name = job, name

    def __enter__(self):
        self.t = time.perf_counter()

    def __exit__(self, *exc):
        self.job.timings.setdefault("export", {})[self.name] = time.perf_counter() - self.t


def face_target(settings: GenerationSettings, n_faces: int):
    """The export's ``target_faces``: the setting's, or none (Simplify's fraction), lowered to the destination's
    triangle limit where the budget would pass it."""
    from trellis.export import DESTINATION_LIMITS, face_budget

    most = DESTINATION_LIMITS.get(settings.destination, {}).get("max_triangles")
    if most is None or face_budget(n_faces, settings.simplify, settings.target_faces) <= most:
        return settings.target_faces
    return most


def bake_job(gaussian, mesh, settings: GenerationSettings, early: bool):
    """The library's export of (gaussian, mesh) with the job's settings: clean-up, UV unwrap and texture bake,
    the one textured mesh every mesh file is written from; the clean-up alone (``ShapeOnly``) where no file holds
    a texture."""
    from trellis.export import ExportJob

    faces = mesh[1] if isinstance(mesh, (tuple, list)) else mesh["faces"] if isinstance(mesh, dict) else mesh.faces
    if not textured_files(settings):
        return ShapeOnly(gaussian, mesh, settings, face_target(settings, int(faces.reshape(-1, 3).shape[0])))
    return ExportJob(gaussian, mesh, simplify=settings.simplify, fill_holes=settings.fill_holes,
                     texture_size=settings.texture_size, bake_mode=settings.bake_mode, early=early,
                     nviews=settings.bake_views, render_resolution=settings.bake_resolution,
                     target_faces=face_target(settings, int(faces.reshape(-1, 3).shape[0])),
                     normal_map=settings.normal_map and "glb" in settings.formats and not settings.geometry_only)


class ShapeOnly:
    """The export's clean-up alone (``trellis.export.clean_shape``: the mesh the textured export would unwrap, no UV
    unwrap, renders or texture), for files without a texture; the same `bake` / `close` as an ExportJob."""

    stage = "shape"             # the job's progress stage (an ExportJob's: "bake")

    def __init__(self, gaussian, mesh, settings: GenerationSettings, target_faces):
        self.gaussian, self.mesh, self.settings, self.target_faces = gaussian, mesh, settings, target_faces

    def bake(self, progress=None, cancel=None):
        from trellis.export import clean_shape

        s = self.settings
        return clean_shape(self.mesh, simplify=s.simplify, fill_holes=s.fill_holes, target_faces=self.target_faces,
                           device=self.gaussian.device, progress=progress, cancel=cancel)

    def close(self) -> None:
        pass


class OwnMeshBake:
    """A new look baked onto the user's own model (``trellis.export.keep_mesh.bake_onto_mesh``): its vertices, faces
    and usable UVs kept; the same `bake` / `close` as an ExportJob. For files without a texture: the model as it is,
    nothing baked (stage "shape")."""

    def __init__(self, gaussian, own, settings: GenerationSettings):
        self.gaussian, self.own, self.settings = gaussian, own, settings
        self.stage = "bake" if textured_files(settings) else "shape"

    def bake(self, progress=None, cancel=None):
        from trellis.export import bake_onto_mesh, clean_shape

        s = self.settings
        if self.stage == "shape":               # nothing cleaned up either: the user's own vertices and faces
            return clean_shape((self.own.vertices, self.own.faces), simplify=0, fill_holes=False, cancel=cancel)
        return bake_onto_mesh(self.gaussian, self.own.vertices, self.own.faces, self.own.uvs,
                              texture_size=s.texture_size, bake_mode=s.bake_mode, nviews=s.bake_views,
                              render_resolution=s.bake_resolution, progress=progress, cancel=cancel)

    def close(self) -> None:
        pass


def write_mesh_files(job: Job, folder: JobFolder, settings: GenerationSettings, textured, progress,
                     own: bool = False, together: bool = False, cancel=None) -> None:
    """Every mesh format of the settings, the GLB's levels of detail, then export.json. `own`: `textured` is the
    user's model (OwnMeshBake): written where and as large as it was, with its own vertices, and no LODs.
    `together`: the formats this process has written before are written side by side (``side_by_side``; the same
    files; timings["export"]["side_by_side"] names them). `cancel` is asked by the LODs and before each file is
    opened (a cancelled job leaves no partial file)."""
    kinds = [kind for kind in MESH_FORMATS if kind in settings.formats]
    options = {}
    for kind in kinds:                         # in order, so that a job's warnings keep their order
        options[kind] = dict(file_options(job, settings, kind), cancel=cancel)
        if own:
            options[kind].update(OWN_MESH_OPTIONS)
    together = side_by_side(kinds) if together else []
    # export.json's print shape facts (a mesh pass of their own) made beside the files, which they do not depend on
    facts = Background("trellis-report-facts", lambda: shape_facts(textured, settings)) if together else None
    if together:
        job.timings.setdefault("export", {})["side_by_side"] = together
        for kind in together:
            progress(kind, 0, 1)
        for kind, files, seconds in write_together(folder, textured, together, options):
            job.timings.setdefault("export", {})[kind] = seconds
            job.files.update(files)
            progress(kind, 1, 1)
    for kind in kinds:
        if kind in together:
            continue
        with timed(job, kind):
            progress(kind, 0, 1)
            job.files.update(folder.write_mesh(kind, textured, **options[kind]))
            progress(kind, 1, 1)
        with _written_lock:
            _written.add(kind)
    lods, refused = [], []
    if "glb" in kinds and settings.lods > 1 and not own:
        from trellis.export import LodTargetError, lod_meshes

        with timed(job, "lods"):
            shares = [LOD_STEP ** level for level in range(1, settings.lods)]
            try:
                made = lod_meshes(textured, shares, cancel=cancel)
            except LodTargetError as err:       # the levels made are written; the others are said, not faked
                made, refused = err.made, err.refused
                job.warn(f"Levels of detail not made: {err}.")
            for level, (share, lod) in enumerate(zip(shares, made), start=1):
                if lod is None:
                    continue
                kind = lod_kind(level)
                job.files.update(folder.write_mesh(kind, lod, format="glb", cancel=cancel,
                                                   **file_options(job, settings, "glb")))
                lods.append((share, lod, job.files[kind]))
    with timed(job, "report"):
        job.files.update(folder.write_json("report", export_report(textured, job.files, settings, lods,
                                                                    facts.result() if facts else None, refused)))


# The mesh formats this process has written: the first file of a format is written alone, as its writer imports
# modules with native parts then (two threads importing those for the first time at once can deadlock); from then
# on the writers run side by side, their texture encoders (zlib, libjpeg, libwebp) leaving the GIL to each other.
_written: set = set()
_written_lock = threading.Lock()


def side_by_side(kinds: list) -> list:
    """Of `kinds`, those written side by side: every one this process has written before, when two or more are."""
    with _written_lock:
        known = [kind for kind in kinds if kind in _written]
    return known if len(known) > 1 else []


def write_together(folder: JobFolder, textured, kinds: list, options: dict):
    """[(kind, files, seconds)] of `kinds` written by one thread each; every writer has ended (its file complete, or
    gone) before this returns or raises the first error in `kinds`' order."""
    def one(kind):
        t = time.perf_counter()
        files = folder.write_mesh(kind, textured, **options[kind])
        return kind, files, time.perf_counter() - t

    with ThreadPoolExecutor(max_workers=len(kinds), thread_name_prefix="trellis-mesh-file") as pool:
        futures = [pool.submit(one, kind) for kind in kinds]
        wait(futures)
    return [future.result() for future in futures]


def file_options(job: Job, settings: GenerationSettings, kind: str) -> dict:
    """The options of ``trellis.export.formats.write`` for a file of `kind` from the job's settings; a texture
    format the file cannot hold becomes PNG, with a warning."""
    from trellis.export.formats import FORMATS as FILE_FORMATS

    texture = settings.texture_format
    allowed = FILE_FORMATS[kind].texture_formats
    if kind == "obj":
        texture = "png"                        # the job folder's OBJ keeps its model.png beside it
    elif allowed and texture not in allowed and not settings.geometry_only:
        job.warn(f"A {kind.upper()} cannot hold a {texture.upper()} texture: it was written with PNG.")
        texture = "png"
    return dict(placement(settings), up=None if settings.up == "auto" else settings.up, units=settings.units,
                geometry_only=settings.geometry_only, texture_format=texture, draco=settings.draco,
                print_ready=settings.print_ready)


def placement(settings: GenerationSettings) -> dict:
    """The files' height and pivot in the library's terms (pivot "origin", as generated, is its None)."""
    return dict(height=settings.height, pivot=None if settings.pivot == "origin" else settings.pivot)


def shape_facts(textured, settings: GenerationSettings) -> dict:
    """The print shape's facts export.json gives for `textured` written with `settings` (``export_report``'s)."""
    from trellis.export import placed_shape_facts

    return placed_shape_facts(textured, print_ready=settings.print_ready, **placement(settings))


def export_report(textured, files: dict, settings: GenerationSettings, lods=(), facts: dict | None = None,
                  refused=()) -> dict:
    """export.json: what the mesh files hold and, for a destination, whether they meet its limits
    (``trellis.export.describe_export``); `facts`: ``shape_facts`` made already; `refused`: the levels of detail
    refused (``trellis.export.lod_targets.LodRefusal``)."""
    from trellis.export import describe_export

    destination = None if settings.destination == "none" else settings.destination
    return describe_export(textured, {kind: files[kind] for kind in MESH_FORMATS if kind in files},
                           target_faces=settings.target_faces, texture_format=settings.texture_format,
                           geometry_only=settings.geometry_only, draco=settings.draco,
                           print_ready=settings.print_ready, lods=list(lods), destination=destination,
                           facts=facts, lods_refused=list(refused), **placement(settings))
