"""StableProjectorz and the model family (spz.py's routes call these): a request's `model_family` checked like REST's,
and on the panel the model choice (where both families are installed) and TRELLIS.2's pipeline type.

StableProjectorz's dropdown sends the index of its choice (an integer), not the choice: the panel's `model_family`
and `pipeline_type` dropdowns list the families in FAMILIES' order and the pipeline types in PIPELINE_TYPES' order,
so an index is taken as that family or type (a script may send the name, as REST takes it). A TRELLIS.2 job makes
a mesh with PBR materials, and its preview.mp4 is a lit turntable of that material (v1's is one of its Gaussians):
the preview endpoints and /generate's video serve it as they serve v1's; several views are refused by the runner
(one image per job).
"""
from __future__ import annotations

from ..families import FAMILIES as REGISTRY
from ..families import get_family, runner_families, runner_family
from ..settings_table import PIPELINE_TYPES
from .common import ApiError
from .families import FAMILIES, check_family

PANEL_NOTE = "TRELLIS.2: a mesh with PBR materials (its preview a lit turntable); the guidance dials are TRELLIS v1's"


def panel_word(family) -> str:
    """A family's words in the panel's dropdown (a space would end them there)."""
    return family.words.replace(" ", "-")


def request_family(body) -> object:
    """The `model_family` of a form (its first value) or JSON body (the panel's dropdown index: that family), or
    None; a value that is neither is left for check_family to refuse."""
    value = body.get("model_family") if isinstance(body, dict) else None
    value = value[0] if isinstance(value, list) and value else value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer() \
            and 0 <= int(value) < len(FAMILIES):
        return FAMILIES[int(value)]
    return value


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


def panel_lines(runner, settings) -> str:
    """The panel's TRELLIS.2 inputs (after its own) where TRELLIS.2 can run: the model choice where both families
    can (defaulting to the server's own), a note and the pipeline type's dropdown (defaulting to `settings`' type);
    nothing where only TRELLIS v1 can."""
    families = runner_families(runner)
    if not any(get_family(f).pipeline_types for f in families):      # no family here has pipeline types
        return ""
    choice = ""
    if len(families) > 1:
        own = FAMILIES.index(runner_family(runner).name)
        choice = ("    dropdown code_name=(model_family) visible_name=(model) options=["
                  + ",".join(panel_word(f) for f in REGISTRY.values()) + f"] default={own}\n")
    default = PIPELINE_TYPES.index(settings.pipeline_type) if settings.pipeline_type in PIPELINE_TYPES else 0
    return (choice + "    header code_name=(trellis2_note) visible_name=(" + PANEL_NOTE + ") color=(200,200,200,1)\n"
            "    dropdown code_name=(pipeline_type) visible_name=(pipeline type) options=["
            + ",".join(PIPELINE_TYPES) + f"] default={default}\n")
