"""`python -m desktop ui` (or `python gradio_main.py`): the browser app.

A Gradio Blocks page on top of the JobRunner: one image, several views of one object, or a batch of
files in; a live progress line (stage, step i/n, ETA) while the job runs; the preview video, an
interactive 3D view of the GLB and download buttons when it is done; the history of the outputs
folder. Every job gets its own folder there (see desktop/jobs/folder.py), so nothing is lost when the page
is closed. Nothing is fetched from the internet by the page itself (Gradio serves its own assets;
analytics are off); the model is downloaded by the runner only when it is not on disk yet.

gradio_client scripts it through three named endpoints (/generate, /status, /cancel; the page's own
handlers are private). Ctrl-C, SIGTERM and SIGHUP stop it cleanly (desktop/stopping.py, shared with the
REST API server): the running job ends interrupted, then the app exits 0.

Gradio is imported only once the options are parsed, so `--help` and a usage error are instant.
"""
import argparse
import html
import os
import shutil
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

from .jobs import folder as job_folder
from .options import (DEFAULT_MODEL, add_memory_options, add_model_option, add_runner_options, add_server_options,
                      check_runner_args, format_clock)
from .stopping import StopSignals
from .settings import (BAKE_MODES, DEFAULT_PRESET, MAX_SEED, MULTI_IMAGE_MODES, OFFLOADS, PRECISIONS,
                       PRESETS, GenerationSettings, slider)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "assets" / "examples"

gr = None           # the gradio module, set by _load_gradio()


def _load_gradio():
    global gr
    if gr is None:
        # Before the import: gradio reads these when it loads.
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        import gradio
        gr = gradio
    return gr


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m desktop ui",
        description="Start the Trellis Desktop browser app (also: python gradio_main.py [options]).",
        epilog="Precision and offloading chosen in the page apply from the next job on, without a restart. "
               "Every job is saved in its own sub-folder of the outputs folder.")
    add_model_option(p, metavar="REPO_OR_DIR")
    add_server_options(p, port=7860, host_help="address to listen on (default %(default)s: this computer only; "
                                               "0.0.0.0 for the network)")
    add_memory_options(p, precision_help="initial precision of the networks (default %(default)s; changeable in "
                                         "the page)",
                       offload_help="initial offloading: model = each network on the GPU only while it runs "
                                    "(default %(default)s; changeable in the page)")
    add_runner_options(p, parallel="batch jobs in parallel")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser window")
    return p


def _model_problem(model: str) -> str | None:
    """A message when `model` is a local folder that cannot hold a pipeline; None otherwise (a Hugging
    Face repo id is checked when the first job loads it)."""
    path = os.path.expanduser(model)
    local = os.path.exists(path) or os.path.isabs(path) or model.startswith((".", "~"))
    if not local or os.path.isfile(os.path.join(path, "pipeline.json")):
        return None
    what = "does not exist" if not os.path.exists(path) else "holds no pipeline.json"
    return (f"The model folder {model} {what}, so generating will fail. Restart the app with "
            f"--model pointing to a folder that holds pipeline.json and ckpts/ (a copy of {DEFAULT_MODEL}), "
            f"or with --model {DEFAULT_MODEL} to download it (internet needed once).")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)                       # exits with 2 on a usage error
    check_runner_args(parser, args)
    defaults = GenerationSettings(precision=args.precision, offload=args.offload)

    _load_gradio()
    from .jobs import JobRunner                          # heavy (torch): only once the options are good

    try:
        runner = JobRunner(args.model, args.outputs, device=args.device, gpus=args.gpus)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    runner.say_fast_paths()
    problem = _model_problem(args.model)
    if problem:
        print(f"warning: {problem}", file=sys.stderr)
    app = TrellisApp(runner, defaults=defaults, model_problem=problem)
    # Ctrl-C, SIGTERM, SIGHUP (Windows: Ctrl-C, Ctrl-Break, closing the console): the running job stops at
    # its next step and is marked interrupted, then the app exits 0 (a second Ctrl-C: 130 at once).
    stop = StopSignals(runner, "the app")
    stop.install()
    demo, failed = None, False
    try:
        demo = app.build()
        try:
            _, url, _ = demo.queue().launch(
                server_name=args.host, server_port=args.port, inbrowser=not args.no_browser,
                prevent_thread_lock=True, quiet=True, show_error=True, ssr_mode=False,
                allowed_paths=[str(runner.outputs_dir), str(EXAMPLES_DIR)], css=CSS,
                theme=gr.themes.Default(primary_hue="green"), footer_links=["api", "gradio"])
        except OSError as err:
            print(f"error: could not listen on {args.host}:{args.port} ({err}). Is the app already running? "
                  f"Pick another port with --port.", file=sys.stderr)
            failed = True
        if not failed:
            url = url or f"http://{args.host}:{args.port}/"
            print(f"Trellis Desktop is running at {url}  (outputs: {runner.outputs_dir}; Ctrl-C to stop)",
                  flush=True)
            if args.host not in ("127.0.0.1", "localhost", "::1"):
                print(f"note: listening on {args.host}: anyone who can reach this computer on port {args.port} can "
                      "use the app and see its outputs (there is no login).", file=sys.stderr, flush=True)
            stop.wait()                                  # until Ctrl-C (or another stop signal)
    finally:
        # The job first (its folder gets its error.json), then the page's server, which ends the job's
        # progress events as they see it stopped.
        code = stop.finish()
        if demo is not None:
            demo.close()
        app.close()
    return 1 if failed else code


