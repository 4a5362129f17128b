"""Generation settings: every knob of one image-to-3D job, the named presets, validation and JSON.

    s = GenerationSettings.from_preset("high", seed=7, formats=("glb", "ply"))
    s.to_json()                                   # str; GenerationSettings.from_json(text) reads it back

The settings are the rows of desktop/settings_table.py (one per setting). The dataclass's fields, their
checks and the per-fact tables below (RULES, STEPS, HELP, PRESETS, CPU_VALUES, CPU_REASONS, EXPORT_FIELDS)
are built from those rows; `python -m desktop.settings` writes docs/SETTINGS.md from them.

Nothing here imports torch: the CLI validates its options before the heavy imports.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
from dataclasses import dataclass

from .settings_table import (BAKE_MODES, DEFAULT_PRESET, DEFAULT_TEXT_MODEL_SIZE, DESTINATION_LIST,  # noqa: F401
                             FORMATS, KINDS, MAX_SEED, MULTI_IMAGE_MODES, OFFLOADS, PLACES, PRECISIONS, PRESET_LIST, ROWS,
                             TEXT_MODEL_SIZES, Setting)

# A prompt is cut to CLIP's 77 tokens (a few hundred characters); anything near this is not a prompt.
MAX_PROMPT_CHARS = 20_000

# The dataclass annotation of each kind (an optional number too: the rows, not the annotation, say None is allowed).
ANNOTATIONS = {"int": "int", "float": "float", "bool": "bool", "choice": "str", "choices": "tuple", "preset": "str"}


# ---------------------------------------------------------------------------------------------
# One value of one setting
# ---------------------------------------------------------------------------------------------

def check_value(row: Setting, value) -> None:
    """ValueError naming the setting, the value and what is accepted, unless `value` is one `row` takes
    (a "choices" value after normalise_choices)."""
    name = row.name
    if value is None and row.optional:
        return
    if row.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}: expected a whole number, got {value!r}")
    elif row.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name}: expected a number, got {value!r}")
    elif row.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected true or false, got {value!r}")
    elif row.kind == "choice":
        if value not in row.choices:
            raise ValueError(f"{name}: {value!r} is not one of {', '.join(row.choices)}")
    elif row.kind == "preset":
        if value not in PRESETS and value != "custom":
            raise ValueError(f"{name}: unknown preset {value!r}; choose from {', '.join(PRESETS)}")
    if row.kind in ("int", "float") and not row.lo <= value <= row.hi:
        raise ValueError(f"{name}: {value} is out of range; use {row.lo}..{row.hi}")


def normalise_choices(row: Setting, value) -> tuple:
    """A "choices" setting's value (a list, or one comma-separated string) -> its tuple in the order of
    row.choices, without duplicates; ValueError when it is empty or holds something else."""
    name, choices = row.name, row.choices
    if isinstance(value, str):
        value = value.split(",")
    try:
        # A leading dot is forgiven: people write file types as ".glb".
        items = [str(v).strip().lower().lstrip(".") for v in value]
    except TypeError:
        raise ValueError(f"{name}: expected a list such as {list(row.default)}, got {value!r}") from None
    items = [v for v in items if v]
    bad = [v for v in items if v not in choices]
    if bad:
        raise ValueError(f"{name}: unknown value(s) {', '.join(map(repr, bad))}; choose from {', '.join(choices)}")
    if not items:
        raise ValueError(f"{name}: choose at least one of {', '.join(choices)}")
    return tuple(c for c in choices if c in items)


def parse_value(name: str, text: str):
    """A setting's value from text (the CLI's --set KEY=VALUE and flags): numbers and booleans parsed,
    "none" for an optional number; other kinds stay text (the settings check them)."""
    row = SETTINGS[name]
    low = text.strip().lower()
    if row.optional and low in ("none", "null", ""):
        return None
    if row.kind == "bool":
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}: expected true or false, got {text!r}")
    if row.kind in ("int", "float"):
        try:
            return int(text) if row.kind == "int" else float(text)
        except ValueError:
            words = "a whole number" if row.kind == "int" else "a number"
            raise ValueError(f"{name}: expected {words}{' or none' if row.optional else ''}, got {text!r}") from None
    return text


# ---------------------------------------------------------------------------------------------
# The table's own checks, and what is built from it
# ---------------------------------------------------------------------------------------------

def check_rows(rows) -> dict:
    """{name: row} of a settings table; ValueError naming the row whose facts do not fit together (a default
    out of its range, a preset value for an unknown preset, a panel input for a choice, ...)."""
    presets = {p.name for p in PRESET_LIST}
    places = {d.name for d in DESTINATION_LIST}
    out, flags, codes = {}, {}, {}
    for row in rows:
        where = f"settings table, row {row.name!r}"

        def need(ok, why, where=where):
            if not ok:
                raise ValueError(f"{where}: {why}")
        need(row.name.isidentifier() and row.name != "explicit" and row.name not in out, "a new identifier")
        need(row.kind in KINDS, f"kind is one of {', '.join(KINDS)}")
        number = row.kind in ("int", "float")
        need(number == (row.lo is not None and row.hi is not None), "a range (lo, hi) exactly when it is a number")
        need((row.kind in ("choice", "choices")) == bool(row.choices), "choices exactly when it is a choice")
        need(number or not row.optional and row.step is None, "optional and step only for numbers")
        need(set(row.presets) <= presets, f"presets among {', '.join(sorted(presets))}")
        need(set(row.destinations) <= places - {"none"}, f"destinations among {', '.join(sorted(places - {'none'}))}")
        need(not row.destinations or row.export, "destination values only for export settings")
        values = [row.default, *row.presets.values(), *row.destinations.values(),
                  *([row.cpu.value] if row.cpu else [])]
        if row.kind == "choices":
            need(all(normalise_choices(row, v) == tuple(v) for v in values), "values in the choices' order")
        elif row.kind != "preset":
            for value in values:
                check_value(row, value)
        need(row.cpu is None or number and not row.optional, "a CPU value only for a number that is never None")
        if row.ui:
            need(row.ui.place in PLACES, f"ui place among {', '.join(PLACES)}")
            need(row.ui.widget in (None, "radio", "dropdown"), "ui widget radio or dropdown")
            need(not row.ui.labels or [v for _, v in row.ui.labels] == list(row.choices), "a ui label per choice")
            if row.ui.ui_range is not None:
                lo, hi = row.ui.ui_range
                need(number and row.step is not None and not row.optional and row.lo <= lo < hi <= row.hi,
                     "a ui_range only for a slider, inside its range")
                # Presets and the CPU must land on the slider; a destination's value may widen it.
                shown = [row.default, *row.presets.values(), *([row.cpu.value] if row.cpu else [])]
                need(all(lo <= v <= hi for v in shown), "a ui_range holding its default, preset and CPU values")
        if row.cli:
            need(row.cli.flag.startswith("--"), "a CLI flag starting with --")
            need(flags.setdefault(row.cli.flag, row.kind) == row.kind, "the kind of the rows sharing its flag")
            need(not row.cli.flag.startswith("--no-") or row.default is True, "a --no-... flag only for a true default")
        if row.panel:
            # StableProjectorz's dropdown sends an index and its inputs cannot send None.
            need(row.kind in ("int", "float", "bool") and not row.optional, "a panel input only for a number or a bool")
            need(codes.setdefault(row.panel.code, row.name) == row.name, "a panel code name of its own")
        out[row.name] = row
    if getattr(out.get("preset"), "kind", None) != "preset":
        raise ValueError("settings table: a row 'preset' of kind preset is required")
    return out


def rule(row: Setting) -> tuple:
    """The row's RULES entry: ("int" | "float", lo, hi), ("bool",) or ("choice", choices)."""
    if row.kind in ("int", "float"):
        return row.kind, row.lo, row.hi
    return ("bool",) if row.kind == "bool" else ("choice", row.choices)


