"""Export again: the job it exports, the files it writes and the settings it uses, said beside its button before it
runs. An export takes the picked job's own settings with the page's Output settings on top: the file choices
(destination, formats, triangles, placement) as the page shows them, and a quality knob (texture, bake views,
preview) only where it was moved off the preset, so that on a CPU the job's lowered values stay lowered, as
Generate's do (GenerationSettings.for_device). A TRELLIS.2 job's export is its PBR bake (its PLY the baked mesh with
vertex colours, its preview rendered again from that bake), said so."""
from ..jobs.export_reuse import source_preview
from ..jobs.progress import textured_files
from ..settings import CPU_REASONS, EXPORT_FIELDS, GenerationSettings, device_changes, with_job_texture
from ..settings_table import MESH_FORMATS, triangle_share
from ..families import family_of_record
from .history_list import DESTINATION_WORDS
from .lazy import gr
from .status import md_escape
from .values import LABELS, OTHER_KNOBS, PRESET_KNOBS, settings_from_values

# The export settings always taken from the page: which files, and where they go.
FILE_FIELDS = tuple(name for name in EXPORT_FIELDS if name in OTHER_KNOBS)
NOTHING_PICKED = ("Pick a finished job above: **Export again** writes its files again with the Output settings "
                  "(formats, destination, triangles, size), without sampling it again.")


def export_changes(page: GenerationSettings) -> dict:
    """The changes an export makes to its source's settings: FILE_FIELDS as the page shows them, and the other
    export settings the user moved off the preset (`page.explicit`)."""
    return {name: getattr(page, name) for name in EXPORT_FIELDS if name in FILE_FIELDS or name in page.explicit}


class ExportPanel:
    """TrellisApp's Export again (a mixin: uses self.runner, self.defaults and self._job_folder)."""

    def _export_source(self, folder_name) -> tuple:
        """(the picked job's folder, its job id); ValueError when no finished job is picked."""
        folder = self._job_folder(folder_name)
        record = folder.settings_record() if folder else None
        job_id = record.get("job_id") if isinstance(record, dict) else None
        if not isinstance(job_id, str):
            raise ValueError("Pick a finished job in the History first: Export again writes its files again.")
        return folder, job_id

    def _export_work(self, folder_name, settings) -> tuple:
        """(name, submit()) of an export of the picked history job with the page's export settings."""
        from ..jobs import NoResultError, UnknownJobError

        folder, job_id = self._export_source(folder_name)
        changes = export_changes(settings)

        def submit():
            try:
                return self.runner.submit_export(job_id, **changes)
            except (NoResultError, UnknownJobError) as err:
                raise ValueError(f"This job cannot be exported again: {err}") from None
        return (f"export of {folder.name}", submit)

    def export_plan(self, folder_name, page: GenerationSettings) -> tuple:
        """(the settings submitted, those the export runs with on this app's device, the source preview it links
        or None) for an export of the picked job with the page's settings `page`; ValueError as `_export_work`."""
        folder, job_id = self._export_source(folder_name)
        job = self.runner.get(job_id)
        base = job.used_settings if job is not None and job.used_settings is not None else \
            GenerationSettings.from_json(folder.settings_record())
        submitted = base.replace(**export_changes(page))
        used = submitted.for_device(self.runner.devices[0])
        family = family_of_record(folder.settings_record())
        if not family.uses("bake_views"):      # a bake from its own materials: its preview is rendered again from it
            return submitted, family_device_settings(family, submitted, self.runner.devices[0]), None
        # an export's result is its source's, and so is the preview it can take
        origin = self.runner.get(job.source_id) if job is not None and job.kind == "export" else job
        files = origin.files if origin is not None else folder.file_kinds()
        return submitted, used, source_preview(files, used)

    def export_note(self, folder_name, preset, values: dict) -> str:
        """The line beside Export again: what it would write now, and with which settings."""
        if not folder_name:
            return NOTHING_PICKED
        try:
            page = settings_from_values(values, preset, self.defaults)
            submitted, used, preview = self.export_plan(folder_name, page)
        except ValueError as err:
            return f"**Export again** cannot run yet: {md_escape(str(err))}"
        family = family_of_record(self._job_folder(folder_name).settings_record())
        return plan_text(submitted, used, preview is not None, pbr=not family.uses("bake_views"))