# ---------------------------------------------------------------------------------------------
# Settings <-> page values
# ---------------------------------------------------------------------------------------------

# The knobs a preset sets, in the order of the page's inputs, with their labels (also used in messages).
PRESET_KNOBS = {
    "ss_steps": "Stage 1 sampling steps", "ss_cfg": "Stage 1 guidance strength",
    "slat_steps": "Stage 2 sampling steps", "slat_cfg": "Stage 2 guidance strength",
    "simplify": "Simplify (fraction of triangles removed)", "texture_size": "Texture size (pixels)",
    "bake_mode": "Texture bake mode", "bake_views": "Bake views", "bake_resolution": "Bake render size",
    "fill_holes": "Fill holes (slow on a CPU)", "video_frames": "Preview frames",
    "video_resolution": "Preview size (pixels)", "precision": "Precision", "offload": "GPU memory offloading",
}
OTHER_KNOBS = {"seed": "Seed", "randomize_seed": "Randomize seed", "formats": "Output formats",
               "preprocess": "Remove background", "multi_image_mode": "Multi-view algorithm"}
LABELS = {**PRESET_KNOBS, **OTHER_KNOBS}
_INT_KNOBS = {"ss_steps", "slat_steps", "texture_size", "bake_views", "bake_resolution", "video_frames",
              "video_resolution", "seed"}
_FLOAT_KNOBS = {"ss_cfg", "slat_cfg", "simplify"}
PRESET_CHOICES = [("Fast", "fast"), ("Balanced", "balanced"), ("High", "high"), ("Low VRAM", "low-vram")]
FORMAT_CHOICES = [("GLB (textured mesh)", "glb"), ("PLY (Gaussians)", "ply"), ("OBJ (+ MTL, PNG)", "obj"),
                  ("MP4 preview", "mp4")]


def preset_values(name: str, defaults: GenerationSettings) -> dict:
    """The preset's knob values. Precision and offloading not set by the preset keep the app's
    defaults (the command line's --precision / --offload)."""
    base = {k: getattr(defaults, k) for k in ("precision", "offload")}
    s = GenerationSettings.from_preset(name, **{k: v for k, v in base.items() if k not in PRESETS[name]})
    return {k: getattr(s, k) for k in PRESET_KNOBS}


def settings_from_values(values: dict, preset: str, defaults: GenerationSettings) -> GenerationSettings:
    """GenerationSettings from the page's raw values (field name -> value). ValueError names the
    control by its label."""
    clean = {}
    for key, value in values.items():
        label = LABELS.get(key, key)
        if key == "seed" and value in (None, "") and values.get("randomize_seed"):
            value = 0
        if key in _INT_KNOBS or key in _FLOAT_KNOBS:
            if value is None or value == "":
                raise ValueError(f"{label}: enter a number")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{label}: {value!r} is not a number") from None
            if key in _INT_KNOBS:
                if number != int(number):
                    raise ValueError(f"{label}: {value} is not a whole number")
                number = int(number)
            value = number
        elif key == "formats":
            value = list(value or [])
            if not value:
                raise ValueError(f"{label}: tick at least one of GLB, PLY, OBJ, MP4")
        elif key in ("randomize_seed", "preprocess", "fill_holes"):
            value = bool(value)
        clean[key] = value
    name = preset if preset in PRESETS else DEFAULT_PRESET
    same = all(clean.get(k) == v for k, v in preset_values(name, defaults).items()
               if k not in ("precision", "offload") or k in PRESETS[name])
    try:
        return GenerationSettings(preset=name if same else "custom", **clean)
    except ValueError as err:
        raise ValueError(_labelled(str(err))) from None


def _labelled(message: str) -> str:
    key, sep, rest = message.partition(":")
    return f"{LABELS[key]}:{rest}" if sep and key in LABELS else message


# ---------------------------------------------------------------------------------------------
# Inputs from the page (raw payloads: the event runs with preprocess=False so that an unreadable
# upload reaches the job runner, which says what is wrong with it, instead of failing in Gradio)
# ---------------------------------------------------------------------------------------------