# Presets: values that differ from the dataclass defaults ("balanced" is the defaults themselves).
PRESETS: dict = {p.name: {r.name: r.presets[p.name] for r in ROWS if p.name in r.presets} for p in PRESET_LIST}
# Destinations: the values picking one sets ("none" sets nothing).
DESTINATIONS: dict = {d.name: {r.name: r.destinations[d.name] for r in ROWS if d.name in r.destinations}
                      for d in DESTINATION_LIST}
# name -> row, in the table's order (the dataclass's field order, so settings.json's key order).
SETTINGS: dict = check_rows(ROWS)
# What each field accepts (preset and formats have their own rules); the REST API's schema follows the rows too.
RULES: dict = {r.name: rule(r) for r in ROWS if r.kind in ("int", "float", "bool", "choice")}
# The page's slider steps; a slider spans the setting's one range, so settings from any surface load into it.
STEPS: dict = {r.name: r.step for r in ROWS if r.step is not None}
# One line per field, for help texts (CLI, UI, the API's schema).
HELP: dict = {r.name: r.help for r in ROWS}
# The fields that only shape the files of a decoded result: what an export may change (JobRunner.submit_export).
EXPORT_FIELDS: tuple = tuple(r.name for r in ROWS if r.export)
# On a CPU (for_device): the export's parts that cost renders or texels (docs/benchmarks/app.md, the tiny pipeline).
CPU_VALUES: dict = {r.name: r.cpu.value for r in ROWS if r.cpu}
# Why each CPU value (for the job's warning), and the formats whose files it shapes.
CPU_REASONS: dict = {r.name: (r.cpu.why, tuple(r.cpu.formats)) for r in ROWS if r.cpu}


