"""The model families a server can run, and a client's `model_family` checked against them (REST v1, gradio_client's
/generate, StableProjectorz, the Blender add-on, the page's Model control).

A server starts on the image model of its model folder (--model): TRELLIS v1 or TRELLIS.2 (jobs.models.model_family
reads its pipeline.json). A job naming the other family runs too where that family is installed (jobs.models.
family_folder: TRELLIS.2 in the app's models folder, TRELLIS v1 where the installer puts it): its worker unloads one
pipeline and loads the other. A request naming a family that is not installed is refused with how to install it (for
TRELLIS.2, the installer's --trellis2 after Meta's DINOv3 licence is accepted: nothing is ever fetched behind the
user's back). Only files are looked at (trellis2_availability): no model is loaded.
"""
from __future__ import annotations

from typing import Optional

from ..options import MODEL_FAMILIES

FAMILY_NAMES = dict(MODEL_FAMILIES)
FAMILIES = tuple(FAMILY_NAMES)
FAMILY_HELP = ("the model family an image job is for: trellis (TRELLIS v1) or trellis2 (TRELLIS.2); default: the "
               "family of the server's model folder. The other family runs too where it is installed (the server "
               "loads it in place of the one loaded: the job's progress says so); one that is not installed is "
               "refused with how to install it (GET /v1/health: `families`). Not used by prompts (the TRELLIS-text "
               "models) and new looks")
INSTALL_COMMAND = "./run.sh --trellis2 (Windows: run.bat --trellis2)"


def runner_family(runner) -> str:
    """"trellis" or "trellis2": the family of the runner's model folder (what a job naming none runs)."""
    family = getattr(getattr(runner, "models", None), "family", None)
    if family in FAMILIES:
        return family
    from ..jobs.models import model_family

    return model_family(runner.model_path)


def loaded_family(runner) -> str:
    """The family loaded now (a job of the other one switches it), else the runner's own."""
    family = getattr(runner, "loaded_family", None)
    return family if family in FAMILIES else runner_family(runner)


def runner_families(runner) -> list:
    """The families a job can ask for on `runner`: its own, and the other one where it is installed."""
    families = getattr(runner, "families", None)
    return list(families()) if callable(families) else [runner_family(runner)]


def trellis2_here():
    """trellis2_availability of the app's models folder (TRELLIS.2-4B there): whether it could run, and why not."""
    from trellis.pipelines.trellis2_availability import trellis2_availability

    return trellis2_availability()


def install_line(found) -> str:
    """One line: how to install TRELLIS.2, for an unavailable `found` (Trellis2Availability): the gated DINOv3
    licence step (unless its files are here already) and the installer command."""
    from trellis.pipelines.trellis2_availability import DINOV3_PAGE

    if found.reason == "missing_weights" and found.conditioner_dir is not None:
        return (f"TRELLIS.2 is not installed completely here: run {INSTALL_COMMAND} to finish its download "
                "(it resumes).")
    why = {"dinov3_not_accepted": " (Hugging Face has not granted your account DINOv3 yet)",
           "no_token": " (it needs a Hugging Face token)"}.get(found.reason, "")
    return (f"TRELLIS.2 is not installed here{why}: accept Meta's DINOv3 licence at {DINOV3_PAGE} with your Hugging "
            f"Face account, then run {INSTALL_COMMAND} with your token.")


def family_problem(runner, wanted) -> Optional[str]:
    """None when a job for the family `wanted` (None: any) can run on `runner` (its own family, or the other one where
    it is installed: the runner switches to it), else what is wrong and how to install it."""
    if wanted is None or wanted == "":
        return None
    if wanted not in FAMILIES:
        return f"model_family must be trellis (TRELLIS v1) or trellis2 (TRELLIS.2), not {wanted!r}"
    if wanted == runner_family(runner):
        return None
    from ..jobs.models import family_folder, family_unavailable

    if family_folder(wanted, runner.model_path) is not None:
        return None
    return f"This server runs {FAMILY_NAMES[runner_family(runner)]} ({runner.model_path}); {family_unavailable(wanted)}"


def check_family(runner, wanted, where=("body", "model_family")) -> None:
    """The API's 422 (ApiError naming the field `where`) when `family_problem` finds one."""
    from .common import ApiError

    wrong = family_problem(runner, wanted)
    if wrong:
        raise ApiError(422, [{"loc": list(where), "msg": wrong, "type": "value_error"}])
