"""A batch's input -> its items: one image or one prompt each, with a stable name and optional settings.

    INPUT is a folder        every image file in it (not its sub-folders), sorted by name
             a glob          e.g. 'photos/**/*.jpg' (quote it), every file it matches, sorted
             a .csv file     one item a row: a header row names the columns (`image` or `prompt`, and
                             optionally `name`, `preset` and any setting, e.g. `seed`, `texture_size`);
                             without a header, one image path or prompt a row
             a .jsonl file   one item a line: {"image": "a.png", "seed": 3} or {"prompt": "a red chair"},
                             or a bare JSON string (image path or prompt)

A line without a header or key is an image when it ends with an image extension (a missing file then
fails that item), otherwise a prompt. Relative image paths in a list are relative to the list's folder.
An item's name (its output folder) is its image's file name without extension, or the first words of its
prompt, or its `name` column; repeated names get -2, -3, ... in input order, so a rerun of the same input
gives every item the name it had. No torch here.
"""
from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
import re
from dataclasses import dataclass, field

from ..settings import DEFAULT_PRESET, PRESETS, GenerationSettings, field_names

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
NAME_MAX = 80
PROMPT_MAX_CHARS = 20_000        # CLIP reads 77 tokens; anything this long is not a prompt
# Names the batch's own files use in the outputs folder (manifest.py).
RESERVED_NAMES = {"manifest.jsonl", "summary.json"}
# An item's settings columns besides the GenerationSettings fields.
ITEM_KEYS = ("image", "prompt", "name", "preset")


class BatchInputError(ValueError):
    """The batch input as a whole cannot be read (a usage error: nothing was started)."""


@dataclass
class Item:
    name: str                       # output folder name, unique in the batch
    kind: str                       # "image" or "prompt"
    source: str                     # absolute image path, or the prompt
    changes: dict = field(default_factory=dict)     # per-item settings (field -> value), "preset" included
    problem: str | None = None      # why this item cannot run (bad settings, empty prompt): it fails at once

    def settings(self, base: GenerationSettings) -> GenerationSettings:
        """The batch's settings with this item's on top (a `preset` column starts from that preset)."""
        changes = dict(self.changes)
        preset = changes.pop("preset", None)
        start = GenerationSettings.from_preset(preset) if preset else base
        if "seed" in changes and "randomize_seed" not in changes:
            changes["randomize_seed"] = False
        return start.replace(**changes)