def number_range(name: str) -> tuple:
    """(lo, hi) of a numeric setting."""
    row = SETTINGS[name]
    if row.kind not in ("int", "float"):
        raise ValueError(f"{name} is not a number setting")
    return row.lo, row.hi


def slider(name: str) -> tuple:
    """(lo, hi, step) of the page's slider for a numeric setting: its useful range (ui_range) where the row gives
    one, else its whole range, and its STEPS step. A value typed beyond the useful range widens the slider."""
    row = SETTINGS[name]
    ui_range = row.ui.ui_range if row.ui else None
    return (*(ui_range or number_range(name)), STEPS[name])


def field_names() -> tuple:
    return tuple(SETTINGS)


def check_keys(values: dict) -> None:
    unknown = sorted(set(values) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(field_names())}")


def settings_dataclass(cls, rows):
    """`cls` made a dataclass with one field per row (its default), in the rows' order, before its own."""
    own = dict(cls.__dict__.get("__annotations__", {}))
    for row in rows:
        if hasattr(cls, row.name):
            raise ValueError(f"settings table, row {row.name!r}: the name of a {cls.__name__} attribute")
        setattr(cls, row.name, row.default)
    cls.__annotations__ = {**{r.name: ANNOTATIONS[r.kind] for r in rows}, **own}
    return dataclass(cls)


# ---------------------------------------------------------------------------------------------
# The settings of one job
# ---------------------------------------------------------------------------------------------

class GenerationSettings:
    """One job's parameters: a field per row of settings_table.ROWS (preset, seed, ss_steps, ..., formats,
    ...). Validated on construction (and by `dataclasses.replace`): a bad value raises ValueError naming
    the field, the value and what is accepted."""

    # Not a setting (never in JSON, not compared): the fields the user set, which `for_device` never lowers.
    explicit: frozenset = dataclasses.field(default=frozenset(), compare=False, repr=False)

    def __post_init__(self):
        for row in ROWS:
            if row.kind == "choices":
                setattr(self, row.name, normalise_choices(row, getattr(self, row.name)))
        self.explicit = frozenset(self.explicit)
        check_keys(dict.fromkeys(self.explicit))
        for row in ROWS:
            check_value(row, getattr(self, row.name))

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_preset(cls, name: str = DEFAULT_PRESET, **overrides) -> "GenerationSettings":
        """The preset's values with `overrides` on top (None values are ignored); the overrides count as
        set by the user (`explicit`)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        chosen = with_destination({k: v for k, v in overrides.items() if v is not None})
        values = {**PRESETS[name], "preset": name, **chosen}
        check_keys(values)
        return cls(**values, explicit=frozenset(chosen))

    def replace(self, **changes) -> "GenerationSettings":
        """A copy with `changes`, which count as set by the user (`explicit`); a destination among them brings its
        values (under the other changes)."""
        changes = with_destination(changes)
        check_keys(changes)
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
        changes = {name: cpu_value for name, cpu_value in CPU_VALUES.items()
                   if self.from_preset_only(name) and cpu_value < getattr(self, name)}
        return dataclasses.replace(self, **changes) if changes else self

    def from_preset_only(self, name: str) -> bool:
        """`name` holds its preset's value and the user did not set it (for "custom" settings: a value some preset
        gives it): a value the app may adapt (to a CPU, to a family's memory floor)."""
        if name in self.explicit:
            return False
        presets = [self.preset] if self.preset in PRESETS else list(PRESETS)      # "custom": any preset's
        return getattr(self, name) in {preset_value(p, name) for p in presets}

    def given(self, name: str) -> bool:
        """The user gave `name` a value of their own: one other than the preset's (for "custom" settings: one set
        other than the default, or, kept from an earlier preset when another control moved, one no preset gives)."""
        if self.preset in PRESETS:
            expected = {preset_value(self.preset, name)}
        elif name in self.explicit:
            expected = {SETTINGS[name].default}
        else:
            expected = {preset_value(p, name) for p in PRESETS}
        return getattr(self, name) not in expected

    def with_seed(self, rng: random.Random | None = None) -> "GenerationSettings":
        """The settings a job actually runs with: a drawn seed when randomize_seed, and randomize_seed
        off, so that the result can be reproduced from settings.json alone."""
        if not self.randomize_seed:
            return self
        seed = (rng or random.SystemRandom()).randint(0, MAX_SEED)
        return dataclasses.replace(self, seed=seed, randomize_seed=False)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        d = {name: getattr(self, name) for name in SETTINGS}
        for row in ROWS:
            if row.kind == "choices":
                d[row.name] = list(d[row.name])
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict) -> "GenerationSettings":
        if not isinstance(data, dict):
            raise ValueError(f"settings must be a JSON object, got {type(data).__name__}")
        if "settings" in data and isinstance(data["settings"], dict):   # a job's settings.json
            data = data["settings"]
        check_keys(data)
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


