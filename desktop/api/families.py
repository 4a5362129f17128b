"""The model family a server runs, and a client's `model_family` checked against it (REST v1, gradio_client's
/generate, StableProjectorz, the Blender add-on, the page's Model control).

A server runs one image model, the one of its model folder (--model): TRELLIS v1 or TRELLIS.2 (jobs.models.
model_family reads its pipeline.json). A request naming the family it wants is refused, with what to do, when the
server runs the other one: the command that starts it with the wanted model where that is installed; for a TRELLIS.2
that is not installed, how to install it (the installer's --trellis2 after Meta's DINOv3 licence is accepted: nothing
is ever fetched behind the user's back). Only files are looked at (trellis2_availability): no model is loaded.
"""
from __future__ import annotations

from typing import Optional

FAMILIES = ("trellis", "trellis2")
FAMILY_NAMES = {"trellis": "TRELLIS v1", "trellis2": "TRELLIS.2"}
FAMILY_HELP = ("the model family an image job is for: trellis (TRELLIS v1) or trellis2 (TRELLIS.2); a server runs "
               "the family of its model folder and refuses the other with what to do (GET /v1/health names it). "
               "Not checked for prompts (the TRELLIS-text models) and new looks")
INSTALL_COMMAND = "./run.sh --trellis2 (Windows: run.bat --trellis2)"


def runner_family(runner) -> str:
    """"trellis" or "trellis2": the family of the runner's image model."""
    family = getattr(getattr(runner, "models", None), "family", None)
    if family in FAMILIES:
        return family
    from ..jobs.models import model_family

    return model_family(runner.model_path)


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
    """None when a job for the family `wanted` (None: any) can run on `runner`, else what is wrong and what to do."""
    if wanted is None or wanted == "":
        return None
    if wanted not in FAMILIES:
        return f"model_family must be trellis (TRELLIS v1) or trellis2 (TRELLIS.2), not {wanted!r}"
    running = runner_family(runner)
    if wanted == running:
        return None
    here = f"This server runs {FAMILY_NAMES[running]} ({runner.model_path})"
    if wanted == "trellis":
        from ..options import DEFAULT_MODEL

        return (f"{here}: for TRELLIS v1, start it with --model {DEFAULT_MODEL} (or a folder holding a copy of "
                "it).")
    found = trellis2_here()
    if not found.available:
        return f"{here}. {found.message}"
    return (f"{here}: TRELLIS.2 is installed in {found.model_dir}; start the server with --model {found.model_dir} "
            f"(e.g. ./run.sh --model {found.model_dir}) to generate with it.")


def check_family(runner, wanted, where=("body", "model_family")) -> None:
    """The API's 422 (ApiError naming the field `where`) when `family_problem` finds one."""
    from .common import ApiError

    wrong = family_problem(runner, wanted)
    if wrong:
        raise ApiError(422, [{"loc": list(where), "msg": wrong, "type": "value_error"}])
