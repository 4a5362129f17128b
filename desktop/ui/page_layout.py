"""The page's layout: the left column (the tabs of inputs, Generate and Cancel, the Model choice, the preset and the
settings' accordions) and the result column, each returned as its components by name (app.py hands them to
page_events.py). Every setting's control is made from its row of the settings table (setting_control).
"""
import contextlib
from types import SimpleNamespace

from ..settings import DEFAULT_PRESET, SETTINGS, slider
from .batch_view import ROW_JS
from .download_row import EMPTY_LABEL
from .expectations import text_size_control
from .export_panel import NOTHING_PICKED
from .history_tab import EMPTY as HISTORY_EMPTY
from .knobs import KNOBS, PRESET_CHOICES_WITH_CUSTOM, start_note
from .lazy import gr
from .output_layout import placed_lines
from .pagestate import LABELS
from .status import idle_html
from .values import MESH_TYPES, choice_labels, is_slider, preset_values


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


def input_column(app, examples: list, history_choices: list) -> SimpleNamespace:
    """The left column's components by name (`k`: setting name -> its control), made inside the page's Blocks:
    `examples` (image files) under the Single image tab, `history_choices` in the History tab's list."""
    d = app.defaults
    start = preset_values(DEFAULT_PRESET, d)
    k = {}                                       # setting name -> its control
    # Controls whose choices depend on this machine (the text models installed).
    machine = {"text_model_size": text_size_control(getattr(app.runner, "text_model", None))}
    choice = app.family
    machine.update(choice.overrides())                   # what the Model choice greys

    def place(where):
        # Every setting shown in this part of the page (settings_table.Ui), line by line (output_layout.py).
        for line in placed_lines(where):
            with gr.Row() if len(line) > 1 else contextlib.nullcontext():
                for row in (r for r in line if r.name not in k):      # placed already: the pipeline type
                    k[row.name] = setting_control(row, start[row.name] if row.name in start
                                                  else getattr(d, row.name), machine.get(row.name))
    tabs = input_tabs(app, place, examples, history_choices)
    # Generate right under the input, in view without scrolling on a laptop's screen; what it will
    # lower on this device beside it; the model and preset choices below (their defaults work)
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_id="td-generate")
        cancel = gr.Button("Cancel", interactive=False, elem_id="td-cancel")    # pagestate
    note = start_note(app, {n: start.get(n, getattr(d, n)) for n in KNOBS}, DEFAULT_PRESET)
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
    return SimpleNamespace(**vars(tabs), k=k, generate=generate, cancel=cancel, device_note=device_note,
                           family=family, preset=preset)


def input_tabs(app, place, examples: list, history_choices: list) -> SimpleNamespace:
    """The tabs of inputs, one per mode (its id), and their components by name; `place(where)` adds the settings
    shown in a tab."""
    choice = app.family
    # wrap: every mode stays in view on a narrow window (no "..." menu)
    with gr.Tabs(elem_id="td-tabs", overflow_behavior="wrap") as tabs:
        with gr.Tab("Single image", id="single") as tab_single:
            single = gr.Image(label="Image: drop, paste or click to upload", type="filepath",
                              image_mode=None, sources=["upload", "clipboard"], height=300,
                              elem_id="td-single")
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
            prompt_tokens = gr.HTML(app.tokens.html(""), elem_id="td-prompt-tokens")
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
            look_tokens = gr.HTML(app.tokens.html(""), elem_id="td-look-tokens")
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
                history = gr.Dropdown(history_choices, value=None, scale=4,
                                      label="Find a past job (type to search)", elem_id="td-history")
                refresh = gr.Button("Refresh", scale=1, elem_id="td-refresh")
            with gr.Row():
                reuse = gr.Button("Use these settings", elem_id="td-reuse")
                # New files from the picked job with the Output settings, without sampling again.
                export_again = gr.Button("Export again", elem_id="td-export-again")
            export_note = gr.Markdown(NOTHING_PICKED, elem_id="td-export-plan")   # export_panel
    return SimpleNamespace(
        tabs=tabs, tab_single=tab_single, tab_multi=tab_multi, tab_batch=tab_batch, tab_text=tab_text,
        tab_variant=tab_variant, tab_history=tab_history, single=single, multi=multi, batch=batch, batch_zip=batch_zip,
        prompt=prompt, prompt_tokens=prompt_tokens, mesh=mesh, mesh_view=mesh_view, mesh_stats=mesh_stats,
        look_prompt=look_prompt, look_tokens=look_tokens, look_image=look_image, look_model=look_model,
        history_gallery=history_gallery, history_keys=history_keys, history_empty=history_empty, history=history,
        refresh=refresh, reuse=reuse, export_again=export_again, export_note=export_note)


def result_column() -> SimpleNamespace:
    """The result column's components by name: the status box, the preview, the 3D view, the job's files and the
    buttons under them."""
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
    return SimpleNamespace(status=status, video=video, model3d=model3d, file_choice=file_choice, download=download,
                           info=info, open_folder=open_folder, copy_path=copy_path, reuse_seed=reuse_seed, files=files)
