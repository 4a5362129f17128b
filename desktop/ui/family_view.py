"""The page's model choice: TRELLIS v1 or TRELLIS.2, with TRELLIS.2's pipeline type beside it, and what the choice
changes on the page. The page starts on the family of the app's model folder (api.families); the other family can be
picked where it is installed (runner_families): its job loads it in place of the loaded one (that first job is slower
by the load). Where TRELLIS.2 is not installed the control is greyed with one line that says how to install it (the
installer's --trellis2 after Meta's DINOv3 licence: nothing is fetched behind the user's back); where TRELLIS v1 is
not, with how to get it.

With TRELLIS.2 chosen, what it does not use is greyed, each with its reason beside it: the guidance and bake knobs
(its guidance is its pipeline's own; its textures come from its voxels' attributes, not from rendered views), several
views of one object; and a new look from a photo where TRELLIS v1 is not installed (that needs a v1 image model).
Every format stays offered, the formats' help saying what PLY and MP4 are for TRELLIS.2 (its mesh with vertex colours,
a lit turntable of its PBR material)."""
import functools

from ..api.families import (FAMILY_NAMES, family_problem, install_line, loaded_family, runner_families, runner_family,
                             trellis2_here)
from ..settings import SETTINGS
from .lazy import gr
from .pipeline_costs import costs_text

FAMILY_CHOICES = [(name, family) for family, name in FAMILY_NAMES.items()]
BAKE = "TRELLIS.2 bakes its PBR textures from its voxels' colours, metal and roughness, not from rendered views"
# The settings TRELLIS.2 does not use, each with why (said beside its greyed control).
NOT_FOR_TRELLIS2 = {
    "ss_cfg": "TRELLIS.2 uses its pipeline's own guidance", "slat_cfg": "TRELLIS.2 uses its pipeline's own guidance",
    "bake_mode": BAKE, "bake_views": BAKE, "bake_resolution": BAKE,
    "fill_holes": "TRELLIS.2's export always closes small holes",
    "multi_image_mode": "TRELLIS.2 takes one image",
}
FORMATS_NOTE = ("TRELLIS.2 makes a mesh with PBR materials (colour, metal, roughness): its PLY is that mesh with "
                "vertex colours, its MP4 a lit turntable of the material")
MULTI_LABEL = "Views"
MULTI_REASON = "Views (TRELLIS v1 only: TRELLIS.2 takes one image)"
LOOK_LABEL = "... or from a photo"
LOOK_REASON = "... or from a photo (needs the TRELLIS v1 image model, not installed here; a prompt works)"
LOAD_NOTE = "its first job loads it in place of the loaded model (slower by that load)"


def with_reason(reason: str, name: str) -> str:
    return f"{reason} · {SETTINGS[name].ui.info}"


