"""The browser app's page (TrellisApp): its layout, built from the settings table, and the handlers of
Generate, Cancel and new uploads. Its gradio_client endpoints are in endpoints.py, the history and result
views in history.py; status.py and values.py hold what the page shows and reads.
"""
import contextlib
import shutil
import tempfile
import threading
import time
from pathlib import Path

from ..jobs import folder as job_folder
from ..jobs.request import FieldNames, JobRequest, prompt_label
from ..families import get_family
from ..settings import DEFAULT_PRESET, PRESETS, SETTINGS, GenerationSettings, slider
from .batch_view import ROW_JS, BatchView, refusal_html, status_html, submit_items, wire_batch
from .download_row import EMPTY_LABEL, wire_download_row
from .endpoints import ApiEndpoints
from .expectations import MeshPreview, PromptTokens, text_size_control, wire_token_counts
from .errors import error_class, error_html, form_error_html
from .export_panel import NOTHING_PICKED, ExportPanel, wire_export_panel
from .family_view import FamilyChoice, refuse_other_family, wire_family
from .history import RELOADED_KNOBS, HistoryViews
from .history_tab import EMPTY as HISTORY_EMPTY, HistoryTab, wire_history_tab
from .knobs import KNOBS, PRESET_CHOICES_WITH_CUSTOM, start_note, wire_knobs
from .lazy import gr, load_gradio
from .places import wire_places
from .pagestate import LABELS, TabResults, buttons, marked_previous, wire_busy, wire_idle, wire_tabs
from .status import (POLL_S, device_line, hide_paths, idle_html, kept_files, md_escape, memory_line, model_name,
                     message_html, path_html)
from .output_layout import placed_lines
from .values import (DESTINATION_KNOBS, MESH_TYPES, OTHER_KNOBS, PRESET_KNOBS, choice_labels, collect_look,
                     collect_work, destination_values, file_of, is_slider, preset_values, settings_from_values)

ROOT = Path(__file__).resolve().parents[2]          # the repository
AFTER_STATUS = 8        # Generate's outputs after the status box: seed, the result column's six, the history box
EXAMPLES_DIR = ROOT / "assets" / "examples"
PAGE_NAMES = FieldNames(images="an image", prompt="a prompt", mesh="a 3D model", family="the Model choice")


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------

CSS = """
.td-status {padding: 10px 14px; border-radius: 8px; border: 1px solid var(--border-color-primary);
            background: var(--block-background-fill); min-height: 2.6em;}
.td-status progress {width: 100%; height: 10px; margin-top: 6px;}
.td-running, .td-queued {border-color: var(--color-accent);}
.td-done {border-color: #2e9d4f;}
.td-failed, .td-error {border-color: #d03b3b;}
.td-cancelled, .td-partial {border-color: #c98a16;}
.td-jobs {width: 100%; margin-top: 6px; font-size: 0.9em;}
.td-jobs td {padding: 2px 6px; border-top: 1px solid var(--border-color-primary);}
#td-files .label-clear-button {display: none;}
.td-row-open {background: none; border: none; padding: 0; font: inherit; color: var(--link-text-color);
              text-decoration: underline; cursor: pointer;}
.td-jobs tr[data-job] {cursor: pointer;}
#td-banner {border: 1px solid #d03b3b; border-radius: 8px; padding: 4px 12px;}
"""



def setting_control(row, value, overrides=None):
    """The page's control of one setting, from its row (settings_table.Ui), showing `value`; `overrides` replace
    what the row gives (e.g. choices that depend on this machine)."""
    ui = row.ui
    common = dict(label=ui.label, elem_id=ui.elem_id or f"td-{row.name}", **({"info": ui.info} if ui.info else {}))
    extra = dict(overrides or {})
    value = extra.pop("value", value)
    choices = extra.pop("choices", None)
    common.update(extra)
    if row.kind == "bool":
        return gr.Checkbox(value, **common)
    if row.kind == "choices":
        return gr.CheckboxGroup(choices or choice_labels(row.name), value=list(value), **common)
    if row.kind == "choice":
        return (gr.Dropdown if ui.widget == "dropdown" else gr.Radio)(choices or choice_labels(row.name), value=value,
                                                                      **common)
    if is_slider(row):
        # The useful range (settings.slider); a value beyond it widens the slider (knobs.widened).
        lo, hi, step = slider(row.name)
        return gr.Slider(min(lo, value), max(hi, value), value, step=step, **common)
    # An optional number box shows "none" as 0 (values.settings_from_values reads it so): 0 must not look invalid.
    lo = 0 if row.optional and row.lo > 0 else row.lo
    return gr.Number(value, precision=0 if row.kind == "int" else None, minimum=lo, maximum=row.hi, **common)


