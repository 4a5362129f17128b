"""StableProjectorz's side of the names: its parameter names -> ours (ALIASES, to_params), the request
schemas of its endpoints (built from settings.RULES, so the ranges are ours), and the panel layout it
shows for this server. spz.py (the slot and the routes) imports these and re-exports them.
"""

import functools
from typing import Literal, Optional

from .common import MAX_IMAGES, ApiError, form_schema, parameter_fields
from ..settings import MAX_SEED, RULES, GenerationSettings, number_range

STATUSES = ("PROCESSING", "PREVIEW_READY", "COMPLETE", "FAILED")

# StableProjectorz's parameter names -> ours.
ALIASES = {"ss_guidance_strength": "ss_cfg", "ss_sampling_steps": "ss_steps", "slat_guidance_strength": "slat_cfg",
           "slat_sampling_steps": "slat_steps", "preview_resolution": "video_resolution",
           "preview_frames": "video_frames", "preview_fps": "video_fps", "mesh_simplify_ratio": "simplify",
           "ss_strength": "ss_cfg", "slat_strength": "slat_cfg", "mesh_simplify": "simplify"}
_PERCENT_OK = ("mesh_simplify_ratio", "mesh_simplify")      # 0..1, or a percentage 0..100


# ---------------------------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------------------------

def _aliased(name: str, ours: str, description: str):
    from pydantic import Field

    rule = RULES[ours]
    kind = int if rule[0] == "int" else float
    lo, hi = rule[1], rule[2]
    if name in _PERCENT_OK:
        lo, hi = 0.0, 100.0
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
        "mesh_simplify_ratio": _aliased("mesh_simplify_ratio", "simplify",
                                        "fraction of triangles removed, 0..0.99, or a percentage (values above "
                                        "0.999 are divided by 100)"),
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
        "SpzGenerateRequest", __config__=ignore, __doc__="StableProjectorz's JSON request.",
        single_multi_img_input=(list[str], Field(min_length=1, max_length=MAX_IMAGES,
                                                 description="base64 images: one, or several views of one object")),
        ss_strength=_aliased("ss_strength", "ss_cfg", "structure guidance strength"),
        slat_strength=_aliased("slat_strength", "slat_cfg", "detail guidance strength"),
        mesh_simplify=_aliased("mesh_simplify", "simplify", "fraction of triangles removed, 0..0.99, or a "
                                                            "percentage (values above 0.999 are divided by 100)"),
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


def _form_body(model, file_field: str, count: str) -> dict:
    return {"required": True, "content": {
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


# The panel StableProjectorz shows for this server: our own plain-text description of the controls
# (name, type, range, default), generated from settings.RULES and the balanced preset's values, so that
# its ranges are the ones every other surface accepts; the simplify ratio as a percentage.
_PANEL_ROWS = (("ss_strength", "ss_cfg", "Structure guidance"), ("ss_steps", "ss_steps", "Structure steps"),
               ("slat_strength", "slat_cfg", "Detail guidance"), ("slat_steps", "slat_steps", "Detail steps"))


def panel_layout() -> str:
    d = GenerationSettings()
    rows = ["# Trellis Desktop: 3D generation panel", "operation make_meshes_and_tex", f"images 1..{MAX_IMAGES}",
            f'seed int -1..{MAX_SEED} default -1 "Seed (-1: random)"']
    for spz, ours, label in _PANEL_ROWS:
        lo, hi = number_range(ours)
        rows.append(f'{spz} {RULES[ours][0]} {lo:g}..{hi:g} default {getattr(d, ours):g} "{label}"')
    lo, hi = number_range("simplify")
    rows.append(f'mesh_simplify int {round(lo * 100)}..{round(hi * 100)} default {round(d.simplify * 100)} '
                '"Simplify (% of triangles removed)"')
    lo, hi = number_range("texture_size")
    rows.append(f'texture_size int {lo}..{hi} default {d.texture_size} "Texture size"')
    return "\n".join(rows) + "\n"


PANEL_LAYOUT = panel_layout()
