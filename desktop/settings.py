"""Generation settings: every knob of one image-to-3D job, the named presets, validation and JSON.

    s = GenerationSettings.from_preset("high", seed=7, formats=("glb", "ply"))
    s.to_json()                                   # str; GenerationSettings.from_json(text) reads it back

Nothing here imports torch: the CLI validates its options before the heavy imports.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
from dataclasses import dataclass

# Largest seed: the reference demo's int32 range, so a seed from it can be typed in here.
MAX_SEED = 2 ** 31 - 1

FORMATS = ("glb", "ply", "obj", "mp4")
BAKE_MODES = ("fast", "opt")
MULTI_IMAGE_MODES = ("stochastic", "multidiffusion")
# Same values as trellis.pipelines.memory.PRECISIONS / OFFLOADS (a test keeps them equal); repeated
# here so that validating settings does not import torch.
PRECISIONS = ("auto", "fp16", "bf16", "fp32")
OFFLOADS = ("auto", "none", "model")
# The published text pipelines (microsoft/TRELLIS-text-<size>): text jobs and new looks from a prompt.
TEXT_MODEL_SIZES = ("base", "large", "xlarge")
DEFAULT_TEXT_MODEL_SIZE = "xlarge"
# A prompt is cut to CLIP's 77 tokens (a few hundred characters); anything near this is not a prompt.
MAX_PROMPT_CHARS = 20_000

DEFAULT_PRESET = "balanced"

# The fields that only shape the files written from a decoded result (not the sampling): what an
# export of a kept result may change (JobRunner.submit_export).
EXPORT_FIELDS = ("formats", "simplify", "fill_holes", "texture_size", "bake_mode", "bake_views", "bake_resolution",
                 "video_frames", "video_resolution", "video_fps")


@dataclass
class GenerationSettings:
    """One job's parameters. Validated on construction (and by `dataclasses.replace`): a bad value
    raises ValueError naming the field, the value and what is accepted."""

    preset: str = DEFAULT_PRESET          # the preset these settings started from (informational)
    seed: int = 0
    randomize_seed: bool = True           # draw a fresh seed per job; the one used goes to settings.json
    ss_steps: int = 12                    # stage 1 (sparse structure) sampling steps
    ss_cfg: float = 7.5                   # stage 1 classifier-free guidance strength
    slat_steps: int = 12                  # stage 2 (structured latent) sampling steps
    slat_cfg: float = 3.0                 # stage 2 guidance strength
    simplify: float = 0.975               # fraction of the decoder mesh's triangles removed: the GLB keeps the rest
    fill_holes: bool = True               # remove hidden inner faces and close small holes (slow on a CPU)
    texture_size: int = 1024              # GLB / OBJ texture side in pixels
    bake_mode: str = "fast"               # "fast" (least squares) or "opt" (the reference's optimiser)
    bake_views: int = 50                  # renders of the Gaussians the texture is baked from (the reference:
                                          # 100; the fast bake measured as good at 50 — trellis to_glb docs)
    bake_resolution: int = 1024           # side of those renders
    formats: tuple = ("glb", "ply", "mp4")
    preprocess: bool = True               # background removal for images without transparency
    multi_image_mode: str = "stochastic"  # how several views of one object are combined
    video_frames: int = 120               # preview turntable length
    video_resolution: int = 512           # preview side in pixels
    video_fps: int = 24
    precision: str = "auto"               # "auto" | "fp16" | "bf16" | "fp32"
    offload: str = "auto"                 # "auto" | "none" | "model" (each network on the GPU only while it runs)
    text_model_size: str = DEFAULT_TEXT_MODEL_SIZE   # prompts: TRELLIS-text-base / -large / -xlarge
    # Not a setting (never in JSON, not compared): the fields the user set, which `for_device` never lowers.
    explicit: frozenset = dataclasses.field(default=frozenset(), compare=False, repr=False)

    def __post_init__(self):
        self.formats = _normalise_formats(self.formats)
        self.explicit = frozenset(self.explicit)
        _check_keys(dict.fromkeys(self.explicit))
        self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        if self.preset not in PRESETS and self.preset != "custom":
            raise ValueError(f"preset: unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        for name, rule in RULES.items():
            _CHECKS[rule[0]](name, getattr(self, name), *rule[1:])

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_preset(cls, name: str = DEFAULT_PRESET, **overrides) -> "GenerationSettings":
        """The preset's values with `overrides` on top (None values are ignored); the overrides count as
        set by the user (`explicit`)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        chosen = {k: v for k, v in overrides.items() if v is not None}
        values = {**PRESETS[name], "preset": name, **chosen}
        _check_keys(values)
        return cls(**values, explicit=frozenset(chosen))

    def replace(self, **changes) -> "GenerationSettings":
        """A copy with `changes`, which count as set by the user (`explicit`)."""
        _check_keys(changes)
        return dataclasses.replace(self, **changes, explicit=self.explicit | set(changes))

    def for_device(self, device: str) -> "GenerationSettings":
        """The settings a job runs with on `device` ("cpu", "cuda", "cuda:1", ...).

        On a CPU, each field of CPU_VALUES that the user did not set (`explicit`) and that still has its
        preset's value (for "custom" settings: the value some preset gives it) takes the CPU value where
        that is smaller: the presets are sized for a GPU, and on a CPU their 50 bake renders at 1024²,
        1024² texture and 120-frame preview take minutes. A value the user set is kept, even one equal to
        the preset's; `device_changes` names what was lowered. Elsewhere: unchanged (self)."""
        if not str(device).startswith("cpu"):
            return self
        changes = {}
        for name, cpu_value in CPU_VALUES.items():
            value = getattr(self, name)
            if name in self.explicit:
                continue
            if self.preset in PRESETS:
                preset_values = {_preset_value(self.preset, name)}
            else:                                                   # "custom"
                preset_values = {_preset_value(p, name) for p in PRESETS}
            if value in preset_values and cpu_value < value:
                changes[name] = cpu_value
        return dataclasses.replace(self, **changes) if changes else self

    def with_seed(self, rng: random.Random | None = None) -> "GenerationSettings":
        """The settings a job actually runs with: a drawn seed when randomize_seed, and randomize_seed
        off, so that the result can be reproduced from settings.json alone."""
        if not self.randomize_seed:
            return self
        seed = (rng or random.SystemRandom()).randint(0, MAX_SEED)
        return dataclasses.replace(self, seed=seed, randomize_seed=False)

    @property
    def decode_formats(self) -> list:
        """The pipeline outputs the requested files need."""
        out = []
        if set(self.formats) & {"ply", "mp4", "glb", "obj"}:
            out.append("gaussian")
        if set(self.formats) & {"glb", "obj"}:
            out.append("mesh")
        return out

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["formats"] = list(self.formats)
        del d["explicit"]
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict) -> "GenerationSettings":
        if not isinstance(data, dict):
            raise ValueError(f"settings must be a JSON object, got {type(data).__name__}")
        if "settings" in data and isinstance(data["settings"], dict):   # a job's settings.json
            data = data["settings"]
        _check_keys(data)
        return cls(**data)

    @classmethod
    def from_json(cls, text) -> "GenerationSettings":
        """Settings from JSON text (or bytes, or an already parsed dict). A job folder's settings.json
        is accepted too (its "settings" entry is read)."""
        if isinstance(text, dict):
            return cls.from_dict(text)
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"settings are not valid JSON: {err}") from None
        return cls.from_dict(data)


