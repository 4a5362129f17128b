"""The page's model choice: TRELLIS v1 or TRELLIS.2, with TRELLIS.2's pipeline type beside it, and what the choice
changes on the page. The app runs the family of its model folder (api.families); the other family is offered only
where it is installed, else the control is greyed with one line that says how to install it (the installer's
--trellis2 after Meta's DINOv3 licence: nothing is fetched behind the user's back). Generate refuses a family the
app does not run with the command that starts it with that model.

With TRELLIS.2 chosen, what it cannot make or does not use is greyed, each with its reason beside it: the PLY and
MP4 formats (it makes meshes with PBR materials, no Gaussians), the guidance, bake and preview knobs (its guidance
is its pipeline's own; its textures come from its voxels' attributes, not from rendered views), several views of
one object; and a new look from a photo when the app runs TRELLIS.2 (that needs a v1 image model)."""
import functools

from ..api.families import FAMILY_NAMES, family_problem, install_line, runner_family, trellis2_here
from ..settings import SETTINGS
from .lazy import gr

FAMILY_CHOICES = [(name, family) for family, name in FAMILY_NAMES.items()]
NO_GAUSSIANS = ("ply", "mp4")                 # the formats of v1's Gaussians
NO_GAUSSIANS_CLASS = "td-no-gaussians"
BAKE = "TRELLIS.2 bakes its PBR textures from its voxels' colours, metal and roughness, not from rendered views"
PREVIEW = "TRELLIS.2 makes no preview video (it makes no Gaussians to turn)"
# The settings TRELLIS.2 does not use, each with why (said beside its greyed control).
NOT_FOR_TRELLIS2 = {
    "ss_cfg": "TRELLIS.2 uses its pipeline's own guidance", "slat_cfg": "TRELLIS.2 uses its pipeline's own guidance",
    "bake_mode": BAKE, "bake_views": BAKE, "bake_resolution": BAKE,
    "fill_holes": "TRELLIS.2's export always closes small holes",
    "video_frames": PREVIEW, "video_resolution": PREVIEW,
    "multi_image_mode": "TRELLIS.2 takes one image",
}
FORMATS_REASON = ("TRELLIS.2 makes a mesh with PBR materials (colour, metal, roughness), not Gaussian splats: PLY and "
                  "the MP4 preview are TRELLIS v1's")
MULTI_LABEL = "Views"
MULTI_REASON = "Views (TRELLIS v1 only: TRELLIS.2 takes one image)"
LOOK_LABEL = "... or from a photo"
LOOK_REASON = "... or from a photo (needs a TRELLIS v1 image model: this app runs TRELLIS.2; a prompt works)"
# PLY and MP4 greyed in the formats' choices while TRELLIS.2 is chosen (each choice's box is named by its value): the
# box faded, the words struck through at full contrast (still readable), clicks ignored.
CSS = "".join(f""".{NO_GAUSSIANS_CLASS} label:has(input[name={kind}]) {{pointer-events: none;
  text-decoration: line-through;}}
.{NO_GAUSSIANS_CLASS} label:has(input[name={kind}]) input {{opacity: 0.4;}}
""" for kind in NO_GAUSSIANS)


def trellis2_formats(formats) -> list:
    """`formats` without what TRELLIS.2 cannot make."""
    return [kind for kind in formats if kind not in NO_GAUSSIANS]


def with_reason(reason: str, name: str) -> str:
    return f"{reason} · {SETTINGS[name].ui.info}"


class FamilyChoice:
    """What the page offers: the family the app runs, and whether (and how) the other one can be chosen (read from
    the runner and the models folder when first asked)."""

    def __init__(self, runner):
        self.runner = runner

    @functools.cached_property
    def running(self) -> str:
        return runner_family(self.runner)

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
        """Both families can be picked (the other one is installed, or the app runs TRELLIS.2)."""
        return self.installable_line is None

    def info(self) -> str:
        if self.installable_line:
            return self.installable_line
        if self.running == "trellis":
            where = self.trellis2.model_dir
            return (f"TRELLIS.2 is installed ({where}): start the app with --model {where} to generate with it; this "
                    "app runs TRELLIS v1.")
        return ("TRELLIS.2: a sharp mesh with PBR materials (colour, metal, roughness) from one image. TRELLIS v1 "
                "needs the app started with its model (--model microsoft/TRELLIS-image-large).")

    def overrides(self, formats) -> dict:
        """The page's controls as the running family opens them (`formats`: the app's default ones): setting name ->
        setting_control overrides."""
        out = {name: self.control_update(name, self.running) for name in (*NOT_FOR_TRELLIS2, "pipeline_type")}
        out["formats"] = {**self.control_update("formats", self.running), "value": self.start_formats(formats)}
        return out

    @staticmethod
    def control_update(name: str, family: str, formats=None) -> dict:
        """The properties of the control of setting `name` with `family` chosen (`formats`: the ticked ones)."""
        trellis2 = family == "trellis2"
        if name == "pipeline_type":
            info = SETTINGS[name].ui.info + ("" if trellis2 else " (TRELLIS v1 has one path)")
            return {"interactive": trellis2, "info": info}
        if name == "formats":
            out = {"elem_classes": [NO_GAUSSIANS_CLASS] if trellis2 else [],
                   "info": with_reason(FORMATS_REASON, name) if trellis2 else SETTINGS[name].ui.info}
            if trellis2 and formats is not None:
                out["value"] = trellis2_formats(formats)
            return out
        reason = NOT_FOR_TRELLIS2[name]
        return {"interactive": not trellis2, "info": with_reason(reason, name) if trellis2 else SETTINGS[name].ui.info}

    # ------------------------------------------------------------------ page
    def controls(self, make_control, k: dict) -> object:
        """The Model choice and the pipeline type, side by side (`make_control(name, overrides)`: the page's control
        of a setting); the pipeline type joins the page's setting controls `k`. Returns the Model choice."""
        with gr.Row(elem_id="td-family-row"):
            family = gr.Radio(FAMILY_CHOICES, value=self.running, label="Model", elem_id="td-family", scale=2,
                              interactive=self.open, info=self.info())
            k["pipeline_type"] = make_control("pipeline_type", {**self.control_update("pipeline_type", self.running),
                                                                "scale": 1})
        return family

    def start_formats(self, formats) -> list:
        return trellis2_formats(formats) if self.running == "trellis2" else list(formats)

    def look_label(self) -> str:
        return LOOK_REASON if self.running == "trellis2" else LOOK_LABEL

    def multi_update(self, family: str) -> dict:
        return {"interactive": family != "trellis2", "label": MULTI_REASON if family == "trellis2" else MULTI_LABEL}


def wire_family(choice: FamilyChoice, family, k: dict, multi) -> None:
    """The Model choice's change (a click, "Use these settings", "Reuse this seed") opens or greys the controls it
    concerns, each with its reason."""
    names = ["pipeline_type", *[n for n in NOT_FOR_TRELLIS2 if n in k]]

    def changed(chosen, formats):
        return [gr.update(**choice.control_update("formats", chosen, formats or [])),
                *[gr.update(**choice.control_update(n, chosen)) for n in names],
                gr.update(**choice.multi_update(chosen))]
    family.change(changed, [family, k["formats"]], [k["formats"], *[k[n] for n in names], multi],
                  api_visibility="private", show_progress="hidden", concurrency_limit=None)


def refuse_other_family(runner, chosen) -> None:
    """ValueError with what to do when the page's Model choice is not the family the app runs."""
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