def is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def read_items(source: str) -> list:
    """The items of a folder, glob, .csv or .jsonl (see the module's docstring). Raises BatchInputError."""
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        files = sorted(os.path.join(path, n) for n in os.listdir(path)
                       if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, n)))
        if not files:
            raise BatchInputError(f"{source}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        rows = [{"image": f} for f in files]
    elif os.path.isfile(path) and path.lower().endswith(".csv"):
        rows = _csv_rows(path)
    elif os.path.isfile(path) and path.lower().endswith((".jsonl", ".ndjson")):
        rows = _jsonl_rows(path)
    elif os.path.isfile(path):
        rows = [{"image": path}]
    elif is_glob(path):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
        if not files:
            raise BatchInputError(f"{source}: the pattern matches no file")
        rows = [{"image": f} for f in files]
    else:
        raise BatchInputError(f"{source}: no such folder or file (give a folder, a glob, a .csv or a .jsonl)")
    if not rows:
        raise BatchInputError(f"{source}: the list has no items")
    base_dir = os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else os.getcwd()
    return _name_items([_item(row, base_dir) for row in rows])


def _csv_rows(path: str) -> list:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            table = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise BatchInputError(f"cannot read {path}: {err}") from None
    if not table:
        return []
    head = [c.strip().lower().replace("-", "_") for c in table[0]]
    if "image" in head or "prompt" in head:
        unknown = [c for c in head if c and c not in ITEM_KEYS and c not in field_names()]
        if unknown:
            raise BatchInputError(f"{path}: unknown column(s) {', '.join(unknown)}; use image or prompt, name, "
                                  f"preset and settings ({', '.join(field_names())})")
        return [{k: v.strip() for k, v in zip(head, r) if k and v.strip() != ""} for r in table[1:]]
    return [{"": r[0].strip()} for r in table]


def _jsonl_rows(path: str) -> list:
    rows = []
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise BatchInputError(f"cannot read {path}: {err}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as err:
            raise BatchInputError(f"{path}:{n}: not JSON ({err})") from None
        if isinstance(value, str):
            rows.append({"": value})
        elif isinstance(value, dict):
            rows.append({str(k).replace("-", "_"): v for k, v in value.items()})
        else:
            raise BatchInputError(f"{path}:{n}: expected an object or a string, got {type(value).__name__}")
    return rows


def _item(row: dict, base_dir: str) -> Item:
    row = dict(row)
    bare = row.pop("", None)
    if bare is not None:
        key = "image" if str(bare).lower().endswith(IMAGE_EXTENSIONS) else "prompt"
        row[key] = bare
    name = row.pop("name", None)
    if "image" in row:
        kind, source = "image", str(row.pop("image"))
        source = os.path.abspath(os.path.join(base_dir, os.path.expanduser(source)))
        row.pop("prompt", None)
    else:
        kind, source = "prompt", row.pop("prompt", "")
    item = Item(name=str(name) if name else "", kind=kind, source=source if isinstance(source, str) else "")
    try:
        if kind == "prompt":
            item.source = check_prompt(source)
        item.changes = _settings_changes(row)
        item.settings(GenerationSettings.from_preset(DEFAULT_PRESET))     # validate now: fail this item only
    except ValueError as err:
        item.problem = f"bad item: {err}"
    return item


def _settings_changes(row: dict) -> dict:
    kinds = {f.name: f.type for f in dataclasses.fields(GenerationSettings)}
    changes = {}
    for key, value in row.items():
        if key == "preset":
            if value not in PRESETS:
                raise ValueError(f"preset: unknown preset {value!r}; choose from {', '.join(PRESETS)}")
            changes["preset"] = value
        elif key in kinds:
            changes[key] = _coerce(key, str(kinds[key]), value)
        else:
            raise ValueError(f"unknown setting {key!r}; use {', '.join(field_names())}")
    return changes


def _coerce(key: str, kind: str, value):
    """A CSV cell (text) or JSON value -> the setting's type."""
    if not isinstance(value, str):
        return value
    if kind == "bool":
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except ValueError:
        raise ValueError(f"{key}: expected a number, got {value!r}") from None
    return value


def check_prompt(prompt) -> str:
    text = prompt.strip() if isinstance(prompt, str) else ""
    if not text:
        raise ValueError("no image and no prompt (a prompt describes the object, e.g. 'a red wooden chair')")
    if len(text) > PROMPT_MAX_CHARS:
        raise ValueError(f"the prompt has {len(text):,} characters, more than the {PROMPT_MAX_CHARS:,} accepted")
    return text


def clean_name(text: str) -> str:
    """A folder name from a file stem or a prompt: letters, digits, '.', '_' and '-', at most NAME_MAX long."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text.strip()).strip("-.")[:NAME_MAX].strip("-.")
    return name or "item"


def _name_items(items: list) -> list:
    taken = set()
    for item in items:
        if item.name:
            base = clean_name(item.name)
        elif item.kind == "image":
            base = clean_name(os.path.splitext(os.path.basename(item.source))[0])
        else:
            base = clean_name("-".join(item.source.lower().split()[:8]))
        if base.lower() in RESERVED_NAMES:
            base += "-item"
        name, k = base, 2
        while name.lower() in taken:
            name, k = f"{base}-{k}", k + 1
        taken.add(name.lower())
        item.name = name
    return items
