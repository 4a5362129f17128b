"""The history of the outputs folder in the page: listing the job folders, showing one, reusing its settings,
and the result views (preview video, 3D view, downloads) of a finished or earlier job."""
import html
import os
import struct
import sys
from pathlib import Path

from ..jobs import folder as job_folder
from ..jobs.kept_sampling import SAMPLING_KEPT
from .download_row import download_choices, no_downloads, row_updates
from .family_view import family_of
from .history_list import card_model, export_tag, job_words, source_words
from .lazy import gr
from .names import downloads, input_copies
from .pagestate import LABELS
from ..settings import PRESETS, SETTINGS, GenerationSettings, submitted_settings
from ..jobs.limits import report_limits
from .status import badge_html, hide_paths, md_escape, message_html, status_box, unsaid_warnings
from .values import OTHER_KNOBS, PRESET_KNOBS

# The page controls "Use these settings" sets, in the order of its answer (after the preset): the knobs a preset
# leaves alone, the preset's knobs, then the text tab's own; page_events.py wires the click's outputs in this order.
RELOADED_KNOBS = (*[n for n in OTHER_KNOBS if SETTINGS[n].ui.place != "text"], *PRESET_KNOBS,
                  *[n for n in OTHER_KNOBS if SETTINGS[n].ui.place == "text"])
# The files the 3D view shows, the first one a job wrote: the GLB, else a level of detail, else the print's STL
# (never a PLY: Gradio's splat viewer for Gaussians is heavy without a GPU; a 3MF or USDZ it cannot read).
VIEWED = ("glb", "glb_lod1", "glb_lod2", "glb_lod3", "stl")
# What follows them in the answer: the job's inputs and its tab (HistoryViews._reuse_inputs), then its model family.
REUSED_INPUTS = ("tabs", "mode", "prompt", "mesh", "look_prompt", "look_image", "single", "multi", "family")
# A picked folder's states whose result.npz, when there, an export can use (kept_sampling.py).
STOPPED_STATES = ("failed", "cancelled", "interrupted")
# The glTF extension of Draco-compressed geometry, and the type of a GLB's JSON chunk ("JSON" little-endian).
DRACO = "KHR_draco_mesh_compression"