def _file_of(payload):
    """(display name, path or bytes) of one uploaded file payload; None when empty."""
    if payload is None:
        return None
    if isinstance(payload, (str, os.PathLike)):
        return os.path.basename(os.fspath(payload)), os.fspath(payload)
    if isinstance(payload, dict):
        if isinstance(payload.get("image"), dict):        # a gallery item
            payload = payload["image"]
        path, url = payload.get("path"), payload.get("url") or ""
        name = payload.get("orig_name") or (os.path.basename(path) if path else "pasted image")
        if url.startswith("data:") and not path:
            import base64

            return name, base64.b64decode(url.split(",", 1)[1])
        if path:
            return name, path
    return None


def collect_work(mode: str, single, multi, batch) -> list:
    """[(name, [image, ...]), ...]: one entry per job to submit. ValueError when nothing usable is given."""
    if mode == "multi":
        items = [f for f in (_file_of(p) for p in (multi or [])) if f]
        if len(items) < 2:
            raise ValueError("Multiple views: add at least two images of the same object (for one image, "
                             "use the Single image tab).")
        return [(f"{items[0][0]} + {len(items) - 1} more view(s)", [x for _, x in items])]
    if mode == "batch":
        items = [f for f in (_file_of(p) for p in (batch or [])) if f]
        if not items:
            raise ValueError("Batch: add one or more image files; each becomes its own job.")
        return [(name, [x]) for name, x in items]
    item = _file_of(single)
    if item is None:
        raise ValueError("Add an image first: drop it on the Single image box, paste it, or pick an example.")
    return [(item[0], [item[1]])]


# ---------------------------------------------------------------------------------------------
# Status display (HTML; the data-state attribute says where the job stands)
# ---------------------------------------------------------------------------------------------

def _box(state: str, body: str) -> str:
    return f'<div class="td-status td-{state}" data-state="{state}">{body}</div>'


def message_html(state: str, text: str) -> str:
    return _box(state, html.escape(text))


def idle_html() -> str:
    return message_html("idle", "Add an image, pick a preset and press Generate.")


def friendly_error(job) -> str:
    """The message shown for a failed job, with the fix in this app's words."""
    kind, message = job.error_kind, job.error or "failed"
    if kind == "cancelled":
        return "Cancelled."
    if kind == "oom":
        if str(job.device or "").startswith("cuda"):
            return ("Out of GPU memory. Try the Low VRAM preset (or a smaller texture size or fewer steps) and "
                    "generate again; closing other programs that use the GPU helps too. The memory was freed: "
                    "the app keeps running.")
        return ("Out of memory. Try the Fast preset or a smaller texture size, and close other programs. "
                "The memory was freed: the app keeps running.")
    if kind == "input":
        return f"This image cannot be used: {message.removeprefix('bad input: ')}"
    if kind == "model":
        return (f"{message[:1].upper()}{message[1:]} (To use another model folder, restart the app with "
                f"--model DIR.)")
    if kind == "background_removal":
        return (f"{message} Or untick 'Remove background' and use a PNG whose transparency marks the object.")
    return message[:1].upper() + message[1:]


def _hide_paths(text: str, inputs) -> str:
    """Upload paths (Gradio's temp folder) shown by their file name only."""
    for x in inputs:
        if isinstance(x, (str, os.PathLike)) and os.fspath(x):
            text = text.replace(os.fspath(x), os.path.basename(os.fspath(x)))
    return text


def _job_line(job, runner) -> tuple:
    """(state, text) of one job for the status box."""
    from .jobs import JobState

    p = job.progress
    if job.state == JobState.QUEUED:
        pos = runner.queue_position(job.id)
        ahead = "" if pos is None else f" ({pos} job(s) ahead)" if pos else " (next)"
        return "queued", f"Waiting in the queue{ahead}"
    if job.state == JobState.RUNNING:
        parts = [p.label + (f" ({p.message})" if p.message else "")]
        if p.total > 1:
            parts.append(f"step {p.step}/{p.total}")
        parts.append(f"{p.fraction * 100:.0f}%")
        parts.append(f"ETA {format_clock(p.eta_s)}" if p.eta_s is not None else "ETA --:--")
        parts.append(f"elapsed {format_clock(p.elapsed_s)}")
        return "running", " · ".join(parts)
    if job.state == JobState.DONE:
        took = job.timings.get("total")
        took = f" in {took:.1f} s" if isinstance(took, (int, float)) else ""
        return "done", f"Done{took} (seed {job.seed})"
    if job.state == JobState.CANCELLED:
        return "cancelled", "Cancelled"
    return "failed", _hide_paths(friendly_error(job), job.inputs)


