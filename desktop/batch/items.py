"""A batch's input -> its items: one image, one prompt or one new look each, with a stable name and optional
settings.

    INPUT is a folder        every image file in it (not its sub-folders), sorted by name
             a glob          e.g. 'photos/**/*.jpg' (quote it), every file it matches, sorted
             a .csv file     one item a row, cells separated by commas, semicolons or tabs (as spreadsheets
                             save them): a header row names the columns, one of them `image`, `prompt` or `mesh`,
                             optionally `name`, `preset`, `model_family` and any setting (e.g. `seed`,
                             `texture_size`); without a header, one image path or prompt a line
             a .jsonl file   one item a line: {"image": "a.png", "seed": 3} or {"prompt": "a red chair"},
                             {"mesh": "chair.glb", "image": "oak.png", "model_family": "trellis2"}, or a bare JSON
                             string (image path or prompt)

An item with a `mesh` (the user's 3-D model: GLB, glTF, OBJ, PLY or STL) is a new look of that model from its
`image` (a look from a prompt is retexture's, not a batch's): the model keeps its vertices, faces, UVs and place, as
the app's New look keeps them. Its `model_family` (trellis: colour, trellis2: PBR materials) picks the family that makes the look;
without one, the family of the batch's model (--model / --model-family). An image item's `model_family` runs that
family in place of the batch's; a prompt item takes none (the TRELLIS-text models).

A line without a header or key is an image when it ends with an image extension (a missing file then
fails that item), a mesh without an image (that item fails) when it ends with a 3-D model's, otherwise a prompt. A first row that looks like a header (column names) but has no
`image`, `prompt` or `mesh` column is refused, as is a header-less row of several cells starting with an image:
they are mistakes, not prompts. Relative image and mesh paths in a list are relative to the list's folder. Only
regular files are read: a list, or an image or mesh named in one, that is a pipe, socket, device or folder is
refused without being opened; a mesh that is not there fails its item (never the batch). An item's name (its
output folder) is its image's file name without extension (a look's: its mesh's), or the first words of its prompt,
or its `name` column; repeated names get -2, -3, ... in input order, so a rerun of the same input gives every item
the name it had. No torch here.
"""
from __future__ import annotations

import csv
import glob
import io
import os
import re
from dataclasses import dataclass, field

from .. import settings as settings_mod
from ..families import FamilyRefusal, get_family, look_family
from ..jobs.meshes import MESH_FORMATS
from ..settings import DEFAULT_PRESET, PRESETS, SETTINGS, GenerationSettings, field_names, parse_value
from .files import MAX_JSON_DEPTH, json_depth, load_json_text, read_regular, special_file_problem

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
NAME_MAX = 80
# A list of a million items is about 100 MB; a larger file is not a list.
LIST_MAX_BYTES = 256 << 20
# Cell separators of a CSV: commas, and semicolons or tabs as spreadsheets in many locales write them.
DELIMITERS = (",", ";", "\t")
SEPARATORS = {",": "commas", ";": "semicolons", "\t": "tabs"}
COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# Names the batch's own files use in the outputs folder (manifest.py).
RESERVED_NAMES = {"manifest.jsonl", "summary.json"}
# An item's columns besides the GenerationSettings fields.
ITEM_KEYS = ("image", "prompt", "mesh", "name", "preset", "model_family")
# The columns of which a header row names at least one.
SOURCE_KEYS = ("image", "prompt", "mesh")


class BatchInputError(ValueError):
    """The batch input as a whole cannot be read (a usage error: nothing was started)."""


@dataclass
class Item:
    name: str                       # output folder name, unique in the batch
    kind: str                       # "image", "prompt" or "look" (a new look of the user's mesh)
    source: str                     # absolute image path, or the prompt (a look's: what its look is taken from)
    changes: dict = field(default_factory=dict)     # per-item settings (field -> value), "preset" included
    problem: str | None = None      # why this item cannot run (bad settings, empty prompt): it fails at once
    mesh: str | None = None         # a look's 3-D model: its absolute path
    family: str | None = None       # the model family the item asked for (None: the batch's)

    def identity(self) -> str:
        """What the item is made from, as text (its source; a look's mesh too): its manifest key's input."""
        return self.source if self.mesh is None else f"{self.mesh}\0{self.source}"

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
    elif os.path.exists(path):
        raise BatchInputError(special_file_problem(path, "a folder, a glob, a .csv or a .jsonl")
                              or f"{source}: cannot be read as a folder, a glob, a .csv or a .jsonl")
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