GenerationSettings = settings_dataclass(GenerationSettings, ROWS)


def with_given(base: GenerationSettings, given: dict) -> GenerationSettings:
    """`base` (a preset's or a settings file's) with the values a user gave on a command line or in a request: each
    counts as set by them (`explicit`), and a seed given without randomize_seed means that seed."""
    if "seed" in given and "randomize_seed" not in given:
        given = {**given, "randomize_seed": False}
    return base.replace(**given)


def with_destination(changes: dict) -> dict:
    """`changes` with, under them, the values of the destination they name (if any)."""
    name = changes.get("destination")
    if name is None:
        return changes
    if name not in DESTINATIONS:
        raise ValueError(f"destination: {name!r} is not one of {', '.join(DESTINATIONS)}")
    return {**DESTINATIONS[name], **changes}


def preset_value(preset: str, name: str):
    """The value preset `preset` gives field `name` (its own value, else the default)."""
    return PRESETS[preset].get(name, SETTINGS[name].default)


def device_changes(submitted: GenerationSettings, used: GenerationSettings) -> dict:
    """{field: (submitted value, used value)} for the fields of CPU_VALUES that `for_device` changed."""
    return {k: (getattr(submitted, k), getattr(used, k)) for k in CPU_VALUES
            if getattr(submitted, k) != getattr(used, k)}


def submitted_settings(used: GenerationSettings, record) -> GenerationSettings:
    """`used` with the values the job was asked for put back from its settings.json `record`: changed_for_device (a
    device's lowered values) and changed_for_family (a family's memory floor), each {field: [asked, used]}; an entry
    this version cannot read is left as used."""
    asked = {}
    for key in ("changed_for_device", "changed_for_family"):      # the family's asked value came first
        changed = record.get(key) if isinstance(record, dict) else None
        if isinstance(changed, dict):
            asked.update({k: v[0] for k, v in changed.items() if k in SETTINGS and isinstance(v, list) and len(v) == 2})
    try:
        return used.replace(**asked) if asked else used
    except (ValueError, TypeError):
        return used


def family_changes(asked: GenerationSettings, now: GenerationSettings) -> dict:
    """{field: [asked value, value now]} of what a family's rule changed at submit (families.budget_floor)."""
    a, b = asked.to_dict(), now.to_dict()
    return {k: [a[k], b.get(k)] for k in a if a[k] != b.get(k)}


def device_change_warning(submitted: GenerationSettings, used: GenerationSettings, family=None) -> str | None:
    """The job's warning naming each setting `for_device` lowered that shapes a file the job writes, from -> to
    and why; None when there is none. `family` (a desktop.families Family): only the settings it uses."""
    parts = [f"{name} {was} -> {now} ({CPU_REASONS[name][0]})"
             for name, (was, now) in device_changes(submitted, used).items()
             if set(CPU_REASONS[name][1]) & set(used.formats) and (family is None or family.uses(name))]
    if not parts:
        return None
    return (f"Changed for the CPU, where the preset's values (sized for a GPU) would take minutes: {', '.join(parts)}. "
            f"A value you set yourself is kept.")


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


def job_texture_size(family, settings: GenerationSettings) -> int:
    """The texture side a job of `family` (a Family or its name) bakes on a GPU with `settings`: the settings' own
    where the user set it or the preset names one, else the family's for the job's pipeline type
    (``Family.texture_for``)."""
    from .families import get_family

    said = ("texture_size" in settings.explicit or "texture_size" in PRESETS.get(settings.preset, {})
            or settings.texture_size != SETTINGS["texture_size"].default)
    return settings.texture_size if said else get_family(family).texture_for(settings.pipeline_type)


def with_job_texture(family, settings: GenerationSettings, used: GenerationSettings) -> GenerationSettings:
    """`used` (`settings` as a device runs them) with the texture a job of `family` bakes: the device's where it
    lowered it, else ``job_texture_size``'s."""
    if used.texture_size != settings.texture_size:
        return used
    return used.replace(texture_size=job_texture_size(family, settings))
