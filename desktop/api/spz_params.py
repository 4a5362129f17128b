"""StableProjectorz's side of the names: its parameter names -> ours (ALIASES, to_params), the request
schemas of its endpoints (built from the settings' rows, so the ranges are ours), and the panel it shows for
this server, written in its layout language (panel_layout): its inputs are the rows' `panel` entries
(settings_table.Panel). spz.py (the slot and the routes) imports these.
"""

import functools
from typing import Literal, Optional

from .common import MAX_IMAGES, ApiError, form_schema, parameter_fields
from ..settings import MAX_PROMPT_CHARS, MAX_SEED, ROWS, SETTINGS, GenerationSettings

STATUSES = ("PROCESSING", "PREVIEW_READY", "COMPLETE", "FAILED")

# What /generate's `generate_what` may ask for (StableProjectorz also knows "retexture": not offered here).
SUPPORTED_OPERATIONS = ("make_meshes_and_tex",)

# The panel's code names that are not our setting's name (ss_strength -> ss_cfg), from the rows.
PANEL_ALIASES = {row.panel.code: row.name for row in ROWS if row.panel and row.panel.code != row.name}
# StableProjectorz's parameter names -> ours: its form endpoints' names, then the panel's code names.
ALIASES = {"ss_guidance_strength": "ss_cfg", "ss_sampling_steps": "ss_steps", "slat_guidance_strength": "slat_cfg",
           "slat_sampling_steps": "slat_steps", "preview_resolution": "video_resolution",
           "preview_frames": "video_frames", "preview_fps": "video_fps", "mesh_simplify_ratio": "simplify",
           **PANEL_ALIASES}
_PERCENT_OK = ("mesh_simplify_ratio", "mesh_simplify")      # 0..1, or a percentage 0..100


# ---------------------------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------------------------

def _aliased(name: str, ours: str, description: str):
    from pydantic import Field

    row = SETTINGS[ours]
    kind = int if row.kind == "int" else float
    lo, hi = row.lo, row.hi
    if name in _PERCENT_OK:
        lo, hi = 0.0, 100.0
        description += f", {row.lo:g}..{row.hi:g}, or a percentage (values above 0.999 are divided by 100)"
    extra = {"allow_inf_nan": False} if kind is float else {}
    return (Optional[kind], Field(None, ge=lo, le=hi, description=f"{description} (our name: {ours})", **extra))


def _common_fields() -> dict:
    from pydantic import Field

    return {
        "seed": (int, Field(1, ge=-1, le=MAX_SEED, description="random seed; -1 draws a new one")),
        "ss_guidance_strength": _aliased("ss_guidance_strength", "ss_cfg", "structure guidance strength"),
        "ss_sampling_steps": _aliased("ss_sampling_steps", "ss_steps", "structure sampling steps"),
        "slat_guidance_strength": _aliased("slat_guidance_strength", "slat_cfg", "detail guidance strength"),
        "slat_sampling_steps": _aliased("slat_sampling_steps", "slat_steps", "detail sampling steps"),
        "preview_resolution": _aliased("preview_resolution", "video_resolution", "preview video side in pixels"),
        "preview_frames": _aliased("preview_frames", "video_frames", "preview video frames"),
        "preview_fps": _aliased("preview_fps", "video_fps", "preview video frames per second"),
        "mesh_simplify_ratio": _aliased("mesh_simplify_ratio", "simplify", "fraction of triangles removed"),
        "output_format": (Literal["glb", "gltf"], Field("glb", description="a GLB is written either way")),
        **parameter_fields(skip=("seed", "formats")),           # our names too (one of the two per setting)
    }