def _read_list(path: str) -> str:
    """A list file's text; never opens a pipe or device (read_regular checks the opened file's type)."""
    try:
        data = read_regular(path, LIST_MAX_BYTES, "a list file")
    except OSError as err:
        raise BatchInputError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise BatchInputError(f"{path} is not UTF-8 text ({err}); save it as UTF-8 (a spreadsheet's "
                              "\"CSV UTF-8\")") from None


def _rows(text: str, delimiter: str):
    return (r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if any(c.strip() for c in r))


def _column(cell: str) -> str:
    return cell.strip().lower().replace("-", "_")


def _is_column(name: str) -> bool:
    return name in ITEM_KEYS or name in field_names()


def _csv_rows(path: str) -> list:
    text = _read_list(path)
    try:
        heads = {d: next(_rows(text, d), None) for d in DELIMITERS}
        if heads[","] is None:
            return []
        # The separator under which the first row names the most known columns (then the most cells).
        delimiter = max(DELIMITERS, key=lambda d: (sum(_is_column(_column(c)) for c in heads[d]), len(heads[d])))
        head = [_column(c) for c in heads[delimiter]]
        if any(k in head for k in SOURCE_KEYS):
            unknown = [c for c in head if c and not _is_column(c)]
            if unknown:
                raise BatchInputError(f"{path}: unknown column(s) {', '.join(unknown)}; use image or prompt, mesh, "
                                      f"name, preset, model_family and settings ({', '.join(field_names())})")
            table = list(_rows(text, delimiter))
            for n, r in enumerate(table[1:], 2):
                if any(c.strip() for c in r[len(head):]):
                    raise BatchInputError(f"{path}: row {n} has {len(r)} cells but the header names {len(head)} "
                                          f"columns (cells are separated by {SEPARATORS[delimiter]}): put a cell "
                                          "that holds the separator in double quotes")
            return [{k: v.strip() for k, v in zip(head, r) if k and v.strip() != ""} for r in table[1:]]
    except csv.Error as err:
        raise BatchInputError(f"cannot read {path}: {err}") from None
    cells = [c.strip() for c in heads[delimiter] if c.strip()]
    if any(_is_column(_column(c)) for c in cells) or (len(cells) > 1 and all(COLUMN_NAME.fullmatch(c) for c in cells)):
        raise BatchInputError(f"{path}: the first row ({', '.join(cells)}) is a header without an image or prompt "
                              "column (nor a mesh column): name the column of image paths `image` (or the column of "
                              "prompts `prompt`; of 3-D models to give a new look, `mesh`). A list without a header "
                              "has one image path or prompt a line")
    return _headerless_rows(path, text)


def _headerless_rows(path: str, text: str) -> list:
    rows = []
    for n, line in enumerate(re.split(r"\r\n|\r|\n", text), 1):
        cell = line.strip()
        if not cell:
            continue
        for d in DELIMITERS:
            first, sep, rest = cell.partition(d)
            first = first.strip().strip('"').lower()
            if sep and rest.strip() and first.endswith(IMAGE_EXTENSIONS + MESH_FORMATS):
                columns = "image" + d + "seed" if first.endswith(IMAGE_EXTENSIONS) else "mesh" + d + "image"
                raise BatchInputError(f"{path}:{n}: several cells ({cell[:80]!r}, separated by {SEPARATORS[d]}) but "
                                      "the list has no header row: add a first row naming the columns, e.g. "
                                      f"{columns!r}")
        if len(cell) > 1 and cell[0] == cell[-1] == '"':
            quoted = next(csv.reader([cell]), [cell])
            cell = quoted[0] if len(quoted) == 1 else cell
        rows.append({"": cell})
    return rows


