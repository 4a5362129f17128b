"""The page's values: settings <-> the page's knobs (presets, labels used in messages) and the images a
Generate click brings (single, multi-view, batch)."""
import os

from ..settings import DEFAULT_PRESET, DESTINATIONS, PRESET_LIST, PRESETS, ROWS, SETTINGS, GenerationSettings
from ..settings_table import TEXT_SIZES_GB  # noqa: F401  (the page's name for it)


# ---------------------------------------------------------------------------------------------
# Settings <-> page values
# ---------------------------------------------------------------------------------------------

# The settings with a control on the page (settings_table.Ui), by name, with their labels (also used in messages).
LABELS = {row.name: row.ui.label for row in ROWS if row.ui}
# The knobs a preset sets, in the order of the page's inputs; OTHER_KNOBS keep their value when a preset is picked.
PRESET_KNOBS = {row.name: row.ui.label for row in ROWS if row.ui and row.ui.preset}
OTHER_KNOBS = {row.name: row.ui.label for row in ROWS if row.ui and not row.ui.preset}
# Set by the app's command line (--precision / --offload): a preset that does not name them leaves them alone.
APP_DEFAULTS = ("precision", "offload")
PRESET_CHOICES = [(p.label, p.name) for p in PRESET_LIST]
# The knobs a destination sets, in the table's order (the Destination control's answer).
DESTINATION_KNOBS = tuple(row.name for row in ROWS if row.destinations and row.ui)
MESH_TYPES = (".glb", ".gltf", ".obj", ".ply", ".stl")


def choice_labels(name: str) -> list:
    """A choice setting's choices as its control lists them: (shown text, value) pairs where its row gives
    labels, else the values themselves."""
    row = SETTINGS[name]
    return list(row.ui.labels) if row.ui and row.ui.labels else list(row.choices)


def text_size_choices() -> list:
    return choice_labels("text_model_size")


FORMAT_CHOICES = choice_labels("formats")


def page_lines(place: str) -> list:
    """The lines of controls of one place of the page (settings_table.PLACES), each a list of rows: wide
    controls (a choice set, or marked wide) first, one a line; then the others two a line, in the table's
    order, sliders beside sliders (a line sits where its first control is in the table)."""
    rows = [row for row in ROWS if row.ui and row.ui.place == place]
    wide = [[row] for row in rows if is_wide(row)]
    lines, open_line = [], {}
    for row in rows:
        if is_wide(row):
            continue
        family = is_slider(row)
        line = open_line.pop(family, None)
        if line is None:
            line = open_line[family] = [row]
            lines.append(line)
        else:
            line.append(row)
    return wide + lines


def is_wide(row) -> bool:
    return row.kind == "choices" or row.ui.wide


def is_slider(row) -> bool:
    """A number with a step and never None is a slider; other numbers get a number box."""
    return row.kind in ("int", "float") and row.step is not None and not row.optional


def preset_values(name: str, defaults: GenerationSettings) -> dict:
    """The preset's knob values. Precision and offloading not set by the preset keep the app's
    defaults (the command line's --precision / --offload)."""
    base = {k: getattr(defaults, k) for k in APP_DEFAULTS}
    s = GenerationSettings.from_preset(name, **{k: v for k, v in base.items() if k not in PRESETS[name]})
    return {k: getattr(s, k) for k in PRESET_KNOBS}


def destination_values(name: str, defaults: GenerationSettings) -> dict:
    """The destination's knob values; "none" (and what a destination leaves alone) gets the app's defaults back."""
    chosen = DESTINATIONS.get(name, {})
    values = {k: chosen.get(k, getattr(defaults, k)) for k in DESTINATION_KNOBS}
    # a choice set's control takes a list
    return {k: list(v) if SETTINGS[k].kind == "choices" else v for k, v in values.items()}


