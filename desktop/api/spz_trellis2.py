"""StableProjectorz and the model family (spz.py's routes call these): a request's `model_family` checked like REST's,
TRELLIS.2's pipeline type on the panel, and what a TRELLIS.2 server cannot answer.

StableProjectorz's dropdown sends the index of its choice (an integer), not the choice: the panel's `pipeline_type`
dropdown lists the pipeline types in PIPELINE_TYPES' order, so an index is taken as that type (a script may send the
name, as REST takes it). A TRELLIS.2 server makes a mesh with PBR materials and no Gaussians: the preview endpoints
(a turntable of the Gaussians) are refused with what to use instead, /generate's preview video is left out, and
several views are refused by the runner (one image per job).
"""
from __future__ import annotations

from .common import ApiError
from .families import check_family, runner_family
from ..settings_table import PIPELINE_TYPES

NO_PREVIEW = ("this server runs TRELLIS.2, which makes a mesh with PBR materials and no Gaussians, so no turntable "
              "preview: use /generate_no_preview (or /generate), which answers with the GLB")
PANEL_NOTE = "TRELLIS.2: a mesh with PBR materials (no preview video); the guidance dials are TRELLIS v1's"


def request_family(body) -> object:
    """The `model_family` of a form (its first value) or JSON body, or None."""
    value = body.get("model_family") if isinstance(body, dict) else None
    return value[0] if isinstance(value, list) and value else value


def checked_family(runner, body, images: bool, where: str = "body") -> None:
    """422 with what to do when an image request names the family the server does not run."""
    if images:
        check_family(runner, request_family(body), (where, "model_family"))


def pipeline_type_from_panel(raw):
    """/generate's JSON with the panel dropdown's index (an integer, or a whole float) as its pipeline type's name."""
    if not isinstance(raw, dict):
        return raw
    value = raw.get("pipeline_type")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        return raw
    index = int(value)
    if not 0 <= index < len(PIPELINE_TYPES):
        raise ApiError(422, [{"loc": ["body", "pipeline_type"], "type": "value_error", "msg": (
            f"the panel's pipeline type {index} is not one of its {len(PIPELINE_TYPES)} choices (0 to "
            f"{len(PIPELINE_TYPES) - 1}: {', '.join(PIPELINE_TYPES)})")}])
    return {**raw, "pipeline_type": PIPELINE_TYPES[index]}


def trellis2_formats(runner, mode: str, formats: tuple) -> tuple:
    """The formats a generation of `mode` asks for on `runner`: a TRELLIS.2 server's without the preview video;
    a preview (which is nothing but that video) is a 422 there."""
    if runner_family(runner) != "trellis2":
        return formats
    if mode == "preview":
        raise ApiError(422, NO_PREVIEW)
    return tuple(kind for kind in formats if kind != "mp4")


def panel_lines(runner, settings) -> str:
    """The panel's TRELLIS.2 inputs (after its own), for a TRELLIS.2 server: a note and the pipeline type's dropdown
    (defaulting to `settings`' type); nothing for a TRELLIS v1 server."""
    if runner_family(runner) != "trellis2":
        return ""
    default = PIPELINE_TYPES.index(settings.pipeline_type) if settings.pipeline_type in PIPELINE_TYPES else 0
    return ("    header code_name=(trellis2_note) visible_name=(" + PANEL_NOTE + ") color=(200,200,200,1)\n"
            "    dropdown code_name=(pipeline_type) visible_name=(pipeline type) options=["
            + ",".join(PIPELINE_TYPES) + f"] default={default}\n")