def family_device_settings(family, settings: GenerationSettings, device: str) -> GenerationSettings:
    """`settings` lowered for `device` where a job of `family` reads the value (a setting it ignores stays); a
    texture size not lowered is the one the family's job bakes (``settings.with_job_texture``)."""
    lowered = settings.for_device(device)
    used = settings.replace(**{name: getattr(lowered, name) for name in device_changes(settings, lowered)
                               if family.uses(name)})
    return with_job_texture(family, settings, used)


def plan_text(submitted: GenerationSettings, used: GenerationSettings, preview_kept: bool, pbr: bool = False) -> str:
    """**Export again** writes GLB, STL for 3D print: 5,000 triangles · 1.80 m tall · ... (the settings `used`; the
    values lowered for this device from `submitted` named)."""
    formats = ", ".join(kind.upper() for kind in used.formats)
    where = DESTINATION_WORDS.get(used.destination)
    head = f"**Export again** writes {formats}" + (f" for {where}" if where else "")
    parts, textured = [], textured_files(used)
    if any(kind in used.formats for kind in MESH_FORMATS):
        parts.append(f"{used.target_faces:,} triangles" if used.target_faces else
                     f"{triangle_share(1 - used.simplify)} of the triangles")
        if used.height:
            parts.append(f"{used.height:g} m tall")
        parts += [f"pivot {used.pivot}"] if used.pivot != "origin" else []
        parts += [f"{used.up.upper()} up"] if used.up != "auto" else []
        parts += [f"in {used.units}"] if used.units != "m" else []
        parts += ["print-ready shell"] if used.print_ready and {"stl", "3mf"} & set(used.formats) else []
        if textured and pbr:               # TRELLIS.2: its voxels' colour, metal and roughness, no rendered views
            parts.append(f"{used.texture_size}² {used.texture_format.upper()} PBR textures (colour, "
                         "metallic-roughness)" + (" + normal map" if used.normal_map else ""))
        elif textured:
            parts.append(f"{used.texture_size}² {used.texture_format.upper()} texture baked from {used.bake_views} "
                         f"views of {used.bake_resolution} px" + (" + normal map" if used.normal_map else ""))
        else:
            parts.append("no texture to bake")
        parts += ["Draco"] if used.draco and "glb" in used.formats else []
        parts += [f"{used.lods - 1} levels of detail"] if used.lods > 1 and "glb" in used.formats else []
    if "mp4" in used.formats:
        parts.append("the job's own preview (not rendered again)" if preview_kept else
                     f"a preview of {used.video_frames} frames at {used.video_resolution} px")
    # the lowered values that shape a file it makes (the texture's none without a texture, the preview's none when kept)
    made = set(used.formats) - ({"glb", "obj"} if not textured else set()) - ({"mp4"} if preview_kept else set())
    # only what the device lowered (a family's own larger texture is no lowering)
    lowered = [f"{LABELS.get(name, name)} {now} (not {was})" for name, (was, now) in
               device_changes(submitted, used).items() if set(CPU_REASONS[name][1]) & made and now < was]
    tail = f" Lowered for this computer: {', '.join(lowered)}." if lowered else ""
    return f"{head}: {' · '.join(parts)}.{tail}"


def wire_export_panel(app, note, history, preset, knobs: dict) -> None:
    """`note` follows the picked job and every setting of the page (the last change wins). Raw values, as Generate
    reads them: a value a slider is being widened to is not refused on its way."""
    names = [*PRESET_KNOBS, *OTHER_KNOBS]

    def update(folder_name, preset_name, *values):
        return app.export_note(folder_name, preset_name, dict(zip(names, values)))
    gr.on([history.change, preset.change, *[knobs[n].change for n in names]], update,
          [history, preset, *[knobs[n] for n in names]], note, trigger_mode="always_last", preprocess=False,
          api_visibility="private", show_progress="hidden", concurrency_limit=None)