class FamilyChoice:
    """What the page offers: the family the app starts on, and whether (and how) the other one can be picked (read
    from the runner and the models folder when first asked)."""

    def __init__(self, runner):
        self.runner = runner

    @functools.cached_property
    def running(self) -> str:
        return runner_family(self.runner)

    @functools.cached_property
    def families(self) -> list:
        """The families a job can ask for here: the app's own, and the other one where it is installed."""
        return runner_families(self.runner)

    @functools.cached_property
    def trellis2(self):
        """trellis2_availability where the app runs TRELLIS v1, else None."""
        return trellis2_here() if self.running == "trellis" else None

    @property
    def installable_line(self):
        """How to install TRELLIS.2 where it is not, else None."""
        found = self.trellis2
        return install_line(found) if found is not None and not found.available else None

    @property
    def open(self) -> bool:
        """Both families can be picked (the other one is installed)."""
        return len(self.families) > 1

    def loaded_words(self) -> str:
        """The header's word on the family loaded now, where a job of the other one has switched it; else ""."""
        loaded = loaded_family(self.runner)
        return "" if loaded == self.running else f" (loaded now: {FAMILY_NAMES[loaded]}, for the last job)"

    def info(self) -> str:
        if self.running == "trellis":
            return self.installable_line or (f"TRELLIS.2 is installed ({self.trellis2.model_dir}): pick it to generate "
                                             f"with it; {LOAD_NOTE}.")
        text = "TRELLIS.2: a sharp mesh with PBR materials (colour, metal, roughness) from one image. "
        if not self.open:
            return text + family_unavailable_line("trellis")
        return f"{text}TRELLIS v1 is installed too: pick it to generate with it; {LOAD_NOTE}."

    def overrides(self) -> dict:
        """The page's controls as the running family opens them: setting name -> setting_control overrides."""
        return {name: self.control_update(name, self.running)
                for name in (*NOT_FOR_TRELLIS2, "pipeline_type", "formats")}

    @staticmethod
    def control_update(name: str, family: str) -> dict:
        """The properties of the control of setting `name` with `family` chosen."""
        trellis2 = family == "trellis2"
        if name == "pipeline_type":
            info = SETTINGS[name].ui.info + ("" if trellis2 else " (TRELLIS v1 has one path)")
            return {"interactive": trellis2, "info": info}
        if name == "formats":
            return {"info": with_reason(FORMATS_NOTE, name) if trellis2 else SETTINGS[name].ui.info}
        reason = NOT_FOR_TRELLIS2[name]
        return {"interactive": not trellis2, "info": with_reason(reason, name) if trellis2 else SETTINGS[name].ui.info}

    # ------------------------------------------------------------------ page
    def controls(self, make_control, k: dict) -> object:
        """The Model choice and the pipeline type, side by side (`make_control(name, overrides)`: the page's control
        of a setting); the pipeline type joins the page's setting controls `k`. Returns the Model choice."""
        with gr.Row(elem_id="td-family-row"):
            family = gr.Radio(FAMILY_CHOICES, value=self.running, label="Model", elem_id="td-family", scale=2,
                              interactive=self.open, info=self.info())
            with gr.Column(scale=1, min_width=160):
                k["pipeline_type"] = make_control("pipeline_type", self.control_update("pipeline_type", self.running))
                # each type's time and memory here, computed again at every page load (app.py's private load)
                self.costs = gr.Markdown(self.costs_text(), elem_id="td-pipeline-costs",
                                         visible=self.running == "trellis2")
        return family

    def costs_text(self) -> str:
        """Each pipeline type's expected time and peak GPU memory on this app's device (pipeline_costs.py)."""
        devices = getattr(self.runner, "devices", None) or ["cpu"]
        return costs_text(self.runner.list(), devices[0])

    def look_label(self) -> str:
        """A new look from a photo runs TRELLIS v1's image model: greyed in words where it is not installed."""
        return LOOK_LABEL if "trellis" in self.families else LOOK_REASON

    def multi_update(self, family: str) -> dict:
        return {"interactive": family != "trellis2", "label": MULTI_REASON if family == "trellis2" else MULTI_LABEL}


def wire_family(choice: FamilyChoice, family, k: dict, multi) -> None:
    """The Model choice's change (a click, "Use these settings", "Reuse this seed") opens or greys the controls it
    concerns, each with its reason."""
    names = ["pipeline_type", *[n for n in NOT_FOR_TRELLIS2 if n in k]]

    def changed(chosen):
        return [gr.update(**choice.control_update("formats", chosen)),
                *[gr.update(**choice.control_update(n, chosen)) for n in names],
                gr.update(**choice.multi_update(chosen)), gr.update(visible=chosen == "trellis2")]
    family.change(changed, [family], [k["formats"], *[k[n] for n in names], multi, choice.costs],
                  api_visibility="private", show_progress="hidden", concurrency_limit=None)
    # a pick reads the costs again: the jobs finished since the page loaded count
    k["pipeline_type"].change(choice.costs_text, None, choice.costs, api_visibility="private", show_progress="hidden",
                              concurrency_limit=None)


def family_unavailable_line(family: str) -> str:
    """Why `family` cannot be picked here and how to install it (jobs.models.family_unavailable)."""
    from ..jobs.models import family_unavailable

    return family_unavailable(family)


def refuse_other_family(runner, chosen) -> None:
    """ValueError with what to do when the page's Model choice is a family that is not installed here."""
    problem = family_problem(runner, chosen)
    if problem:
        raise ValueError(problem)


def family_of(record) -> str:
    """The family of a job folder's settings.json record (v1's records name none)."""
    family = record.get("family") if isinstance(record, dict) else None
    return family if family in FAMILY_NAMES else "trellis"


def model_words(record: dict) -> str | None:
    """The result line's model, for a TRELLIS.2 job: 'TRELLIS.2, pipeline type 1024_cascade'; None for v1's."""
    if family_of(record) != "trellis2":
        return None
    kind = (record.get("settings") or {}).get("pipeline_type")
    return f"TRELLIS.2, pipeline type {kind}" if kind else "TRELLIS.2"