# What each field accepts, in the order they are checked (preset and formats have their own rules):
# ("int" | "float", lo, hi), ("bool",) or ("choice", choices). The REST API builds its schema from it.
RULES: dict = {
    "seed": ("int", 0, MAX_SEED),
    "randomize_seed": ("bool",),
    "ss_steps": ("int", 1, 500),
    "slat_steps": ("int", 1, 500),
    "ss_cfg": ("float", 0.0, 100.0),
    "slat_cfg": ("float", 0.0, 100.0),
    "simplify": ("float", 0.0, 0.99),
    "fill_holes": ("bool",),
    "texture_size": ("int", 64, 8192),
    "bake_mode": ("choice", BAKE_MODES),
    "bake_views": ("int", 1, 1000),
    "bake_resolution": ("int", 32, 4096),
    "preprocess": ("bool",),
    "multi_image_mode": ("choice", MULTI_IMAGE_MODES),
    "video_frames": ("int", 1, 3000),
    "video_resolution": ("int", 16, 4096),
    "video_fps": ("int", 1, 240),
    "precision": ("choice", PRECISIONS),
    "offload": ("choice", OFFLOADS),
    "text_model_size": ("choice", TEXT_MODEL_SIZES),
}

# The step between the values a page offers (the UI's sliders). A slider spans its setting's whole RULES
# range: that is the one range of each setting, on every surface (UI, CLI, REST schema, StableProjectorz
# panel), so that settings written by any of them (a settings.json from the CLI with --texture-size 8192,
# an API job with 200 steps) load back into the page as they are.
STEPS: dict = {"ss_steps": 1, "slat_steps": 1, "ss_cfg": 0.1, "slat_cfg": 0.1, "simplify": 0.01, "texture_size": 64,
               "bake_views": 1, "bake_resolution": 32, "video_frames": 1, "video_resolution": 16, "video_fps": 1}


