"""A job's mesh files from its settings: the library's export (``trellis.export.ExportJob``, the export's scheduler)
with the options the settings give (``export_options``: the face target within the destination's limit included),
then every mesh format asked for, the levels of detail and export.json (what the files hold, and whether they meet the
destination's limits)."""
from __future__ import annotations

import threading
import time

from ..settings import GenerationSettings
from ..settings_table import MESH_FORMATS
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


def destination(settings: GenerationSettings):
    """The settings' destination in the library's terms (None: none)."""
    return None if settings.destination == "none" else settings.destination


def export_options(settings: GenerationSettings):
    """The library's ``ExportOptions`` of a job's settings: the clean-up (Simplify, hole filling, the face target
    within the destination's triangle limit), the bake (texture size, mode, views) and the GLB's normal map."""
    from trellis.export import ExportOptions

    return ExportOptions(simplify=settings.simplify, fill_holes=settings.fill_holes,
                         texture_size=settings.texture_size, bake_mode=settings.bake_mode, nviews=settings.bake_views,
                         render_resolution=settings.bake_resolution, target_faces=settings.target_faces,
                         destination=destination(settings), topology=settings.topology,
                         normal_map=settings.normal_map and "glb" in settings.formats and not settings.geometry_only)


def face_target(settings: GenerationSettings, n_faces: int):
    """The export's ``target_faces`` for a mesh of `n_faces` faces: the setting's, or none (Simplify's fraction),
    lowered to the destination's triangle limit where the budget would pass it."""
    return export_options(settings).face_target(n_faces)


def start_export(gaussian, mesh, settings: GenerationSettings, own_mesh=None, early: bool = False, beside=(),
                 cancel=None):
    """The library's export of (gaussian, mesh) with the job's settings, started: its scheduler
    (``trellis.export.ExportJob``), which runs `beside` (``trellis.export.SideWork``) beside it and whose ``bake``
    makes the one mesh every mesh file is written from: clean-up, UV unwrap and texture bake; the clean-up alone
    where no file holds a texture; with `own_mesh` (``trellis.representations.mesh_input.UserMesh``), the look
    baked onto the user's model, its vertices, faces and usable UVs kept (nothing baked where no file holds a
    texture). No mesh file asked for: nothing is exported, only `beside` runs. `early`: the decimation starts now,
    to overlap the caller's work."""
    from trellis.export import ExportJob

    meshes = any(kind in settings.formats for kind in MESH_FORMATS)
    source = (mesh if own_mesh is None else own_mesh) if meshes else None
    return ExportJob(gaussian, source, export_options(settings), texture=textured_files(settings),
                     keep_mesh=own_mesh is not None, early=early, beside=beside, cancel=cancel)


def write_mesh_files(job: Job, folder: JobFolder, settings: GenerationSettings, textured, progress,
                     own: bool = False, together=None, cancel=None) -> None:
    """Every mesh format of the settings, the GLB's levels of detail, then export.json. `own`: `textured` is the
    user's model (``start_export``'s `own_mesh`): written where and as large as it was, with its own vertices, and no
    LODs. `together`: the ``trellis.export.ExportJob`` that made `textured`, whose scheduler writes the formats this
    process has written before side by side (``side_by_side``; the same files; timings["export"]["side_by_side"]
    names them) and export.json's facts beside them. `cancel` is asked by the LODs and before each file is opened (a
    cancelled job leaves no partial file)."""
    kinds = [kind for kind in MESH_FORMATS if kind in settings.formats]
    options = {}
    for kind in kinds:                         # in order, so that a job's warnings keep their order
        options[kind] = dict(file_options(job, settings, kind), cancel=cancel)
        if own:
            options[kind].update(OWN_MESH_OPTIONS)
    export, together = together, side_by_side(kinds) if together is not None else []
    facts = None
    if together:
        from trellis.export import SideWork

        # export.json's print shape facts (a mesh pass of their own) made beside the files, which they do not need
        facts = SideWork("report-facts", lambda stopped: shape_facts(textured, settings))
        export.start_side(facts)
        job.timings.setdefault("export", {})["side_by_side"] = together
        for kind in together:
            progress(kind, 0, 1)
        writers = {kind: (lambda kind=kind: folder.write_mesh(kind, textured, **options[kind])) for kind in together}
        for kind, files, seconds in export.side_by_side(writers):
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
        note_written(kind)
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
        made = export.side_result(facts.name) if facts else None
        job.files.update(folder.write_json("report", export_report(textured, job.files, settings, lods, made, refused,
                                                                   cancel)))


# The kinds of mesh file this process has written: the first file of a kind
# is written alone, as its writer imports modules with native parts then (two threads importing those for the first
# time at once can deadlock); from then on the writers run side by side, their texture encoders (zlib, libjpeg,
# libwebp) leaving the GIL to each other.
_written: set = set()
_written_lock = threading.Lock()


def note_written(kind: str) -> None:
    """A file of `kind` was written in this process: later ones may be written beside other work."""
    with _written_lock:
        _written.add(kind)


def written_before(kinds: list) -> list:
    """Of `kinds`, those this process has written before."""
    with _written_lock:
        return [kind for kind in kinds if kind in _written]


def side_by_side(kinds: list) -> list:
    """Of `kinds`, those written side by side: every one this process has written before, when two or more are."""
    known = written_before(kinds)
    return known if len(known) > 1 else []


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
                  refused=(), cancel=None) -> dict:
    """export.json: what the mesh files hold and, for a destination, whether they meet its limits
    (``trellis.export.describe_export``); `facts`: ``shape_facts`` made already; `refused`: the levels of detail
    refused (``trellis.export.lod_targets.LodRefusal``)."""
    from trellis.export import describe_export

    return describe_export(textured, {kind: files[kind] for kind in MESH_FORMATS if kind in files},
                           target_faces=settings.target_faces, texture_format=settings.texture_format,
                           geometry_only=settings.geometry_only, draco=settings.draco,
                           print_ready=settings.print_ready, lods=list(lods), destination=destination(settings),
                           facts=facts, lods_refused=list(refused), cancel=cancel, **placement(settings))
