"""The settings' controls as a newcomer reads them: the preset turns "Custom" once a knob is moved off it, a slider
widens when a value beyond its useful range (settings_table.Ui.ui_range) is typed or loaded, typing a seed unticks
Randomize, the values the device will lower are said before Generate (and why), and "Reuse this seed" by the result
keeps the shown result's seed, with its model family and pipeline type (a seed makes that model again only with
them)."""
import html

from ..jobs import folder as job_folder
from ..settings import CPU_REASONS, PRESETS, SETTINGS, GenerationSettings, device_changes, slider
from ..families import family_of_record, get_family
from .lazy import gr
from .values import APP_DEFAULTS, LABELS, OTHER_KNOBS, PRESET_CHOICES, PRESET_KNOBS, is_slider, preset_values, \
    settings_from_values

CUSTOM = "custom"
# The preset control's choices: the presets, then the state of knobs that no preset gives.
PRESET_CHOICES_WITH_CUSTOM = [*PRESET_CHOICES, ("Custom", CUSTOM)]
# Every control a preset or the user sets, in the order the knob handlers take them.
KNOBS = (*PRESET_KNOBS, *[n for n in OTHER_KNOBS if SETTINGS[n].ui.place in ("generation", "output", "memory")])
SLIDERS = tuple(n for n in KNOBS if is_slider(SETTINGS[n]))
# A range handle the browser clamped before its slider widened stays put: set it from the slider's number box.
SYNC_RANGES = """() => {
  for (const range of document.querySelectorAll('input[type=range]')) {
    const box = range.parentElement.parentElement.querySelector('input[data-testid=number-input]');
    if (!box || box.value === '' || range.value === box.value) continue;
    range.value = box.value;
    const span = Number(range.max) - Number(range.min);
    if (span > 0) range.style.setProperty('--range_progress', `${(range.value - range.min) / span * 100}%`);
  }
}"""


def _same(value, wanted) -> bool:
    # A slider sends 12.0 for 12; a choice set a list for a tuple.
    if isinstance(wanted, (int, float)) and not isinstance(wanted, bool):
        try:
            return float(value) == float(wanted)
        except (TypeError, ValueError):
            return False
    if isinstance(wanted, (tuple, list)):
        return list(value or []) == list(wanted)
    return value == wanted


def preset_of(values: dict, current, defaults: GenerationSettings) -> str:
    """`current` while the knobs still show its values, else "custom" (a custom state stays custom)."""
    if current not in PRESETS:
        return CUSTOM
    shown = preset_values(current, defaults)
    keep = all(_same(values.get(k), v) for k, v in shown.items() if k not in APP_DEFAULTS or k in PRESETS[current])
    return current if keep else CUSTOM


def widened(name: str, value):
    """The slider of `name` widened to hold `value` (typed or loaded beyond its useful range), or None when it
    already does. The setting's whole range still bounds it: a value outside that is the settings' error."""
    row = SETTINGS[name]
    lo, hi, _ = slider(name)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if lo <= v <= hi or not row.lo <= v <= row.hi:
        return None
    # Never the value itself: it was read when the event fired, and the box may hold a newer one by the time this
    # lands (the range's handle is set from the box after it: SYNC_RANGES).
    return dict(minimum=min(lo, v), maximum=max(hi, v))


def device_note(values: dict, preset, defaults: GenerationSettings, device: str, family=None) -> str:
    """What Generate will lower on `device` (a CPU) from the knobs shown, each with why, as HTML; "" for none. With
    `family` (the Model choice), only what that family uses."""
    try:
        settings = settings_from_values(values, preset, defaults)
    except ValueError:                  # a half-typed number: the note waits for a value
        return ""
    used = settings.for_device(device)
    parts = [f"<li>{html.escape(LABELS[name])}: <b>{now}</b> instead of {was} ({html.escape(CPU_REASONS[name][0])})</li>"
             for name, (was, now) in device_changes(settings, used).items()
             if set(CPU_REASONS[name][1]) & set(used.formats) and (family is None or get_family(family).uses(name))]
    if not parts:
        return ""
    return (f'<div class="td-device-note" data-changes="{len(parts)}">On this computer ({html.escape(device)}), '
            f"Generate lowers what the preset sized for a GPU, which would take minutes here:<ul>{''.join(parts)}"
            f"</ul>Move a slider to keep your own value.</div>")


def first_device(runner) -> str:
    devices = getattr(runner, "devices", None) or list(runner.fast_paths())
    return str(devices[0]) if devices else "cpu"


def wire_knobs(app, k: dict, preset, note, reuse_seed, history, info, family) -> None:
    """The handlers of this module on the page's controls (k: setting name -> control; `family`: the Model
    choice). `app.refresh_knobs(event)` chains the same refresh after the app's own programmatic changes (a preset, a
    destination, "Use these settings")."""
    quick = dict(api_visibility="private", show_progress="hidden", concurrency_limit=None)
    controls = [k[n] for n in KNOBS]
    device = first_device(app.runner)

    def refresh(current, chosen, *raw):
        values = dict(zip(KNOBS, raw))
        now = preset_of(values, current, app.defaults)
        text = device_note(values, now, app.defaults, device, chosen or None)
        sliders = [widened(n, values[n]) for n in SLIDERS]
        return [now if now != current else gr.skip(), gr.update(value=text, visible=bool(text)),
                *[gr.update(**w) if w else gr.skip() for w in sliders]]
    outputs = [preset, note, *[k[n] for n in SLIDERS]]
    for control in controls:
        control.input(refresh, [preset, family, *controls], outputs, preprocess=False, trigger_mode="always_last",
                      **quick).then(None, js=SYNC_RANGES, **quick)
    # the note names only what the chosen model uses
    family.change(refresh, [preset, family, *controls], outputs, preprocess=False, trigger_mode="always_last", **quick)

    def refresh_knobs(event):
        return event.then(refresh, [preset, family, *controls], outputs, preprocess=False, **quick).then(
            None, js=SYNC_RANGES, **quick)
    app.refresh_knobs = refresh_knobs

    # A typed seed is the one to use: Randomize would silently replace it.
    k["seed"].input(lambda: False, None, k["randomize_seed"], **quick)

    def reuse_this_seed(folder_name):
        folder = job_folder.find(app.runner.outputs_dir, folder_name) if folder_name else None
        record = folder.settings_record() if folder else None
        seed = record.get("seed") if isinstance(record, dict) else None
        if not isinstance(seed, int):
            gr.Warning("No result with a seed is shown yet: generate one, or pick a job in the History.")
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        family, kind = family_of_record(record), (record.get("settings") or {}).get("pipeline_type")
        typed = bool(family.pipeline_types) and kind in family.pipeline_types
        chosen = family.name
        words = f" with {family.words}" + (f" ({kind})" if typed else "")
        gr.Info(f"Seed {seed} kept{words} (Randomize off): Generate with the same input and settings makes this model "
                "again.")
        return seed, False, chosen, kind if typed else gr.skip()
    reuse_seed.click(reuse_this_seed, history, [k["seed"], k["randomize_seed"], family, k["pipeline_type"]], **quick)
    # Offered only beside a result (the result's line is empty until one is shown).
    info.change(lambda text: gr.update(visible=bool(text)), info, reuse_seed, **quick)


def start_note(app, values: dict, preset) -> str:
    """The device note of the page as it opens."""
    return device_note(values, preset, app.defaults, first_device(app.runner), app.family.running)