class HistoryViews:
    """TrellisApp's history and result views (a mixin: uses self.runner, self.defaults, self._tmp)."""

    def show_history(self, folder_name):
        folder = self._job_folder(folder_name)
        if folder is None:
            return (message_html("error", "That job folder is gone; press Refresh."), "", *self._empty_results())
        state = folder.state(self._running_dirs())
        text = f"Showing {job_words(folder.path, folder.settings_record() or {})} ({state})"
        err = folder.error()
        if err and err.get("error"):                # upload paths (Gradio's temp folder) by their file names
            inputs = (folder.settings_record() or {}).get("inputs")
            text += f": {hide_paths(err['error'], inputs if isinstance(inputs, list) else [])}"
        if state in STOPPED_STATES and (folder.settings_record() or {}).get("kind") != "export" \
                and folder.existing("result"):          # stopped after its sampling: Export again needs no sampling
            text += " " + SAMPLING_KEPT.format(how="Export again")
        # its destination's limits said once, in their badge (export_line leaves them out)
        badge = badge_html(report_limits(folder.export_report() or {}))
        return (status_box("history", html.escape(text) + badge), *self._results(folder, warnings=True))

    def show_picked(self, folder_name):
        """show_history's answer and the Model choice set to the family of the job shown (its Output settings then
        grey what that family does not use)."""
        folder = self._job_folder(folder_name)
        record = folder.settings_record() if folder else None
        return (*self.show_history(folder_name), family_of(record) if isinstance(record, dict) else gr.skip())

    def reuse_settings(self, folder_name):
        """[preset, the value of each RELOADED_KNOBS control, *REUSED_INPUTS] of a past job: the settings it was asked
        to run with (requested_settings, not a CPU's lowered ones) and its model family back in the page, randomize
        off so that its seed is the one used."""
        folder = self._job_folder(folder_name)
        record = folder.settings_record() if folder else None
        try:
            s = requested_settings(record)
        except ValueError:
            gr.Warning("Pick a past job first (its settings.json could not be read).")
            return [gr.skip()] * (1 + len(RELOADED_KNOBS) + len(REUSED_INPUTS))
        gr.Info(f"Settings of {job_words(folder.path, record)} loaded (seed {s.seed}, randomize off).")
        preset = s.preset if s.preset in PRESETS else gr.skip()
        values = {**s.to_dict(), "randomize_seed": False}
        return [preset, *[values[n] for n in RELOADED_KNOBS], *self._reuse_inputs(folder, record), family_of(record)]

    def _reuse_inputs(self, folder, record: dict) -> list:
        """[tab, mode, prompt, 3-D model, look prompt, look photo, single image, views] of a past job: its inputs
        (copies in its folder) back in their tab, ready to run again. One image (a batch item too) goes to the Single
        image tab, several to Multiple views; a job whose images are gone leaves the inputs as they are."""
        skip = gr.skip()
        prompt = record.get("prompt") if isinstance(record.get("prompt"), str) else None
        if record.get("kind") == "text" and prompt:
            return [gr.Tabs(selected="text"), "text", prompt, skip, skip, skip, skip, skip]
        files = folder.file_kinds()
        if record.get("kind") == "variant":
            photo = files.get("input")
            mesh = files.get("mesh")
            mesh = input_copies([mesh], [record.get("mesh")], self._tmp / "inputs" / folder.name)[0] if mesh else None
            return [gr.Tabs(selected="variant"), "variant", skip, mesh or skip, prompt or "",
                    photo if photo and not prompt else None, skip, skip]
        images = [files[k] for k in sorted((k for k in files if k == "input" or k.startswith("input_")),
                                           key=lambda k: 1 if k == "input" else int(k.split("_")[1]))]
        # back under the names they were given: the next job is named as the first one was (chair_s….glb)
        images = input_copies(images, record.get("inputs"), self._tmp / "inputs" / folder.name)
        if len(images) == 1:
            return [gr.Tabs(selected="single"), "single", skip, skip, skip, skip, images[0], skip]
        if len(images) > 1:
            return [gr.Tabs(selected="multi"), "multi", skip, skip, skip, skip, skip, images]
        return [skip] * 8

    # ------------------------------------------------------------------ helpers
    def _running_dirs(self) -> set:
        return {j.out_dir for j in self.runner.list() if j.out_dir and j.state not in ("done", "failed", "cancelled")}

    def _history_choices(self) -> list:
        return job_folder.list_history(self.runner.outputs_dir, self._running_dirs())

    def _job_folder(self, name) -> "job_folder.JobFolder | None":
        return job_folder.find(self.runner.outputs_dir, name)

    def _empty_results(self) -> tuple:
        # video, model, file choice, download button, files
        return (gr.update(value=None, label=LABELS["video"]), gr.update(value=None, label=LABELS["model"]),
                *no_downloads(), None)

    def _results(self, folder, name: str | None = None, warnings: bool = False) -> tuple:
        """(info, video, model, file choice, download button, files) for a job folder (a JobFolder); the job's
        warnings in the info only with `warnings` (a job that ran in this page has them in its status box)."""
        # The browser gets the results under names of their own (names.py), the folder keeps model.glb & co.
        named = downloads(folder, self._tmp / "downloads")
        mp4 = str(named["mp4"]) if "mp4" in named else None
        kind = next((k for k in VIEWED if k in named), None)
        shown = None if kind is None else str(named[kind])
        if shown is not None and shown.endswith(".glb"):
            # export.json says whether the job's GLB is Draco-compressed (its LODs: the file's JSON tells)
            draco = (folder.export_report() or {}).get("draco") if kind == "glb" else None
            shown = viewable_glb(shown, self._tmp / "viewer", draco if isinstance(draco, bool) else None)
        return (result_info(folder, name, warnings), gr.update(value=mp4, label=LABELS["video"]),
                gr.update(value=shown, label=LABELS["model"]), *row_updates(download_choices(folder, named)),
                [str(p) for p in folder.listed_files()] or None)


def viewable_glb(path: str, folder, draco: bool | None = None) -> str:
    """A GLB the 3D view shows without the internet: a Draco-compressed one decoded into `folder` (Gradio's viewer
    would fetch its Draco decoder from a CDN: offline, nothing is drawn), any other as it is. `draco`: whether it is
    Draco-compressed, when the caller knows (the job's export.json); None: its JSON chunk is read to tell (only a
    Draco file is read whole)."""
    from trellis.export.formats import plain_glb

    try:
        stat = os.stat(path)
        target = Path(folder) / f"{stat.st_mtime_ns:x}-{stat.st_size:x}" / os.path.basename(path)
        if target.is_file():
            return str(target)
        if not (glb_uses_draco(path) if draco is None else draco):
            return path
        data = Path(path).read_bytes()
        plain = plain_glb(data)
        if plain is data:                  # no Draco in it after all
            return path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(plain)
        os.replace(tmp, target)
        return str(target)
    except Exception as err:     # a damaged file (DracoPy has errors of its own) is shown as written, as before
        print(f"warning: the 3D view shows {os.path.basename(path)} as written ({type(err).__name__}: {err})",
              file=sys.stderr)
        return path


