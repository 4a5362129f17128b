"""The browser app's page (TrellisApp): the page's outline and the handlers of Generate, Cancel and new uploads. Its
layout is page_layout.py, what each control does page_events.py, its gradio_client endpoints endpoints.py, the
history and result views history.py; status.py and values.py hold what the page shows and reads.
"""
import shutil
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from ..jobs import folder as job_folder
from ..jobs.request import FieldNames, JobRequest, prompt_label
from ..families import get_family
from ..settings import GenerationSettings
from .batch_view import BatchView, refusal_html, status_html, submit_items
from .endpoints import ApiEndpoints
from .expectations import MeshPreview, PromptTokens
from .errors import error_class, error_html, form_error_html
from .export_panel import ExportPanel
from .family_view import FamilyChoice, refuse_other_family
from .history import HistoryViews
from .history_tab import HistoryTab
from .lazy import gr, load_gradio
from .pagestate import TabResults, buttons, marked_previous
from .page_events import wire_page
from .page_layout import input_column, result_column
from .status import (POLL_S, device_line, hide_paths, idle_html, kept_files, md_escape, memory_line, model_name,
                     message_html, path_html)
from .values import OTHER_KNOBS, PRESET_KNOBS, collect_look, collect_work, file_of, settings_from_values

ROOT = Path(__file__).resolve().parents[2]          # the repository
AFTER_STATUS = 8        # Generate's outputs after the status box: seed, the result column's six, the history box
EXAMPLES_DIR = ROOT / "assets" / "examples"
PAGE_NAMES = FieldNames(images="an image", prompt="a prompt", mesh="a 3D model", family="the Model choice")
# The page's inputs that Generate reads by name (beside the result shown and every setting's control).
GENERATE_READS = ("mode", "single", "multi", "batch", "preset", "prompt", "mesh", "look_prompt", "look_image",
                  "look_model", "history", "family")


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
        examples = sorted(EXAMPLES_DIR.glob("*.png"))
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
                    inputs = input_column(self, examples, self._history_choices())
                with gr.Column(scale=1):
                    results = result_column()
            page = SimpleNamespace(**vars(inputs), **vars(results), header=header, mode=mode)
            self._named = {**{name: getattr(page, name) for name in GENERATE_READS}, "shown_info": page.info,
                           **page.k}
            wire_page(self, demo, page, set(self._named.values()))
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
