"""The page's event wiring: what each control of the layout (page_layout.py) does, in the order the listeners must be
registered. `page` holds the components by name (the two columns, the header and the hidden mode box); `named` is
what Generate reads (TrellisApp._named's values).

The page's handlers are for this page only (private); gradio_client gets its own named endpoints (endpoints.py).
Quick handlers never wait behind a running generation.
"""
from ..settings import PRESETS
from .batch_view import wire_batch
from .download_row import wire_download_row
from .expectations import wire_token_counts
from .export_panel import wire_export_panel
from .family_view import wire_family
from .history import RELOADED_KNOBS
from .history_tab import wire_history_tab
from .knobs import wire_knobs
from .lazy import gr
from .pagestate import wire_busy, wire_idle, wire_tabs
from .places import wire_places
from .values import DESTINATION_KNOBS, PRESET_KNOBS, destination_values, preset_values

PAGE_ONLY = dict(api_visibility="private", show_progress="hidden")
QUICK = dict(PAGE_ONLY, concurrency_limit=None)


def wire_page(app, demo, page, named: set) -> None:
    """Every listener of the page: the inputs first, then Generate / Export again / Cancel, then the views that
    follow a job's end."""
    wire_inputs(app, demo, page)
    run, again = wire_jobs(app, page, named)
    wire_views(app, demo, page, run, again)


def wire_inputs(app, demo, page) -> None:
    """The tabs, the Model choice, the knobs and their preset and destination, uploads and prompts."""
    choice, k = app.family, page.k
    tab_list = [(page.tab_single, "single"), (page.tab_multi, "multi"), (page.tab_batch, "batch"),
                (page.tab_text, "text"), (page.tab_variant, "variant"), (page.tab_history, "history")]
    wire_tabs(app, tab_list, page.mode, [page.info, page.video, page.model3d, page.file_choice, page.download,
                                         page.files])
    # the Model choice where it applies: the image tabs (family_view.IMAGE_TABS)
    for tab, name in tab_list:
        tab.select(lambda chosen, name=name: choice.tab_update(name, chosen), page.family,
                   [choice.row, choice.costs_box], **QUICK)

    wire_knobs(app, k, page.preset, page.device_note, page.reuse_seed, page.history, page.info, page.family)
    wire_family(choice, page.family, k, page.multi)
    demo.load(choice.costs_text, None, choice.costs, **PAGE_ONLY)      # not an API endpoint

    knob_order = list(PRESET_KNOBS)

    def apply_preset(name):
        if name not in PRESETS:                      # "Custom": the knobs stay as they are
            return [gr.skip()] * len(knob_order)
        values = preset_values(name, app.defaults)
        return [values[n] for n in knob_order]
    # input, not change: loading a past job's settings sets the preset without re-applying it.
    app.refresh_knobs(page.preset.input(apply_preset, page.preset, [k[n] for n in knob_order], **QUICK))

    def apply_destination(name):
        values = destination_values(name, app.defaults)
        return [values[n] for n in DESTINATION_KNOBS]
    app.refresh_knobs(k["destination"].input(apply_destination, k["destination"],
                                             [k[n] for n in DESTINATION_KNOBS], **QUICK))

    # change: uploads, pastes and examples alike (and clearing the box resets the status).
    page.single.change(app.check_upload, page.single, page.status, preprocess=False, **QUICK)
    page.mesh.change(app.check_mesh_upload, page.mesh, page.status, preprocess=False, **QUICK)
    page.mesh.change(app.mesh_preview.show, page.mesh, [page.mesh_view, page.mesh_stats], preprocess=False, **QUICK)
    wire_token_counts(app.tokens, [(page.prompt, page.prompt_tokens), (page.look_prompt, page.look_tokens)])


def wire_jobs(app, page, named: set) -> tuple:
    """Generate, Export again and Cancel; (Generate's event, Export again's event), for what follows a job's end."""
    choice, generate, cancel = app.family, page.generate, page.cancel
    results = [page.status, page.k["seed"], page.info, page.video, page.model3d, page.file_choice, page.download,
               page.files, page.history]

    nudge = wire_busy(generate, cancel, [generate, page.export_again])   # before the job listeners (pagestate.py)

    def on_generate(data: dict, request: gr.Request):
        yield from app.generate(data, request)
    # Raw payloads (preprocess=False): an unreadable upload reaches the runner, which says what is
    # wrong with it. No concurrency limit: the runner's queue orders the jobs of all pages.
    # The header's memory line then names the finished job's budget and peak.
    run = generate.click(on_generate, named, results, preprocess=False, **QUICK).then(
        app.header_text, None, page.header, **QUICK)
    run.then(choice.costs_text, None, choice.costs, **QUICK)         # a type just run says its own time

    def on_export_again(data: dict, request: gr.Request):
        yield from app.generate({**data, page.mode: "export"}, request)
    again = page.export_again.click(on_export_again, named, results, preprocess=False, **QUICK)
    wire_idle(generate, cancel, [run, again], nudge)

    def on_cancel(request: gr.Request):
        return app.cancel(request)

    def on_cancel_settled(request: gr.Request):
        return app.cancel_settled(request)
    cancel.click(on_cancel, None, cancel, **QUICK).then(on_cancel_settled, None, cancel, **QUICK)
    return run, again


def wire_views(app, demo, page, run, again) -> None:
    """The download row, the export panel, the History tab, the batch, the folder buttons, a past job picked and
    its settings reused."""
    choice, k, history = app.family, page.k, page.history
    shown = [page.info, page.video, page.model3d, page.file_choice, page.download, page.files]
    wire_download_row(page.file_choice, page.download)
    wire_export_panel(app, page.export_note, history, page.preset, k)
    wire_history_tab(app, demo, page.tab_history, page.history_gallery, page.history_keys, page.history_empty,
                     history, page.refresh, [page.status, *shown], [run, again], page.family)
    wire_batch(app, page.batch, page.status, page.batch_zip, page.mode, shown, history, [run])
    wire_places(app, demo, page.open_folder, page.copy_path, page.info)
    history.input(app.show_picked, history, [page.status, *shown, page.family], api_visibility="private",
                  show_progress="minimal", concurrency_limit=4)
    # history.reuse_settings's answer: the preset, RELOADED_KNOBS' controls, then REUSED_INPUTS.
    settings_outputs = [page.preset, *[k[n] for n in RELOADED_KNOBS], page.tabs, page.mode, page.prompt, page.mesh,
                        page.look_prompt, page.look_image, page.single, page.multi, page.family]
    reused = page.reuse.click(app.reuse_settings, history, settings_outputs, **QUICK)
    app.refresh_knobs(reused)
    reused.then(choice.tab_update, [page.mode, page.family], [choice.row, choice.costs_box], **QUICK)