def number_range(name: str) -> tuple:
    """(lo, hi) of a numeric setting (RULES)."""
    kind, lo, hi = RULES[name]
    if kind not in ("int", "float"):
        raise ValueError(f"{name} is not a number setting")
    return lo, hi


def slider(name: str) -> tuple:
    """(lo, hi, step) of the page's slider for a numeric setting: its RULES range and its STEPS step."""
    return (*number_range(name), STEPS[name])


# One line per field, for help texts (CLI, UI tooltips, the API's schema).
HELP: dict = {
    "preset": "the preset these settings started from (fast, balanced, high, low-vram or custom)",
    "seed": "random seed (used when randomize_seed is false)",
    "randomize_seed": "draw a fresh seed for each job (the seed used is recorded in settings.json)",
    "ss_steps": "sampling steps of stage 1 (the coarse structure)",
    "ss_cfg": "guidance strength of stage 1 (how closely the structure follows the image)",
    "slat_steps": "sampling steps of stage 2 (the detailed latent)",
    "slat_cfg": "guidance strength of stage 2",
    "simplify": "fraction of the decoder mesh's triangles removed; the file gets the rest (0.975: 2.5 %, "
                "about 18 k faces for a typical object; 0 keeps all)",
    "fill_holes": "remove hidden inner faces and close small holes (slow on a CPU)",
    "texture_size": "side of the GLB / OBJ texture in pixels",
    "bake_mode": "texture baking: fast (least squares) or opt (optimiser, slower)",
    "bake_views": "number of renders the texture is baked from",
    "bake_resolution": "side of those renders in pixels",
    "formats": "files to write, from glb, ply, obj, mp4",
    "preprocess": "remove the background of images without transparency",
    "multi_image_mode": "how several views of one object are combined: stochastic or multidiffusion",
    "video_frames": "frames of the turntable preview video",
    "video_resolution": "side of the preview video in pixels",
    "video_fps": "frames per second of the preview video",
    "precision": "network precision: auto, fp16, bf16 or fp32",
    "offload": "GPU memory use: auto, none, or model (each network on the GPU only while it runs)",
    "text_model_size": "text model for prompts: base, large or xlarge (bigger: better, slower, larger download)",
}

_FIELDS = None


def check_prompt(prompt) -> str:
    """The prompt of a text job or a new look, stripped; ValueError when it is not one (not text, not
    valid Unicode, empty or only invisible characters, absurdly long). A prompt longer than CLIP's 77
    tokens is accepted: the job says it was cut."""
    if not isinstance(prompt, str):
        raise ValueError(f"the prompt must be text, got {type(prompt).__name__}")
    text = prompt.strip()
    bad = next((i for i, ch in enumerate(text) if "\ud800" <= ch <= "\udfff"), None)
    if bad is not None:
        code, before = ord(text[bad]), text[max(0, bad - 20):bad]
        where = f"after {before!r}" if before else "at its start"
        if 0xDC80 <= code <= 0xDCFF:      # how Python keeps a byte that is not UTF-8 (command line, file names)
            raise ValueError(f"the prompt is not UTF-8 text: byte 0x{code - 0xDC00:02x} ({where}) is not a "
                             "character in UTF-8; save the text as UTF-8 (or type it again) and try again")
        raise ValueError(f"the prompt holds a lone surrogate (U+{code:04X}, {where}), which is not a "
                         "character; send the text as UTF-8")
    if not any(ch.isprintable() and not ch.isspace() for ch in text):
        raise ValueError("the prompt is empty: describe the object to make (e.g. 'a red wooden chair')")
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"the prompt has {len(text):,} characters, more than the {MAX_PROMPT_CHARS:,} accepted; "
                         f"only its first ~77 words' worth of tokens is used anyway: shorten it")
    return text


def field_names() -> tuple:
    global _FIELDS
    if _FIELDS is None:
        _FIELDS = tuple(f.name for f in dataclasses.fields(GenerationSettings) if f.name != "explicit")
    return _FIELDS