def settings_from_values(values: dict, preset: str, defaults: GenerationSettings) -> GenerationSettings:
    """GenerationSettings from the page's raw values (field name -> value). ValueError names the
    control by its label."""
    clean = {}
    for key, value in values.items():
        label, row = LABELS.get(key, key), SETTINGS.get(key)
        kind = row.kind if row else None
        if key == "seed" and value in (None, "") and values.get("randomize_seed"):
            value = 0
        if kind in ("int", "float"):
            # an emptied number box may come back as 0: for an optional setting whose range starts above 0, "none"
            if row.optional and value not in (None, "") and row.lo > 0 and float(value) == 0:
                value = None
            if value is None or value == "":
                if not row.optional:
                    raise ValueError(f"{label}: enter a number")
                value = None
            else:
                value = page_number(label, value, kind == "int")
        elif kind == "choices":
            value = list(value or [])
            if not value:
                shown = ", ".join(c.upper() for c in row.choices)
                raise ValueError(f"{label}: tick at least one of {shown}")
        elif kind == "bool":
            value = bool(value)
        clean[key] = value
    name = preset if preset in PRESETS else DEFAULT_PRESET
    shown = preset_values(name, defaults)
    same = all(clean.get(k) == v for k, v in shown.items() if k not in APP_DEFAULTS or k in PRESETS[name])
    # A control moved off the preset's value was set by the user: a CPU keeps it (GenerationSettings.for_device).
    moved = frozenset(k for k, v in shown.items() if k in clean and clean[k] != v)
    try:
        return GenerationSettings(preset=name if same else "custom", explicit=moved, **clean)
    except ValueError as err:
        raise ValueError(_labelled(str(err))) from None


def page_number(label: str, value, whole: bool):
    """A number box's or slider's value (JSON numbers arrive as floats, 3.0 too) -> int or float."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{label}: {value!r} is not a number") from None
    if whole:
        if number != int(number):
            raise ValueError(f"{label}: {value} is not a whole number")
        return int(number)
    return number


def _labelled(message: str) -> str:
    key, sep, rest = message.partition(":")
    return f"{LABELS[key]}:{rest}" if sep and key in LABELS else message


# ---------------------------------------------------------------------------------------------
# Inputs from the page (raw payloads: the event runs with preprocess=False so that an unreadable
# upload reaches the job runner, which says what is wrong with it, instead of failing in Gradio)
# ---------------------------------------------------------------------------------------------

def file_of(payload):
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


def collect_look(mesh, prompt, image) -> tuple:
    """(name, 3-D model, prompt or None, image or None) of a New-look click; ValueError when something is
    missing or both a prompt and a photo are given."""
    from ..settings import check_prompt

    item = file_of(mesh)
    if item is None:
        raise ValueError("New look: add a 3D model first (GLB, OBJ, PLY or STL).")
    name, source = item
    if isinstance(source, bytes):
        source = (name, source)
    photo = file_of(image)
    text = (prompt or "").strip()
    if text and photo:
        raise ValueError("New look: give a prompt or a photo, not both (clear one of them).")
    if not text and not photo:
        raise ValueError("New look: describe the new look in the prompt box, or add a photo to take it from.")
    return name, source, check_prompt(text) if text else None, photo[1] if photo else None


def collect_work(mode: str, single, multi, batch) -> list:
    """[(name, [image, ...]), ...]: one entry per job to submit. ValueError when nothing usable is given."""
    if mode == "multi":
        items = [f for f in (file_of(p) for p in (multi or [])) if f]
        if len(items) < 2:
            raise ValueError("Multiple views: add at least two images of the same object (for one image, "
                             "use the Single image tab).")
        return [(f"{items[0][0]} + {len(items) - 1} more view(s)", [x for _, x in items])]
    if mode == "batch":
        items = [f for f in (file_of(p) for p in (batch or [])) if f]
        if not items:
            raise ValueError("Batch: add one or more image files; each becomes its own job.")
        return [(name, [x]) for name, x in items]
    item = file_of(single)
    if item is None:
        raise ValueError("Add an image first: drop it on the Single image box, paste it, or pick an example.")
    return [(item[0], [item[1]])]