def status_html(entries: list, runner) -> str:
    """entries: [(name, job)]. One job: a line and a progress bar; several: a table and an overall line."""
    from .jobs import JobState

    if len(entries) == 1:
        name, job = entries[0]
        state, text = _job_line(job, runner)
        bar = ""
        if state in ("running", "queued"):
            bar = f'<progress max="100" value="{job.progress.fraction * 100:.1f}"></progress>'
        return _box(state, f'<div class="td-line">{html.escape(text)}</div>{bar}')
    rows, states = [], []
    for name, job in entries:
        state, text = _job_line(job, runner)
        states.append(state)
        rows.append(f'<tr data-state="{state}"><td>{html.escape(name)}</td><td>{html.escape(text)}</td></tr>')
    finished = sum(j.state in JobState.FINISHED for _, j in entries)
    ok = sum(j.state == JobState.DONE for _, j in entries)
    overall = "running" if finished < len(entries) else ("done" if ok == len(entries) else
                                                        "failed" if ok == 0 else "partial")
    fraction = sum(1.0 if j.state in JobState.FINISHED else j.progress.fraction for _, j in entries) / len(entries)
    head = f"{finished} of {len(entries)} job(s) finished, {ok} done"
    bar = f'<progress max="100" value="{fraction * 100:.1f}"></progress>' if overall == "running" else ""
    return _box(overall, f'<div class="td-line">{html.escape(head)}</div>{bar}'
                         f'<table class="td-jobs">{"".join(rows)}</table>')


# ---------------------------------------------------------------------------------------------
# Job folders (the outputs folder is the history)
# ---------------------------------------------------------------------------------------------

def device_line(fast_paths: dict) -> str:
    """The devices and their fast-path lines for the page header: "`cuda:0` (fast paths on (Triton kernels))";
    devices that share a line are listed together."""
    groups: dict = {}
    for dev, line in fast_paths.items():
        groups.setdefault(line, []).append(dev)
    return "; ".join(f"`{', '.join(devs)}` ({_md_escape(line)})" for line, devs in groups.items())


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------

CSS = """
.td-status {padding: 10px 14px; border-radius: 8px; border: 1px solid var(--border-color-primary);
            background: var(--block-background-fill); min-height: 2.6em;}
.td-status progress {width: 100%; height: 10px; margin-top: 6px;}
.td-running, .td-queued {border-color: var(--color-accent);}
.td-done {border-color: #2e9d4f;}
.td-failed, .td-error {border-color: #d03b3b; color: #b32020; font-weight: 600;}
.td-cancelled, .td-partial {border-color: #c98a16;}
.td-jobs {width: 100%; margin-top: 6px; font-size: 0.9em;}
.td-jobs td {padding: 2px 6px; border-top: 1px solid var(--border-color-primary);}
.td-jobs tr[data-state=failed] td {color: #b32020;}
#td-files .label-clear-button {display: none;}
#td-banner {border: 1px solid #d03b3b; border-radius: 8px; padding: 4px 12px;}
"""

POLL_S = 0.3       # how often a running job's progress is re-read


