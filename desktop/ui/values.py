"""The page's values: settings <-> the page's knobs (presets, labels used in messages) and the images a
Generate click brings (single, multi-view, batch)."""
import os

from ..settings import DEFAULT_PRESET, PRESETS, GenerationSettings


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
               "preprocess": "Remove background", "multi_image_mode": "Multi-view algorithm",
               "text_model_size": "Text model size"}
LABELS = {**PRESET_KNOBS, **OTHER_KNOBS}
_INT_KNOBS = {"ss_steps", "slat_steps", "texture_size", "bake_views", "bake_resolution", "video_frames",
              "video_resolution", "seed"}
_FLOAT_KNOBS = {"ss_cfg", "slat_cfg", "simplify"}
PRESET_CHOICES = [("Fast", "fast"), ("Balanced", "balanced"), ("High", "high"), ("Low VRAM", "low-vram")]
MESH_TYPES = (".glb", ".gltf", ".obj", ".ply", ".stl")
TEXT_SIZES_GB = {"base": "0.7", "large": "2.3", "xlarge": "4.1"}     # the flows; CLIP adds 1.7 GB (once)


def text_size_choices() -> list:
    from ..settings import TEXT_MODEL_SIZES

    return [(f"{size} (~{TEXT_SIZES_GB.get(size, '?')} GB)", size) for size in TEXT_MODEL_SIZES]


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
    shown = preset_values(name, defaults)
    same = all(clean.get(k) == v for k, v in shown.items() if k not in ("precision", "offload") or k in PRESETS[name])
    # A control moved off the preset's value was set by the user: a CPU keeps it (GenerationSettings.for_device).
    moved = frozenset(k for k, v in shown.items() if k in clean and clean[k] != v)
    try:
        return GenerationSettings(preset=name if same else "custom", explicit=moved, **clean)
    except ValueError as err:
        raise ValueError(_labelled(str(err))) from None


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