def _build_models() -> dict:
    from pydantic import BaseModel, ConfigDict, Field, create_model

    ignore = ConfigDict(extra="ignore")
    single = create_model(
        "SpzImageForm", __config__=ignore, __doc__="One image (`file` upload or `image_base64`) and parameters.",
        image_base64=(Optional[str], Field(None, description="the image file, base64 (a data: prefix is allowed)")),
        **_common_fields())
    multi = create_model(
        "SpzMultiImageForm", __config__=ignore,
        __doc__="Several views of one object (`file_list` uploads or `image_list_base64`) and parameters.",
        image_list_base64=(Optional[list[str]], Field(None, max_length=MAX_IMAGES,
                                                      description="the image files, base64")),
        **_common_fields())
    generate_fields = parameter_fields(skip=("formats",))
    generate_fields["seed"] = (int, Field(1, ge=-1, le=MAX_SEED, description="random seed; -1 draws a new one"))
    generate = create_model(
        "SpzGenerateRequest", __config__=ignore,
        __doc__="StableProjectorz's JSON request: the values of its panel's inputs under their code names.",
        single_multi_img_input=(Optional[list[str]], Field(
            None, max_length=MAX_IMAGES, description="base64 images (a data: prefix is allowed): one, or several "
                                                     "views of one object; none with a `prompt`")),
        prompt=(Optional[str], Field(None, max_length=MAX_PROMPT_CHARS, description=(
            "text to 3D instead of images (the panel offers it when the server has a text model); empty: "
            "not given"))),
        generate_what=(Optional[str], Field(None, description=(
            f"what to make: {', '.join(SUPPORTED_OPERATIONS)} (GET /info/supported_operations); any other "
            "value is a 422"))),
        **{code: _aliased(code, ours, SETTINGS[ours].help) for code, ours in PANEL_ALIASES.items()},
        skip_videos=(bool, Field(True, description="false: also render the preview video")),
        **generate_fields)

    class Ping(BaseModel):
        status: Literal["running"]
        message: str
        busy: bool

    class Status(BaseModel):
        status: Literal[STATUSES] = Field(description="FAILED also before the first generation (as that API did)")
        progress: int = Field(ge=0, le=100)
        message: str
        busy: bool
        job_id: Optional[str] = None
        stage: Optional[str] = None
        eta_s: Optional[float] = None

    class Result(BaseModel):
        status: Literal[STATUSES]
        progress: int = Field(ge=0, le=100)
        message: str
        job_id: str
        model_url: Optional[str] = None
        preview_urls: Optional[dict[str, str]] = None

    class Interrupt(BaseModel):
        status: Literal["interrupt_requested", "no_generation_in_progress"]

    return dict(SpzImageForm=single, SpzMultiImageForm=multi, SpzGenerateRequest=generate, Ping=Ping,
                Status=Status, Result=Result, Interrupt=Interrupt)


@functools.cache
def spz_models() -> dict:
    return _build_models()


def referenced_models() -> list:
    """Request models the form endpoints refer to from their hand-written request bodies."""
    m = spz_models()
    return [m["SpzImageForm"], m["SpzMultiImageForm"], m["SpzGenerateRequest"]]


def form_body(model, file_field: str, count: str) -> dict:
    """The OpenAPI request body of a form endpoint (optional in the schema, as /v1/jobs' is: see v1.py)."""
    return {"required": False, "content": {
        "multipart/form-data": {"schema": form_schema(model, {file_field: count})},
        "application/x-www-form-urlencoded": {"schema": form_schema(model)},
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
    }}


# ---------------------------------------------------------------------------------------------
# Requests -> jobs
# ---------------------------------------------------------------------------------------------

def to_params(values: dict) -> dict:
    """Validated request fields (StableProjectorz names or ours) -> generation settings (our names)."""
    params, source = {}, {}
    for name, value in values.items():
        if value is None:
            continue
        ours = ALIASES.get(name, name)
        if name in _PERCENT_OK and value > 0.999:
            value = value / 100
        if ours in params:
            raise ApiError(422, f"{name} and {source[ours]} set the same thing: give only one of them")
        params[ours], source[ours] = value, name
    if params.get("seed") == -1:
        params.pop("seed")
        params["randomize_seed"] = True
    return params


def check_operation(value) -> None:
    """422 unless `generate_what` is one this server does (or not given)."""
    if value is not None and value not in SUPPORTED_OPERATIONS:
        raise ApiError(422, [{"loc": ["body", "generate_what"], "type": "value_error", "msg": (
            f"generate_what {value!r} is not supported by this server; it does: {', '.join(SUPPORTED_OPERATIONS)} "
            "(GET /info/supported_operations)")}])


# ---------------------------------------------------------------------------------------------
# The panel
# ---------------------------------------------------------------------------------------------

# The panel's first lines (our names; the seed joins the last); other rows' panel inputs follow, two a line.
PANEL_LINES = (("ss_cfg", "slat_cfg"), ("ss_steps", "slat_steps"), ("simplify", "texture_size"))
PANEL_BOX = (("bg.color", "255,255,255,10"), ("bg.ppu", 10))          # the shaded boxes around inputs


def _num(value) -> str:
    """A number as StableProjectorz parses it: ints bare, floats shortest (7.5, 0.975)."""
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _line(depth: int, kind: str, *props) -> str:
    return "    " * depth + kind + "".join(f" {key}=({value})" for key, value in props)


def _slider(depth: int, code: str, label: str, lo, hi, default, decimals: int) -> list:
    """A round slider in its shaded box, between flexible spaces."""
    space = ("space", ("minWidth", 20), ("flexibleHeight", 1), ("flexibleWidth", 1))
    return [_line(depth, "hgroup", *PANEL_BOX, ("flexibleWidth", 1)),
            _line(depth + 1, *space),
            _line(depth + 1, "slider", ("code_name", code), ("visible_name", label), ("min", _num(lo)),
                  ("max", _num(hi)), ("default", _num(default)), ("show_n_decimals", decimals), ("flexibleHeight", 1)),
            _line(depth + 1, *space)]