class TrellisApp(ApiEndpoints, HistoryViews, TabResults, HistoryTab, BatchView, ExportPanel):
    """The page and its handlers. Jobs started from a page are remembered per browser session, so
    that Cancel stops this page's jobs only."""

    def __init__(self, runner, defaults: GenerationSettings | None = None, model_problem: str | None = None):
        self.runner = runner
        self.defaults = defaults or GenerationSettings()
        self.model_problem = model_problem
        self._lock = threading.Lock()
        self._active: dict = {}                      # session hash -> [job ids]
        self._tmp = Path(tempfile.mkdtemp(prefix="trellis-desktop-ui-"))    # OBJ zips
        self.tokens = PromptTokens(getattr(runner, "text_model", None))
        self.mesh_preview = MeshPreview()
        self.family = FamilyChoice(runner)               # the Model choice and what it greys (family_view.py)

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)
        self.mesh_preview.close()

    # ------------------------------------------------------------------ page
    def header_text(self) -> str:
        """The page's title line: model (by its name: its folder's full path is the log's), device (a GPU's
        fast-path line: which renderer path it takes and, if the slower one, why) and outputs folder (~ for the home
        folder, the whole path its tooltip)."""
        text = getattr(self.runner, "text_model", None)
        text = f" · text model: `{model_name(text)}`" if text else ""
        memory = memory_line(self.runner.list())
        memory = f" · {md_escape(memory)}" if memory else ""
        return (f"# Trellis Desktop\nOne photo (or a prompt) in, a textured 3D model out. Model: "
                f"{get_family(self.family.running).words} `{model_name(self.runner.model_path)}`"
                f"{self.family.loaded_words()}{text} · "
                f"device: {device_line(self.runner.fast_paths())}{memory} · "
                f"outputs: {path_html(self.runner.outputs_dir)}")

    def build(self):
        load_gradio()
        d = self.defaults
        start = preset_values(DEFAULT_PRESET, d)
        k = {}                                       # setting name -> its control
        # Controls whose choices depend on this machine (the text models installed).
        machine = {"text_model_size": text_size_control(getattr(self.runner, "text_model", None))}
        choice = self.family
        machine.update(choice.overrides())                   # what the Model choice greys

        def place(where):
            # Every setting shown in this part of the page (settings_table.Ui), line by line (output_layout.py).
            for line in placed_lines(where):
                with gr.Row() if len(line) > 1 else contextlib.nullcontext():
                    for row in (r for r in line if r.name not in k):      # placed already: the pipeline type
                        k[row.name] = setting_control(row, start[row.name] if row.name in start
                                                      else getattr(d, row.name), machine.get(row.name))
        with gr.Blocks(title="Trellis Desktop", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
            # Re-read on every page load, so that a kernel that failed since the start shows up.
            header = gr.Markdown(self.header_text(), elem_id="td-header")
            demo.load(self.header_text, None, header, api_visibility="private", show_progress="hidden")
            if self.model_problem:
                gr.Markdown(f"**Model not found.** {self.model_problem}", elem_id="td-banner")
            # the open tab's mode, held in the page (a tab's select sets it there at once: a server-held State
            # could still be the previous tab's when Generate is pressed right after a tab switch)
            mode = gr.Textbox("single", visible=False, elem_id="td-mode")
            with gr.Row(elem_id="td-main"):
                with gr.Column(scale=1):
                    # wrap: every mode stays in view on a narrow window (no "..." menu)
                    with gr.Tabs(elem_id="td-tabs", overflow_behavior="wrap") as tabs:
                        with gr.Tab("Single image", id="single") as tab_single:
                            single = gr.Image(label="Image: drop, paste or click to upload", type="filepath",
                                              image_mode=None, sources=["upload", "clipboard"], height=300,
                                              elem_id="td-single")
                            examples = sorted(EXAMPLES_DIR.glob("*.png"))
                            if examples:
                                gr.Examples([[str(p)] for p in examples], inputs=[single], label="Examples",
                                            example_labels=[p.stem.capitalize() for p in examples])
                        with gr.Tab("Multiple views", id="multi") as tab_multi:
                            gr.Markdown("Several photos of **one** object from different sides (experimental: "
                                        "the views are combined while sampling, no training involved).")
                            multi = gr.Gallery(type="filepath", columns=3, height=300, elem_id="td-multi",
                                               **choice.multi_update(choice.running))
                            place("multi")
                        with gr.Tab("Batch", id="batch") as tab_batch:
                            gr.Markdown("Several images, **each its own job**: they are queued and each result "
                                        "is shown as it completes (and kept in the history).")
                            batch = gr.File(label="Images", file_count="multiple", file_types=["image"],
                                            elem_id="td-batch")
                            batch_zip = gr.DownloadButton("Download all results (zip)", visible=False,
                                                          elem_id="td-batch-zip")
                        with gr.Tab("Text", id="text") as tab_text:
                            prompt = gr.Textbox(label="Prompt: describe one object", lines=3, max_lines=8,
                                                placeholder="a red wooden chair with a tall back", elem_id="td-prompt",
                                                info="Name the object first: the text model reads 75 tokens (about "
                                                     "55 words) and the count below follows your typing.")
                            prompt_tokens = gr.HTML(self.tokens.html(""), elem_id="td-prompt-tokens")
                            place("text")
                        with gr.Tab("New look", id="variant") as tab_variant:
                            gr.Markdown("Keep the **shape** of a 3D model you have and give it a **new look**, "
                                        "from a prompt or a photo (the first stage is skipped).")
                            mesh = gr.File(label="3D model: GLB, OBJ, PLY or STL", file_types=list(MESH_TYPES),
                                           elem_id="td-mesh")
                            mesh_view = gr.Model3D(label="Your model (drag to turn)", height=240, visible=False,
                                                   elem_id="td-mesh-preview")
                            mesh_stats = gr.HTML("", visible=False, elem_id="td-mesh-stats")
                            look_prompt = gr.Textbox(label="New look from a prompt", lines=2, elem_id="td-look-prompt",
                                                     placeholder="made of polished gold")
                            look_tokens = gr.HTML(self.tokens.html(""), elem_id="td-look-tokens")
                            look_image = gr.Image(label=choice.look_label(), type="filepath", image_mode=None,
                                                  sources=["upload", "clipboard"], height=200,
                                                  elem_id="td-look-image")
                            look_model = gr.Radio(choice.look_choices(), value=choice.look_default(), label="Model",
                                                  info=choice.look_info(), elem_id="td-look-model")
                            place("variant")
                        with gr.Tab("History", id="history") as tab_history:
                            # The jobs at the top of the tab, newest first; a click shows one (history_tab.py).
                            history_gallery = gr.Gallery(label="Past jobs (click one to see it)", columns=3,
                                                         fit_columns=False, height=480, allow_preview=False,
                                                         object_fit="contain", show_label=False,
                                                         elem_id="td-history-gallery")
                            history_keys = gr.State([])
                            history_empty = gr.Markdown(HISTORY_EMPTY, visible=False, elem_id="td-history-empty")
                            with gr.Row():
                                history = gr.Dropdown(self._history_choices(), value=None, scale=4,
                                                      label="Find a past job (type to search)", elem_id="td-history")
                                refresh = gr.Button("Refresh", scale=1, elem_id="td-refresh")
                            with gr.Row():
                                reuse = gr.Button("Use these settings", elem_id="td-reuse")
                                # New files from the picked job with the Output settings, without sampling again.
                                export_again = gr.Button("Export again", elem_id="td-export-again")
                            export_note = gr.Markdown(NOTHING_PICKED, elem_id="td-export-plan")   # export_panel
                    # Generate right under the input, in view without scrolling on a laptop's screen; what it will
                    # lower on this device beside it; the model and preset choices below (their defaults work)
                    with gr.Row():
                        generate = gr.Button("Generate", variant="primary", elem_id="td-generate")
                        cancel = gr.Button("Cancel", interactive=False, elem_id="td-cancel")    # pagestate
                    note = start_note(self, {n: start.get(n, getattr(d, n)) for n in KNOBS}, DEFAULT_PRESET)
                    device_note = gr.HTML(note, visible=bool(note), elem_id="td-device-note")
                    family = choice.controls(lambda name, o: setting_control(SETTINGS[name], getattr(d, name), o), k)
                    preset = gr.Radio(PRESET_CHOICES_WITH_CUSTOM, value=DEFAULT_PRESET, label="Preset",
                                      elem_id="td-preset", info="Sets the knobs below (moving one makes it Custom); "
                                                                "Low VRAM for GPUs with little memory")
                    with gr.Accordion("Generation settings", open=False, elem_id="td-gen-settings"):
                        place("generation")
                    with gr.Accordion("Output settings", open=False, elem_id="td-out-settings"):
                        place("output")
                    with gr.Accordion("Memory and input", open=False, elem_id="td-mem-settings"):
                        place("memory")
                with gr.Column(scale=1):
                    status = gr.HTML(idle_html(), elem_id="td-status", js_on_load=ROW_JS)     # batch_view
                    video = gr.Video(label=LABELS["video"], autoplay=True, loop=True, height=300, interactive=False,
                                     elem_id="td-video")
                    model3d = gr.Model3D(label=LABELS["model"], height=400,
                                         elem_id="td-model3d")
                    with gr.Row():          # the job's files, each with its size: pick one, download it
                        file_choice = gr.Radio([], value=None, label=LABELS["choice"], interactive=False, scale=3,
                                               elem_id="td-dl-format")
                        download = gr.DownloadButton(EMPTY_LABEL, interactive=False, scale=1, elem_id="td-download")
                    info = gr.Markdown("", elem_id="td-info")
                    with gr.Row():
                        open_folder = gr.Button("Open folder", size="sm", interactive=False, elem_id="td-open-folder")
                        copy_path = gr.Button("Copy path", size="sm", interactive=False, elem_id="td-copy-path")
                    reuse_seed = gr.Button("Reuse this seed", size="sm", visible=False, elem_id="td-reuse-seed")
                    files = gr.File(label="All files of this job", file_count="multiple", interactive=False,
                                    elem_id="td-files")

            # ---------------------------------------------------------- events
            # The page's handlers are for this page only (private); gradio_client gets its own named
            # endpoints (_add_api_endpoints). Quick handlers never wait behind a running generation.
            page_only = dict(api_visibility="private", show_progress="hidden")
            quick = dict(page_only, concurrency_limit=None)
            knob_order = list(PRESET_KNOBS)
            knob_components = [k[n] for n in knob_order]
            tab_list = [(tab_single, "single"), (tab_multi, "multi"), (tab_batch, "batch"), (tab_text, "text"),
                        (tab_variant, "variant"), (tab_history, "history")]
            wire_tabs(self, tab_list, mode, [info, video, model3d, file_choice, download, files])
            # the Model choice where it applies: the image tabs (family_view.IMAGE_TABS)
            for tab, name in tab_list:
                tab.select(lambda chosen, name=name: choice.tab_update(name, chosen), family,
                           [choice.row, choice.costs_box], **quick)

            wire_knobs(self, k, preset, device_note, reuse_seed, history, info, family)
            wire_family(choice, family, k, multi)
            demo.load(choice.costs_text, None, choice.costs, **page_only)      # not an API endpoint

            def apply_preset(name):
                if name not in PRESETS:                      # "Custom": the knobs stay as they are
                    return [gr.skip()] * len(knob_order)
                values = preset_values(name, self.defaults)
                return [values[n] for n in knob_order]
            # input, not change: loading a past job's settings sets the preset without re-applying it.
            self.refresh_knobs(preset.input(apply_preset, preset, knob_components, **quick))

            def apply_destination(name):
                values = destination_values(name, self.defaults)
                return [values[n] for n in DESTINATION_KNOBS]
            self.refresh_knobs(k["destination"].input(apply_destination, k["destination"],
                                                      [k[n] for n in DESTINATION_KNOBS], **quick))

            # change: uploads, pastes and examples alike (and clearing the box resets the status).
            single.change(self.check_upload, single, status, preprocess=False, **quick)
            mesh.change(self.check_mesh_upload, mesh, status, preprocess=False, **quick)
            mesh.change(self.mesh_preview.show, mesh, [mesh_view, mesh_stats], preprocess=False, **quick)
            wire_token_counts(self.tokens, [(prompt, prompt_tokens), (look_prompt, look_tokens)])

            self._named = {"mode": mode, "single": single, "multi": multi, "batch": batch, "preset": preset,
                           "prompt": prompt, "mesh": mesh, "look_prompt": look_prompt, "look_image": look_image,
                           "look_model": look_model, "history": history, "family": family, "shown_info": info, **k}
            results = [status, k["seed"], info, video, model3d, file_choice, download, files, history]

            wire_busy(generate, cancel, [generate, export_again])

            def on_generate(data: dict, request: gr.Request):
                yield from self.generate(data, request)
            # Raw payloads (preprocess=False): an unreadable upload reaches the runner, which says what is
            # wrong with it. No concurrency limit: the runner's queue orders the jobs of all pages.
            # The header's memory line then names the finished job's budget and peak.
            run = generate.click(on_generate, set(self._named.values()), results, preprocess=False, **quick).then(
                self.header_text, None, header, **quick)
            run.then(choice.costs_text, None, choice.costs, **quick)         # a type just run says its own time

            def on_export_again(data: dict, request: gr.Request):
                yield from self.generate({**data, mode: "export"}, request)
            again = export_again.click(on_export_again, set(self._named.values()), results, preprocess=False, **quick)
            wire_idle(generate, cancel, [run, again])

            def on_cancel(request: gr.Request):
                return self.cancel(request)

            def on_cancel_settled(request: gr.Request):
                return self.cancel_settled(request)
            cancel.click(on_cancel, None, cancel, **quick).then(on_cancel_settled, None, cancel, **quick)

            shown = [info, video, model3d, file_choice, download, files]
            wire_download_row(file_choice, download)
            wire_export_panel(self, export_note, history, preset, k)
            wire_history_tab(self, demo, tab_history, history_gallery, history_keys, history_empty, history, refresh,
                             [status, *shown], [run, again], family)
            wire_batch(self, batch, status, batch_zip, mode, shown, history, [run])
            wire_places(self, demo, open_folder, copy_path, info)
            history.input(self.show_picked, history, [status, *shown, family], api_visibility="private",
                          show_progress="minimal", concurrency_limit=4)
            # history.reuse_settings's answer: the preset, RELOADED_KNOBS' controls, then REUSED_INPUTS.
            settings_outputs = [preset, *[k[n] for n in RELOADED_KNOBS], tabs, mode, prompt, mesh, look_prompt,
                                look_image, single, multi, family]
            reused = reuse.click(self.reuse_settings, history, settings_outputs, **quick)
            self.refresh_knobs(reused)
            reused.then(choice.tab_update, [mode, family], [choice.row, choice.costs_box], **quick)
            self._add_api_endpoints(examples[0] if examples else None)
        return demo


    # ------------------------------------------------------------------ handlers
    def check_upload(self, payload):
        """Quick look at a new upload, so that a file that cannot be used says so at once."""
        item = file_of(payload)
        if item is None:
            return idle_html()
        name, source = item
        from ..jobs.inputs import load_and_cut_out

        try:
            img, cutout = load_and_cut_out(source)
            if cutout is not None:
                note = "its transparency marks the object (no background removal needed)"
            else:
                note = "no transparency: its background is removed when you generate (if ticked)"
        except (ValueError, TypeError, OSError) as err:       # said in the status box only (no toast)
            message = hide_paths(str(err), [source])
            return error_html(error_class("input", message), message, state="error")
        return message_html("ready", f"{name}: {img.width}×{img.height}, {note}. Press Generate.")

    def generate(self, data: dict, request):
        """Submit the job(s), then report progress until every one is finished (a generator handler)."""
        from ..jobs import JobState

        named = {name: data.get(comp) for name, comp in self._named.items()}
        skip = gr.skip()
        try:
            values = {key: named[key] for key in [*PRESET_KNOBS, *OTHER_KNOBS]}
            settings = settings_from_values(values, named["preset"], self.defaults)
            work = self._work(named["mode"] or "single", named, settings)
        except ValueError as err:
            yield (form_error_html(str(err)), *[skip] * AFTER_STATUS)
            return
        session = getattr(request, "session_hash", None)
        tracked = []

        def queued(job):                         # tracked at once: Cancel stops it while the rest is submitted
            tracked.append(job)
            with self._lock:
                self._active.setdefault(session, []).append(job.id)
        try:
            entries, not_queued = submit_items(work, queued)
            if not entries:
                yield (refusal_html(not_queued), *[skip] * AFTER_STATUS)
                return
            single_job, mode = len(entries) == 1 and not not_queued, named["mode"] or "single"
            # the last result stays until a new one, said to be the previous job's
            yield (status_html(entries, self.runner, not_queued), skip, *marked_previous(named.get("shown_info")),
                   skip, skip)
            reported, last = set(), None
            while True:
                for name, job in entries:
                    if job.state not in JobState.FINISHED or job.id in reported:
                        continue
                    reported.add(job.id)
                    # Its warnings and errors are in the status box (a toast would say them twice). A cancelled
                    # job shows what it had written; a result made while another tab is open waits for its tab.
                    if job.out_dir and (job.state == JobState.DONE or kept_files(job)):
                        here = self.remember_result(session, mode, job.out_dir, name if not single_job else None)
                        seed = job.seed if single_job and job.state == JobState.DONE else skip
                        yield (status_html(entries, self.runner, not_queued), seed,
                               *(self._results(job_folder.JobFolder(job.out_dir), name if not single_job else None)
                                 if here else [skip] * (AFTER_STATUS - 2)),
                               gr.update(choices=self._history_choices(), value=Path(job.out_dir).name))
                    else:
                        if job.state == JobState.FAILED and job.error_kind == "model":
                            for _, other in entries:            # every other job would fail the same way
                                self.runner.cancel(other.id)
                        if job.out_dir:          # a folder with error.json: listed in the history
                            yield (skip,) * AFTER_STATUS + (gr.update(choices=self._history_choices()),)
                pending = [job for _, job in entries if job.state not in JobState.FINISHED]
                text = status_html(entries, self.runner, not_queued)
                if text != last or not pending:
                    last = text
                    yield (text, *[skip] * AFTER_STATUS)
                if not pending:
                    if any(job.id not in reported for _, job in entries):
                        continue            # finished since the loop above looked: report it first
                    return
                pending[0].wait(POLL_S)
        finally:
            with self._lock:
                ids = self._active.get(session, [])
                for job in tracked:
                    if job.id in ids:
                        ids.remove(job.id)
                if not ids:
                    self._active.pop(session, None)

    def _work(self, mode: str, named: dict, settings) -> list:
        """[(name, submit() -> Job)] for a Generate click in `mode`; ValueError says what is missing or wrong."""
        runner = self.runner
        if mode == "export":
            return [self._export_work(named["history"], settings)]
        if mode == "history":
            raise ValueError("History shows what was made: pick a job and press Use these settings to make it again, "
                             "or open Single image, Multiple views, Batch, Text or New look to make something new.")
        if mode == "text":
            wanted = JobRequest(prompt=named["prompt"] or "", settings=settings, kind="text").checked(PAGE_NAMES)
            return [(prompt_label(wanted.prompt), lambda: runner.submit_request(wanted))]
        if mode == "variant":
            name, source, prompt, image = collect_look(named["mesh"], named["look_prompt"], named["look_image"])
            self._checked_mesh(source, name)
            family = named.get("look_model") if image is not None else None     # the tab's Model choice
            wanted = JobRequest(mesh=source, prompt=prompt, images=[] if image is None else [image], settings=settings,
                                family=family, kind="variant").checked(PAGE_NAMES)
            return [(name, lambda: runner.submit_request(wanted))]
        family = named.get("family") or None                       # the page's Model choice
        refuse_other_family(runner, family)                         # one that is not installed: how to install it
        return [(name, lambda wanted=JobRequest(images=images, settings=settings, family=family, kind="generate"):
                 runner.submit_request(wanted))
                for name, images in collect_work(mode, named["single"], named["multi"], named["batch"])]

    @staticmethod
    def _checked_mesh(source, name: str) -> None:
        from ..jobs import InputError, check_mesh

        try:
            check_mesh(source)
        except InputError as err:
            raise ValueError(hide_paths(f"This 3D model cannot be used: {err}", [source])) from None

    def check_mesh_upload(self, payload):
        """Quick look at a new 3-D model upload (its header), so that a file that cannot be used says so at once."""
        item = file_of(payload)
        if item is None:
            return idle_html()
        name, source = item
        try:
            self._checked_mesh(source, name)
        except ValueError as err:                     # said in the status box only (no toast)
            return error_html("bad_mesh", str(err).removeprefix("This 3D model cannot be used: "), state="error")
        return message_html("ready", f"{name}: ready. Add a prompt or a photo for its new look, then press Generate.")

    def cancel(self, request):
        session = getattr(request, "session_hash", None)
        with self._lock:
            ids = list(self._active.get(session, []))
        stopped = sum(self.runner.cancel(job_id) for job_id in ids)
        # Said on the button, not in a toast: the status box then says what the job kept.
        return gr.update(value="Cancelling…", interactive=False) if stopped else gr.update(interactive=False)

    def cancel_settled(self, request, wait_s: float = 60.0):
        """The Cancel button once the page's stopped jobs have ended (waited for up to `wait_s`): its label back,
        whichever of this and the jobs' own end reaches the page last (the two are separate events)."""
        session = getattr(request, "session_hash", None)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._active.get(session):
                    break
            time.sleep(POLL_S)
        with self._lock:
            return buttons(bool(self._active.get(session)))[1]