def glb_uses_draco(path) -> bool:
    """Whether the binary glTF at `path` has Draco-compressed geometry, from its 12-byte header and JSON chunk only
    (the binary chunk after them is never read). ValueError (gltf_scene.GltfError): not a GLB whose first chunk is
    its JSON, or one cut short inside it."""
    from trellis.representations import gltf_scene

    with open(path, "rb") as f:
        head = f.read(20)
        json_length = struct.unpack_from("<I", head, 12)[0] if len(head) == 20 else 0
        doc = gltf_scene.read_glb_json(head + f.read(json_length))
    listed = [*(doc.get("extensionsUsed") or []), *(doc.get("extensionsRequired") or [])]
    # a primitive may carry the extension while the lists (wrongly) leave it out: the viewer would still decode it
    primitives = [p for m in doc.get("meshes") or [] if isinstance(m, dict)
                  for p in m.get("primitives") or [] if isinstance(p, dict)]
    return DRACO in listed or any(DRACO in (p.get("extensions") or {}) for p in primitives)


def requested_settings(record) -> GenerationSettings:
    """The settings a past job was asked to run with, and the seed it used: settings.json's settings with the values
    the job ran with instead (a CPU's lowered ones, a family's own texture) put back. ValueError: a record without
    readable settings."""
    return submitted_settings(GenerationSettings.from_json(record), record)


def result_info(folder, name: str | None = None, warnings: bool = False) -> str:
    """The line under a job's result (Markdown): its name or prompt, seed, model, time, export report, the folder;
    its warnings with `warnings`."""
    record = folder.settings_record() or {}
    s = record.get("settings") or {}
    timings = folder.timings() or {}
    bits = []
    if name:
        bits.append(f"**{md_escape(name)}**")
    if isinstance(record.get("prompt"), str):
        bits.append(f"**Prompt:** {md_escape(record['prompt'][:200])}")
    if isinstance(record.get("mesh"), str):
        bits.append(f"**3D model:** {md_escape(os.path.basename(record['mesh']))}")
    tag = export_tag(record)
    if tag is not None:         # written from an earlier job's result: nothing was sampled
        bits.append(f"**{md_escape(tag[:1].upper() + tag[1:])}**, exported from "
                    f"{md_escape(source_words(folder.path.parent, record))} (not sampled again)")
    if "seed" in record:
        bits.append(f"**Seed used:** {record['seed']}")
    bits.append(f"**Model:** {md_escape(card_model(record))}")
    if isinstance(timings.get("total"), (int, float)):
        bits.append(f"**{'Export time' if tag else 'Time'}:** {timings['total']:.1f} s")
    if s and tag is None:
        bits.append(f"**Steps:** {s.get('ss_steps')} + {s.get('slat_steps')} · **preset:** {s.get('preset')}")
    report = folder.export_report()
    if report:
        bits.append(export_line(report))
    warned = unsaid_warnings(timings.get("warnings"), report_limits(report or {})) if warnings else []
    return " · ".join(bits) + "".join(f"\n\n⚠ {md_escape(w)}" for w in warned) + f"\n\nFolder: `{folder.path}`"


def export_line(report: dict) -> str:
    """export.json in a few lines: triangles, the size in metres, watertight, the texture, each file's size, the
    levels of detail (the destination's limits are the status box's badge)."""
    try:
        size = report["size_m"]
        texture = report.get("texture") or {}
        files = ", ".join(f"{md_escape(str(e['name']))} {e['bytes'] / 1e6:.1f} MB" for e in report["files"].values())
        parts = [f"{report['triangles']} triangles", f"{size['width']:.2f} × {size['depth']:.2f} × "
                 f"{size['height']:.2f} m", "watertight" if report["watertight"] else "not watertight"]
        if texture:
            parts.append(f"{texture['size'][0]}² {str(texture.get('format', 'png')).upper()} texture"
                         + (" + normal map" if texture.get("normal_map") else ""))
        if report.get("draco"):
            parts.append("Draco")
        if report.get("lods"):
            parts.append(", ".join(f"LOD{i} " + ("not made" if lod["triangles"] is None else
                                                 f"{lod['triangles']} triangles")
                                   for i, lod in enumerate(report["lods"], start=1)))
        # the destination's limits are the status box's badge (status.badge_html): said once
        return f"**Export:** {' · '.join(parts)} · {files}"
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return "**Export:** (export.json cannot be read)"