def _integer(depth: int, code: str, label: str, lo, hi, default, seed: bool = False) -> list:
    """An integer field in its shaded box, pinned to the box's top (the box has no layout of its own)."""
    return [_line(depth, "go", *PANEL_BOX, ("flexibleWidth", 1), ("minHeight", 62), ("preferredHeight", 62)),
            _line(depth + 1, "int_horizontal", ("code_name", code), ("visible_name", label), ("min", _num(lo)),
                  ("max", _num(hi)), ("default", _num(default)), ("as_seed", "true" if seed else "false"),
                  ("rect.anchors", "0,1,1,1"), ("rect.offsetMin", "0,-60"))]


def _toggle(depth: int, code: str, label: str, default: bool) -> list:
    """A true / false switch in its shaded box, pinned to the box's top as the integer fields are."""
    return [_line(depth, "go", *PANEL_BOX, ("flexibleWidth", 1), ("minHeight", 62), ("preferredHeight", 62)),
            _line(depth + 1, "toggle", ("code_name", code), ("visible_name", label),
                  ("default", "true" if default else "false"), ("rect.anchors", "0,1,1,1"),
                  ("rect.offsetMin", "0,-60"))]


def _input(depth: int, row, settings: GenerationSettings) -> list:
    """The panel input of one setting (its row's `panel`): a dial for a float, an integer field, a switch."""
    code, label, value = row.panel.code, row.panel.label, getattr(settings, row.name)
    if row.kind == "float":
        return _slider(depth, code, label, row.lo, row.hi, value, row.panel.decimals)
    if row.kind == "int":
        return _integer(depth, code, label, row.lo, row.hi, value)
    return _toggle(depth, code, label, value)


def _dial_line(rows: list, settings: GenerationSettings) -> list:
    """A line holding a dial: a fixed-height box (a dial's box takes the height it is given)."""
    out = [_line(1, "go", ("minHeight", 140), ("preferredHeight", 140), ("flexibleWidth", 1)),
           _line(2, "hgroup", ("spacing", 8))]
    for row in rows:
        out += _input(3, row, settings)
    return out


def panel_layout(settings: GenerationSettings, text: bool = False) -> str:
    """The panel StableProjectorz shows for a server whose requests start from `settings` (its preset), in
    that app's layout language: one element per line, children indented under their group, properties
    written key=(value); each input's code_name is the request field it fills. Whole-number settings are
    integer fields, since its sliders send floats in steps of 0.01 (12.37 steps); sliders only for settings
    that are floats. Inputs, ranges and labels from the settings' rows (their `panel`), defaults from
    `settings`, so the panel cannot drift from what the server accepts. `text`: the server has a text model,
    so a prompt is offered too (then neither input is required on its own)."""
    rows = [_line(0, "vgroup", ("padl", 4), ("padr", 4), ("spacing", 8), ("flexibleWidth", 1)),
            _line(1, "header", ("code_name", "title"), ("visible_name", "Trellis Desktop"), ("align", "center")),
            _line(1, "go", ("minHeight", 120), ("preferredHeight", 120), ("flexibleWidth", 1)),
            _line(1, "single_multi_img_input", ("code_name", "single_multi_img_input"), ("visible_name", "images"),
                  *(() if text else (("content_min_num_needed", "make_meshes_and_tex:1"),))),
            _line(1, "header", ("code_name", "images_note"), ("visible_name", "one image, or several views of one "
                                                                             "object"), ("color", "200,200,200,1"))]
    if text:
        rows += [_line(1, "text_prompt", ("code_name", "prompt"), ("visible_name", "prompt"), ("is_positive", "true")),
                 _line(1, "header", ("code_name", "prompt_note"), ("visible_name", "or a prompt instead of images "
                                                                                  "(text to 3D)"),
                       ("color", "200,200,200,1"))]
    shown = [[SETTINGS[n] for n in line if SETTINGS.get(n) and SETTINGS[n].panel] for line in PANEL_LINES]
    dials, steps, last = shown
    rows += _dial_line(dials, settings)
    rows.append(_line(1, "hgroup", ("spacing", 8), ("flexibleWidth", 1)))
    for row in steps:
        rows += _input(2, row, settings)
    rows += _dial_line([r for r in last if r.kind == "float"], settings)
    rows.append(_line(3, "vgroup", ("spacing", 8), ("flexibleWidth", 1)))
    for row in last:
        if row.kind != "float":
            rows += _input(4, row, settings)
    rows += _integer(4, "seed", "seed", -1, MAX_SEED, -1, seed=True)
    placed = {row.name for line in shown for row in line}
    more = [row for row in ROWS if row.panel and row.name not in placed]
    for family in ("float", "other"):
        group = [row for row in more if (row.kind == "float") == (family == "float")]
        for i in range(0, len(group), 2):
            if family == "float":
                rows += _dial_line(group[i:i + 2], settings)
            else:
                rows.append(_line(1, "hgroup", ("spacing", 8), ("flexibleWidth", 1)))
                for row in group[i:i + 2]:
                    rows += _input(2, row, settings)
    return "\n".join(rows) + "\n"