class TrellisApp:
    """The page and its handlers. Jobs started from a page are remembered per browser session, so
    that Cancel stops this page's jobs only."""

    def __init__(self, runner, defaults: GenerationSettings | None = None, model_problem: str | None = None):
        self.runner = runner
        self.defaults = defaults or GenerationSettings()
        self.model_problem = model_problem
        self._lock = threading.Lock()
        self._active: dict = {}                      # session hash -> [job ids]
        self._tmp = Path(tempfile.mkdtemp(prefix="trellis-desktop-ui-"))    # OBJ zips

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    # ------------------------------------------------------------------ page
    def header_text(self) -> str:
        """The page's title line: model, device (with its fast-path line: which renderer path it takes and,
        if the slower one, why) and outputs folder."""
        return (f"## Trellis Desktop\nOne photo in, a textured 3D model out. Model: `{self.runner.model_path}` "
                f"· device: {device_line(self.runner.fast_paths())} · outputs: `{self.runner.outputs_dir}`")

    def build(self):
        _load_gradio()
        d = self.defaults
        start = preset_values(DEFAULT_PRESET, d)
        with gr.Blocks(title="Trellis Desktop", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
            # Re-read on every page load, so that a kernel that failed since the start shows up.
            header = gr.Markdown(self.header_text(), elem_id="td-header")
            demo.load(self.header_text, None, header, api_visibility="private", show_progress="hidden")
            if self.model_problem:
                gr.Markdown(f"**Model not found.** {self.model_problem}", elem_id="td-banner")
            mode = gr.State("single")
            with gr.Row():
                with gr.Column(scale=1):
                    with gr.Tabs():
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
                            multi = gr.Gallery(label="Views", type="filepath", interactive=True, columns=3,
                                               height=300, elem_id="td-multi")
                            multi_mode = gr.Radio(list(MULTI_IMAGE_MODES), value=d.multi_image_mode,
                                                  label=LABELS["multi_image_mode"], elem_id="td-multi-mode",
                                                  info="stochastic: one view per step; multidiffusion: all "
                                                       "views averaged each step")
                        with gr.Tab("Batch", id="batch") as tab_batch:
                            gr.Markdown("Several images, **each its own job**: they are queued and each result "
                                        "is shown as it completes (and kept in the history).")
                            batch = gr.File(label="Images", file_count="multiple", file_types=["image"],
                                            elem_id="td-batch")
                    preset = gr.Radio(PRESET_CHOICES, value=DEFAULT_PRESET, label="Preset", elem_id="td-preset",
                                      info="Sets the knobs below; Low VRAM for GPUs with little memory")
                    with gr.Row():
                        generate = gr.Button("Generate", variant="primary", elem_id="td-generate")
                        cancel = gr.Button("Cancel", variant="stop", elem_id="td-cancel")
                    with gr.Accordion("Generation settings", open=False, elem_id="td-gen-settings"):
                        with gr.Row():
                            seed = gr.Number(d.seed, label=LABELS["seed"], precision=0, minimum=0,
                                             maximum=MAX_SEED, elem_id="td-seed")
                            randomize = gr.Checkbox(d.randomize_seed, label=LABELS["randomize_seed"],
                                                    elem_id="td-randomize")
                        k = {}

                        def knob(name):
                            # The setting's whole range (settings.slider): any valid settings load into it.
                            lo, hi, step = slider(name)
                            return gr.Slider(lo, hi, start[name], step=step, label=LABELS[name], elem_id=f"td-{name}")
                        with gr.Row():
                            k["ss_steps"] = knob("ss_steps")
                            k["ss_cfg"] = knob("ss_cfg")
                        with gr.Row():
                            k["slat_steps"] = knob("slat_steps")
                            k["slat_cfg"] = knob("slat_cfg")
                    with gr.Accordion("Output settings", open=False, elem_id="td-out-settings"):
                        formats = gr.CheckboxGroup(FORMAT_CHOICES, value=list(d.formats), label=LABELS["formats"],
                                                   elem_id="td-formats")
                        with gr.Row():
                            k["simplify"] = knob("simplify")
                            k["texture_size"] = knob("texture_size")
                        with gr.Row():
                            k["bake_mode"] = gr.Radio(list(BAKE_MODES), value=start["bake_mode"],
                                                      label=LABELS["bake_mode"], elem_id="td-bake_mode",
                                                      info="fast: least squares; opt: optimised (slower)")
                            k["fill_holes"] = gr.Checkbox(start["fill_holes"], label=LABELS["fill_holes"],
                                                          elem_id="td-fill_holes")
                        with gr.Row():
                            k["bake_views"] = knob("bake_views")
                            k["bake_resolution"] = knob("bake_resolution")
                        with gr.Row():
                            k["video_frames"] = knob("video_frames")
                            k["video_resolution"] = knob("video_resolution")
                    with gr.Accordion("Memory and input", open=False, elem_id="td-mem-settings"):
                        with gr.Row():
                            k["precision"] = gr.Dropdown(list(PRECISIONS), value=start["precision"],
                                                         label=LABELS["precision"], elem_id="td-precision",
                                                         info="auto picks fp16/bf16 on a GPU that supports it")
                            k["offload"] = gr.Dropdown(list(OFFLOADS), value=start["offload"],
                                                       label=LABELS["offload"], elem_id="td-offload",
                                                       info="model: each network on the GPU only while it runs")
                        preprocess = gr.Checkbox(d.preprocess, label=LABELS["preprocess"], elem_id="td-preprocess",
                                                 info="for photos without transparency; a PNG with transparency "
                                                      "is always cropped to its object")
                with gr.Column(scale=1):
                    status = gr.HTML(idle_html(), elem_id="td-status")
                    video = gr.Video(label="Preview", autoplay=True, loop=True, height=300, interactive=False,
                                     elem_id="td-video")
                    model3d = gr.Model3D(label="3D model (drag to turn, scroll to zoom)", height=400,
                                         elem_id="td-model3d")
                    with gr.Row():
                        glb_btn = gr.DownloadButton("Download GLB", interactive=False, elem_id="td-dl-glb")
                        ply_btn = gr.DownloadButton("Download PLY", interactive=False, elem_id="td-dl-ply")
                        obj_btn = gr.DownloadButton("Download OBJ (zip)", interactive=False, elem_id="td-dl-obj")
                    info = gr.Markdown("", elem_id="td-info")
                    files = gr.File(label="All files of this job", file_count="multiple", interactive=False,
                                    elem_id="td-files")
            with gr.Accordion("History (the outputs folder)", open=True, elem_id="td-history-box"):
                with gr.Row():
                    history = gr.Dropdown(self._history_choices(), value=None, label="Past jobs, newest first",
                                          scale=4, elem_id="td-history")
                    refresh = gr.Button("Refresh", scale=1, elem_id="td-refresh")
                    reuse = gr.Button("Use these settings", scale=1, elem_id="td-reuse")

            # ---------------------------------------------------------- events
            # The page's handlers are for this page only (private); gradio_client gets its own named
            # endpoints (_add_api_endpoints). Quick handlers never wait behind a running generation.
            page_only = dict(api_visibility="private", show_progress="hidden")
            quick = dict(page_only, concurrency_limit=None)
            knob_order = list(PRESET_KNOBS)
            knob_components = [k[n] for n in knob_order]
            tab_single.select(lambda: "single", None, mode, **quick)
            tab_multi.select(lambda: "multi", None, mode, **quick)
            tab_batch.select(lambda: "batch", None, mode, **quick)

            def apply_preset(name):
                values = preset_values(name, self.defaults)
                return [values[n] for n in knob_order]
            # input, not change: loading a past job's settings sets the preset without re-applying it.
            preset.input(apply_preset, preset, knob_components, **quick)

            # change: uploads, pastes and examples alike (and clearing the box resets the status).
            single.change(self.check_upload, single, status, preprocess=False, **quick)

            self._named = {"mode": mode, "single": single, "multi": multi, "batch": batch, "preset": preset,
                           "seed": seed, "randomize_seed": randomize, "formats": formats, "preprocess": preprocess,
                           "multi_image_mode": multi_mode, **k}
            results = [status, seed, info, video, model3d, glb_btn, ply_btn, obj_btn, files, history]

            def on_generate(data: dict, request: gr.Request):
                yield from self.generate(data, request)
            # Raw payloads (preprocess=False): an unreadable upload reaches the runner, which says what is
            # wrong with it. No concurrency limit: the runner's queue orders the jobs of all pages.
            generate.click(on_generate, set(self._named.values()), results, preprocess=False, **quick)

            def on_cancel(request: gr.Request):
                return self.cancel(request)
            cancel.click(on_cancel, None, None, **quick)

            refresh.click(lambda: gr.update(choices=self._history_choices()), None, history, **quick)
            history.input(self.show_history, history, [status, info, video, model3d, glb_btn, ply_btn, obj_btn, files],
                          api_visibility="private", show_progress="minimal", concurrency_limit=4)
            settings_outputs = [preset, seed, randomize, formats, preprocess, multi_mode] + knob_components
            reuse.click(self.reuse_settings, history, settings_outputs, **quick)
            self._add_api_endpoints()
        return demo

    # ------------------------------------------------------------------ gradio_client endpoints
    def _add_api_endpoints(self) -> None:
        """/generate, /status and /cancel for gradio_client (and the page's "Use via API"): one image and a
        dict of settings with the REST API's names in, the job's state and files out. Their components
        are hidden: the page does not show them."""
        with gr.Group(visible=False):
            image = gr.File(label="image", file_count="single", type="filepath")
            settings = gr.JSON(label="settings")
            info = gr.JSON(label="job")
            model = gr.File(label=job_folder.NAMES["glb"])
            files = gr.File(label="files", file_count="multiple")
            trigger = gr.Button()
        api = dict(api_visibility="public", concurrency_limit=None)
        trigger.click(self.api_generate, [image, settings], [info, model, files], api_name="generate",
                      show_progress="hidden", api_description=(
                          "Queue a job for one image (gradio_client.handle_file(path)) with settings such as "
                          "{\"preset\": \"fast\", \"seed\": 1, \"formats\": [\"glb\"]} (names as in the "
                          "REST API's POST /v1/jobs; {} for the defaults). Streams the job (its id first), then "
                          "returns it with model.glb and every file. A failed job raises with the reason."), **api)

        def status(job_id: str) -> dict:
            return self.api_status(job_id)

        def cancel(job_id: str) -> dict:
            return self.api_cancel(job_id)
        gr.api(status, api_name="status", api_description="A job's state, progress, error and file names.", **api)
        gr.api(cancel, api_name="cancel", api_description="Cancel a job (queued: at once; running: at its next "
                                                          "step); the job, with cancel_requested.", **api)

    def api_settings(self, values) -> GenerationSettings:
        """The settings dict of an API call -> GenerationSettings, checked as strictly as the REST API's JSON."""
        from pydantic import ConfigDict, create_model

        from .api_common import ApiError, ServerDefaults, build_settings, parameter_fields, validate

        model = create_model("UiSettings", __config__=ConfigDict(extra="forbid"), **parameter_fields())
        try:
            params = validate(model, values if values is not None else {}, loc_prefix=("settings",), strict=True)
            defaults = ServerDefaults(precision=self.defaults.precision, offload=self.defaults.offload)
            return build_settings(params.model_dump(exclude_none=True), defaults)
        except ApiError as err:
            detail = err.detail if isinstance(err.detail, str) else "; ".join(
                f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in err.detail)
            raise gr.Error(f"invalid settings: {detail}") from None

    def api_job(self, job) -> dict:
        """A job as the API endpoints report it (file names, not paths; upload paths hidden)."""
        d = job.to_dict()
        d.pop("inputs")
        d["files"] = {kind: os.path.basename(path) for kind, path in d["files"].items()}
        d["queue_position"] = self.runner.queue_position(job.id) if job.state == "queued" else None
        if d["error"]:
            d["error"] = _hide_paths(d["error"], job.inputs)
        return d

    def _api_find(self, job_id: str):
        job = self.runner.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise gr.Error(f"no job {job_id!r} (the id is in the first answer of /generate)")
        return job

    def api_generate(self, image, settings):
        from .jobs import JobState

        if not image:
            raise gr.Error("give an image file (gradio_client: handle_file('photo.png'))")
        job_settings = self.api_settings(settings)
        try:
            job = self.runner.submit([image], job_settings)
        except RuntimeError as err:               # the app is stopping
            raise gr.Error(f"cannot start a job: {err}") from None
        last = None
        try:
            while job.state not in JobState.FINISHED:
                p = job.progress
                now = (job.state, p.stage, p.step)
                if now != last:
                    last = now
                    yield self.api_job(job), None, None
                job.wait(POLL_S)
        finally:
            if job.state not in JobState.FINISHED:       # the call was cancelled (gradio_client's job.cancel())
                self.runner.cancel(job.id)
        info = self.api_job(job)
        if job.state == JobState.FAILED:
            raise gr.Error(f"job {job.id} failed: {_hide_paths(friendly_error(job), job.inputs)}")
        folder = job_folder.JobFolder(job.out_dir) if job.out_dir else None
        glb = job.files.get("glb")
        yield info, glb, ([str(p) for p in folder.listed_files()] if folder and job.state == JobState.DONE else None)

    def api_status(self, job_id: str) -> dict:
        return self.api_job(self._api_find(job_id))

    def api_cancel(self, job_id: str) -> dict:
        job = self._api_find(job_id)
        requested = self.runner.cancel(job.id)
        return {**self.api_job(job), "cancel_requested": bool(requested)}

    # ------------------------------------------------------------------ handlers
    def check_upload(self, payload):
        """Quick look at a new upload, so that a file that cannot be used says so at once."""
        item = _file_of(payload)
        if item is None:
            return idle_html()
        name, source = item
        from .jobs.inputs import load_and_cut_out

        try:
            img, cutout = load_and_cut_out(source)
            if cutout is not None:
                note = "its transparency marks the object (no background removal needed)"
            else:
                note = "no transparency: its background is removed when you generate (if ticked)"
        except (ValueError, TypeError, OSError) as err:
            message = _hide_paths(f"This image cannot be used: {err}", [source])
            gr.Warning(message)
            return message_html("error", message)
        return message_html("ready", f"{name}: {img.width}×{img.height}, {note}. Press Generate.")

    def generate(self, data: dict, request):
        """Submit the job(s), then report progress until every one is finished (a generator handler)."""
        from .jobs import JobState

        named = {name: data.get(comp) for name, comp in self._named.items()}
        skip = gr.skip()
        try:
            values = {key: named[key] for key in [*PRESET_KNOBS, *OTHER_KNOBS]}
            settings = settings_from_values(values, named["preset"], self.defaults)
            work = collect_work(named["mode"] or "single", named["single"], named["multi"], named["batch"])
        except ValueError as err:
            gr.Warning(str(err))
            yield (message_html("error", str(err)), *[skip] * 9)
            return
        try:
            entries = [(name, self.runner.submit(images, settings)) for name, images in work]
        except RuntimeError as err:          # the runner is shutting down
            yield (message_html("error", f"Cannot start a job: {err}"), *[skip] * 9)
            return
        session = getattr(request, "session_hash", None)
        with self._lock:
            self._active.setdefault(session, []).extend(job.id for _, job in entries)
        single_job = len(entries) == 1
        empty = self._empty_results()
        yield (status_html(entries, self.runner), skip, "", *empty, skip)
        reported, last = set(), None
        try:
            while True:
                for name, job in entries:
                    if job.state not in JobState.FINISHED or job.id in reported:
                        continue
                    reported.add(job.id)
                    if job.state == JobState.DONE and job.out_dir:
                        seed = job.seed if single_job else skip
                        yield (status_html(entries, self.runner), seed,
                               *self._results(job_folder.JobFolder(job.out_dir), name if not single_job else None),
                               gr.update(choices=self._history_choices(), value=Path(job.out_dir).name))
                    else:
                        if job.state == JobState.FAILED:
                            message = _hide_paths(friendly_error(job), job.inputs)
                            gr.Warning(f"{name}: {message}" if not single_job else message)
                            if job.error_kind == "model":       # every other job would fail the same way
                                for _, other in entries:
                                    self.runner.cancel(other.id)
                        if job.out_dir:          # a folder with error.json: listed in the history
                            yield (skip,) * 9 + (gr.update(choices=self._history_choices()),)
                pending = [job for _, job in entries if job.state not in JobState.FINISHED]
                text = status_html(entries, self.runner)
                if text != last or not pending:
                    last = text
                    yield (text, *[skip] * 9)
                if not pending:
                    if any(job.id not in reported for _, job in entries):
                        continue            # finished since the loop above looked: report it first
                    return
                pending[0].wait(POLL_S)
        finally:
            with self._lock:
                ids = self._active.get(session, [])
                for _, job in entries:
                    if job.id in ids:
                        ids.remove(job.id)
                if not ids:
                    self._active.pop(session, None)

    def cancel(self, request) -> None:
        session = getattr(request, "session_hash", None)
        with self._lock:
            ids = list(self._active.get(session, []))
        stopped = sum(self.runner.cancel(job_id) for job_id in ids)
        if stopped:
            gr.Info("Cancelling: the job stops at its next step.")
        else:
            gr.Info("Nothing is running.")

    def show_history(self, folder_name):
        folder = self._job_folder(folder_name)
        if folder is None:
            return (message_html("error", "That job folder is gone; press Refresh."), "", *self._empty_results())
        state = folder.state(self._running_dirs())
        text = f"Showing {folder.name} ({state})"
        err = folder.error()
        if err and err.get("error"):
            text += f": {err['error']}"
        return (message_html("history", text), *self._results(folder))

    def reuse_settings(self, folder_name):
        folder = self._job_folder(folder_name)
        record = folder.settings_record() if folder else None
        try:
            s = GenerationSettings.from_json(record)
        except ValueError:
            gr.Warning("Pick a past job first (its settings.json could not be read).")
            return [gr.skip()] * (6 + len(PRESET_KNOBS))
        gr.Info(f"Settings of {folder.name} loaded (seed {s.seed}, randomize off).")
        preset = s.preset if s.preset in PRESETS else gr.skip()
        return [preset, s.seed, False, list(s.formats), s.preprocess, s.multi_image_mode,
                *[getattr(s, n) for n in PRESET_KNOBS]]

    # ------------------------------------------------------------------ helpers
    def _running_dirs(self) -> set:
        return {j.out_dir for j in self.runner.list() if j.out_dir and j.state not in ("done", "failed", "cancelled")}

    def _history_choices(self) -> list:
        return job_folder.list_history(self.runner.outputs_dir, self._running_dirs())

    def _job_folder(self, name) -> "job_folder.JobFolder | None":
        return job_folder.find(self.runner.outputs_dir, name)

    def _empty_results(self) -> tuple:
        off = gr.update(value=None, interactive=False)
        return None, None, off, off, off, None          # video, model, glb, ply, obj, files

    def _obj_zip(self, folder) -> Path | None:
        parts = folder.obj_parts()
        if not parts:
            return None
        dest = self._tmp / f"{folder.name}-obj.zip"
        if not dest.exists():
            tmp = dest.with_suffix(".partial")
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
                for p in parts:
                    z.write(p, p.name)
            os.replace(tmp, dest)
        return dest

    def _results(self, folder, name: str | None = None) -> tuple:
        """(info, video, model, glb button, ply button, obj button, files) for a job folder (a JobFolder)."""
        def there(kind):
            p = folder.existing(kind)
            return str(p) if p else None
        glb, ply, mp4 = there("glb"), there("ply"), there("mp4")
        obj = self._obj_zip(folder)

        def button(path):
            return gr.update(value=path, interactive=True) if path else gr.update(value=None, interactive=False)
        record = folder.settings_record() or {}
        s = record.get("settings") or {}
        timings = folder.timings() or {}
        bits = []
        if name:
            bits.append(f"**{_md_escape(name)}**")
        if "seed" in record:
            bits.append(f"**Seed used:** {record['seed']}")
        if isinstance(timings.get("total"), (int, float)):
            bits.append(f"**Time:** {timings['total']:.1f} s")
        if s:
            bits.append(f"**Steps:** {s.get('ss_steps')} + {s.get('slat_steps')} · **preset:** {s.get('preset')}")
        info = " · ".join(bits) + f"\n\nFolder: `{folder.path}`"
        # The viewer shows the GLB only: Gradio's splat viewer for a PLY of Gaussians is heavy without a GPU.
        return (info, mp4, glb, button(glb), button(ply), button(str(obj) if obj else None),
                [str(p) for p in folder.listed_files()] or None)


def _md_escape(text: str) -> str:
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|<>" else c for c in str(text))