def _jsonl_rows(path: str) -> list:
    rows = []
    for n, line in enumerate(re.split(r"\r\n|\r|\n", _read_list(path)), 1):
        if not line.strip():
            continue
        if json_depth(line) > MAX_JSON_DEPTH:
            raise BatchInputError(f"{path}:{n}: JSON nested more than {MAX_JSON_DEPTH} levels deep; an item is an "
                                  "object of settings ({\"image\": \"a.png\", \"seed\": 3}) or a string")
        try:
            value = load_json_text(line)
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
        lower = str(bare).lower()
        key = "image" if lower.endswith(IMAGE_EXTENSIONS) else "mesh" if lower.endswith(MESH_FORMATS) else "prompt"
        row[key] = bare
    name = row.pop("name", None)
    mesh = row.pop("mesh", None)
    family = row.pop("model_family", None)
    problem = None
    if "image" in row:
        kind, (source, problem) = "image", _file(row.pop("image"), base_dir, "image", "an image file")
        row.pop("prompt", None)
    else:
        kind, source = "prompt", row.pop("prompt", "")
    if mesh is not None:
        if kind == "prompt" and source == "":
            problem = problem or ("bad item: a new look of a mesh is taken from an image: give its `image` column "
                                  "too (the photo whose look the model takes)")
        elif kind == "prompt":
            problem = problem or ("bad item: a batch's new look is taken from an image, not a prompt: give an "
                                  "`image` (a look from a prompt: python -m desktop retexture MESH --prompt TEXT)")
        kind, (mesh, mesh_problem) = "look", _file(mesh, base_dir, "mesh", "a 3-D model file")
        if mesh_problem is None and not os.path.lexists(mesh):
            mesh_problem = f"bad input: {mesh}: no such file (the 3-D model this item gives a new look)"
        problem = mesh_problem or problem
    item = Item(name=str(name) if name else "", kind=kind, source=source if isinstance(source, str) else "",
                mesh=mesh)
    try:
        if kind == "prompt":
            item.source = check_prompt(source)
        item.family = _family(family, kind)
        item.changes = _settings_changes(row)
        item.settings(GenerationSettings.from_preset(DEFAULT_PRESET))     # validate now: fail this item only
    except (ValueError, TypeError) as err:
        item.problem = f"bad item: {err}"
    item.problem = problem or item.problem
    return item


def _file(value, base_dir: str, column: str, what: str) -> tuple:
    """(the absolute path a cell names, relative to the list's folder; the item's problem with it or None)."""
    if not isinstance(value, str) or not value.strip():
        return str(value), f"bad item: {column}: expected a file path, got {value!r:.80}"
    path = os.path.abspath(os.path.join(base_dir, os.path.expanduser(value)))
    problem = special_file_problem(path, what)
    return path, f"bad input: {problem}" if problem else None


def _family(value, kind: str):
    """The family id an item's `model_family` names (None: the batch's); ValueError for one it cannot use."""
    if value is None:
        return None
    family = get_family(value.strip() if isinstance(value, str) else value)
    if kind == "prompt":
        raise ValueError(f"model_family {family.name}: a prompt is made by the TRELLIS-text models, not an image model "
                         "family; leave model_family out of prompt items")
    if kind == "look":
        try:
            look_family(family.name)
        except FamilyRefusal as err:
            raise ValueError(f"model_family: {err}") from None
    return family.name


def _settings_changes(row: dict) -> dict:
    changes = {}
    for key, value in row.items():
        if key == "preset":
            if not isinstance(value, str) or value not in PRESETS:
                raise ValueError(f"preset: unknown preset {value!r}; choose from {', '.join(PRESETS)}")
            changes["preset"] = value
        elif key in SETTINGS:
            # Text (a CSV cell, a JSON string) is read as the CLI reads it: "none" is an optional number's None.
            changes[key] = parse_value(key, value) if isinstance(value, str) else value
        else:
            raise ValueError(f"unknown setting {key!r}; use {', '.join(field_names())}")
    return changes


def check_prompt(prompt) -> str:
    """A prompt item's text (the app's rules: settings.check_prompt); a missing or blank one says so."""
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        raise ValueError("no image and no prompt (a prompt describes the object, e.g. 'a red wooden chair')")
    return settings_mod.check_prompt(prompt)


def clean_name(text: str) -> str:
    """A folder name from a file stem or a prompt: letters, digits, '.', '_' and '-', at most NAME_MAX long."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text.strip()).strip("-.")[:NAME_MAX].strip("-.")
    return name or "item"


def _name_items(items: list) -> list:
    taken = set()
    for item in items:
        if item.name:
            base = clean_name(item.name)
        elif item.kind in ("image", "look"):
            base = clean_name(os.path.splitext(os.path.basename(item.mesh or item.source))[0])
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