def _check_keys(values: dict) -> None:
    unknown = sorted(set(values) - set(field_names()))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(field_names())}")


def _normalise_formats(formats) -> tuple:
    if isinstance(formats, str):
        formats = formats.split(",")
    try:
        items = [str(f).strip().lower().lstrip(".") for f in formats]
    except TypeError:
        raise ValueError(f"formats: expected a list such as ['glb', 'ply'], got {formats!r}") from None
    items = [f for f in items if f]
    bad = [f for f in items if f not in FORMATS]
    if bad:
        raise ValueError(f"formats: unknown format(s) {', '.join(map(repr, bad))}; choose from {', '.join(FORMATS)}")
    if not items:
        raise ValueError(f"formats: choose at least one of {', '.join(FORMATS)}")
    return tuple(f for f in FORMATS if f in items)      # canonical order, no duplicates


def _int(name, value, lo, hi) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: expected a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name}: {value} is out of range; use {lo}..{hi}")


def _float(name, value, lo, hi) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name}: {value} is out of range; use {lo}..{hi}")


def _bool(name, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected true or false, got {value!r}")


def _choice(name, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(choices)}")


_CHECKS = {"int": _int, "float": _float, "bool": _bool, "choice": _choice}


def _preset_value(preset: str, name: str):
    """The value preset `preset` gives field `name` (its own value, else the dataclass default)."""
    if name in PRESETS[preset]:
        return PRESETS[preset][name]
    return next(f.default for f in dataclasses.fields(GenerationSettings) if f.name == name)


# On a CPU (GenerationSettings.for_device): the observation renders the texture is baked from, the
# texture (512² views of the object cannot fill a 1024² texture with detail, and its solve, inpainting
# and PNG cost 4x more) and the preview video: the parts of an export whose cost is a number of renders
# or texels. Measured on 2 cores with the tiny pipeline (docs/benchmarks/app.md#cpu-the-tiny-pipelines-job).
# The hole filling's views are chosen by the library for the device
# (trellis.export.cleanup.visibility.visibility_settings).
CPU_VALUES: dict = dict(texture_size=512, bake_views=24, bake_resolution=512, video_frames=60,
                        video_resolution=384)

# Why each CPU value (for the job's warning), and the formats whose files it shapes.
CPU_REASONS: dict = {
    "texture_size": ("each doubling of the side takes about 4x as long to bake", ("glb", "obj")),
    "bake_views": ("each is a render of the Gaussians", ("glb", "obj")),
    "bake_resolution": ("each bake render takes seconds at the larger size", ("glb", "obj")),
    "video_frames": ("each frame is a render", ("mp4",)),
    "video_resolution": ("render time grows with the pixels", ("mp4",)),
}


def device_changes(submitted: GenerationSettings, used: GenerationSettings) -> dict:
    """{field: (submitted value, used value)} for the fields of CPU_VALUES that `for_device` changed."""
    return {k: (getattr(submitted, k), getattr(used, k)) for k in CPU_VALUES
            if getattr(submitted, k) != getattr(used, k)}


def device_change_warning(submitted: GenerationSettings, used: GenerationSettings) -> str | None:
    """The job's warning naming each setting `for_device` lowered that shapes a file the job writes, from -> to
    and why; None when there is none."""
    parts = [f"{name} {was} -> {now} ({CPU_REASONS[name][0]})"
             for name, (was, now) in device_changes(submitted, used).items()
             if set(CPU_REASONS[name][1]) & set(used.formats)]
    if not parts:
        return None
    return (f"Changed for the CPU, where the preset's values (sized for a GPU) would take minutes: {', '.join(parts)}. "
            f"A value you set yourself is kept.")


# Presets: values that differ from the dataclass defaults ("balanced" is the defaults themselves).
PRESETS: dict = {
    # Quick look: fewer steps, a smaller texture and a shorter preview.
    "fast": dict(ss_steps=8, slat_steps=8, texture_size=512, bake_views=50, bake_resolution=512,
                 video_frames=60, video_resolution=384),
    # The reference demo's defaults: 12 + 12 steps, guidance 7.5 / 3.0, 1024² texture, 95 % simplification.
    "balanced": dict(),
    # More sampling steps, a 2048² texture baked from the reference's 100 views.
    "high": dict(ss_steps=25, slat_steps=25, texture_size=2048, bake_views=100),
    # Small GPUs: each network on the GPU only while it runs, fp16 torsos.
    "low-vram": dict(precision="fp16", offload="model"),
}
