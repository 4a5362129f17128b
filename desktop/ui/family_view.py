"""The page's model choice: one of the image model families (desktop.families: TRELLIS v1, TRELLIS.2), with the
pipeline type beside it where the family has several, and what the choice changes on the page; every fact comes
from the family registry, none is compared here. The choice shows on the image tabs only (Single image, Multiple
views, Batch): prompts and new looks run their own models. The page starts on the family of the app's model folder;
another family can be picked where it is installed (runner_families): its job loads it in place of the loaded one
(that first job is slower by the load). Where a family is not installed the control is greyed with its install line
(what it downloads and needs: nothing is fetched behind the user's back).

With a family chosen, what it does not use is greyed, each with its reason beside it (Family.why_not); several views
where it takes one image; a new look from a photo where no installed family makes looks from photos. Every format
stays offered, the formats' help saying what its PLY and MP4 are where they differ (Family.file_word)."""
import functools

from ..families import (DEFAULT_FAMILY, FAMILIES, family_of_record, family_problem, get_family, loaded_family,
                        look_family, runner_families, runner_family)
from ..settings import SETTINGS
from .lazy import gr
from .pipeline_costs import costs_text, install_cost
from .status import model_name
from .values import choice_labels

FAMILY_CHOICES = [(f.words, name) for name, f in FAMILIES.items()]
# The settings some family does not use (each family says why: Family.why_not), greyed with that reason beside them.
NOT_FOR_ALL = tuple(dict.fromkeys(n for f in FAMILIES.values() for n in f.ignores if n != "pipeline_type"))
MULTI_LABEL = "Views"
# The formats whose tick box takes the chosen family's word for its file (Family.file_word).
RENAMED = ("ply",)
LOOK_LABEL = "... or from a photo"
LOAD_NOTE = "its first job loads it in place of the loaded model (slower by that load)"
# The tabs whose jobs a family's image model runs: the Model choice shows there only (prompts and new looks run their
# own models).
IMAGE_TABS = ("single", "multi", "batch")


def with_reason(reason: str, name: str) -> str:
    return f"{reason} · {SETTINGS[name].ui.info}"


def several_views(family) -> bool:
    """A job of `family` takes several views of one object."""
    return get_family(family).max_images is None


def multi_reason() -> str:
    takes = " / ".join(f.words for f in FAMILIES.values() if f.max_images is None)
    one = " and ".join(f.words for f in FAMILIES.values() if f.max_images is not None)
    return f"Views ({takes} only: {one} takes one image)"


def look_reason() -> str:
    photo = " / ".join(f.words for f in FAMILIES.values() if f.new_looks_from_image)
    return f"... or from a photo (needs the {photo} image model, not installed here; a prompt works)"


class FamilyChoice:
    """What the page offers: the family the app starts on, and whether (and how) another one can be picked (read
    from the runner and the models folder when first asked)."""

    def __init__(self, runner):
        self.runner = runner

    @functools.cached_property
    def running(self) -> str:
        return runner_family(self.runner).name

    @functools.cached_property
    def families(self) -> list:
        """The families a job can ask for here: the app's own, and the others where they are installed."""
        return runner_families(self.runner)

    @property
    def missing(self) -> list:
        """The families not installed here (each says how to install it, and what that costs)."""
        return [f for name, f in FAMILIES.items() if name not in self.families]

    @property
    def installable_line(self):
        """How to install the families that are not installed here, else None."""
        lines = [f"{f.install_line()} {install_cost(f)}".strip() for f in self.missing if f is not DEFAULT_FAMILY]
        return " ".join(lines) or None

    @property
    def open(self) -> bool:
        """Several families can be picked (another one is installed)."""
        return len(self.families) > 1

    def loaded_words(self) -> str:
        """The header's word on the family loaded now, where a job of another one has switched it; else ""."""
        loaded = loaded_family(self.runner)
        return "" if loaded.name == self.running else f" (loaded now: {loaded.words}, for the last job)"

    def info(self) -> str:
        own = get_family(self.running)
        others = [get_family(n) for n in self.families if n != self.running]
        if own is DEFAULT_FAMILY:
            if others:
                where = "; ".join(f"{f.words} is installed ({model_name(f.installed_folder())} in your models "
                                  "folder)" for f in others)
                return f"{where}: pick it to generate with it; {LOAD_NOTE}."
            return self.installable_line or ""
        text = f"{own.words}: {own.about}. "
        if not others:
            return text + " ".join(f.unavailable() for f in self.missing)
        return f"{text}{' and '.join(f.words for f in others)} is installed too: pick it to generate with it; {LOAD_NOTE}."

    def overrides(self) -> dict:
        """The page's controls as the running family opens them: setting name -> setting_control overrides."""
        return {name: self.control_update(name, self.running)
                for name in (*NOT_FOR_ALL, "pipeline_type", "formats", "texture_size")}

    @staticmethod
    def control_update(name: str, family: str) -> dict:
        """The properties of the control of setting `name` with `family` chosen."""
        chosen = get_family(family)
        info = SETTINGS[name].ui.info
        if name == "pipeline_type":
            return {"interactive": bool(chosen.pipeline_types),
                    "info": info + ("" if chosen.pipeline_types else f" · {chosen.why_not(name)}")}
        if name == "formats":
            own = [chosen.file_word(k) for k in ("ply", "mp4") if chosen.file_word(k) != DEFAULT_FAMILY.file_word(k)]
            # the tick box of a file the family makes differently says what it is (a TRELLIS.2 PLY is a mesh)
            choices = [(chosen.file_word(kind) if kind in RENAMED and chosen.file_word(kind) !=
                        DEFAULT_FAMILY.file_word(kind) else label, kind) for label, kind in choice_labels(name)]
            return {"info": with_reason(f"{chosen.words} makes {chosen.about}: {'; '.join(own)}", name) if own else info,
                    "choices": choices}
        if name == "texture_size" and chosen.texture_sizes:
            # the slider's default is not what this family bakes at every pipeline type
            return {"interactive": True, "info": f"{info} · {chosen.words} bakes its pipeline type's where this is "
                                                 f"left at {SETTINGS[name].default}: {chosen.texture_words()}"}
        if chosen.uses(name):
            return {"interactive": True, "info": info}
        return {"interactive": False, "info": with_reason(chosen.why_not(name), name)}

    # ------------------------------------------------------------------ page
    def controls(self, make_control, k: dict) -> object:
        """The Model choice and the pipeline type, side by side (`make_control(name, overrides)`: the page's control
        of a setting), shown on the image tabs only (``tab_update``); the pipeline type joins the page's setting
        controls `k`, each type's time and memory folded below them. Returns the Model choice."""
        with gr.Row(elem_id="td-family-row") as self.row:
            family = gr.Radio(FAMILY_CHOICES, value=self.running, label="Model", elem_id="td-family", scale=2,
                              interactive=self.open, info=self.info())
            with gr.Column(scale=1, min_width=160):
                k["pipeline_type"] = make_control("pipeline_type", self.control_update("pipeline_type", self.running))
        # each type's time and memory here, computed again at every page load (page_events.py's private load);
        # folded, so that Generate stays in view
        with gr.Accordion("What each pipeline type costs here", open=False, elem_id="td-pipeline-costs-box",
                          visible=self.costs_apply(self.running)) as self.costs_box:
            self.costs = gr.Markdown(self.costs_text(), elem_id="td-pipeline-costs")
        return family

    @staticmethod
    def costs_apply(family: str) -> bool:
        return bool(get_family(family).pipeline_types)

    def tab_update(self, mode: str, chosen) -> tuple:
        """(the Model row, the costs) on the tab of `mode`: shown on the image tabs only."""
        here = mode in IMAGE_TABS
        return gr.update(visible=here), gr.update(visible=here and self.costs_apply(chosen or self.running))

    def costs_text(self) -> str:
        """Each pipeline type's expected time and peak GPU memory on this app's device (pipeline_costs.py)."""
        devices = getattr(self.runner, "devices", None) or ["cpu"]
        return costs_text(self.runner.list(), devices[0])

    def look_label(self) -> str:
        """A new look from a photo runs an image model that makes looks from photos: greyed in words where none is
        installed."""
        return LOOK_LABEL if self.look_choices() else look_reason()

    def look_choices(self) -> list:
        """The New look tab's Model choice: [(words, id)] of the installed families that make a look from a photo
        (TRELLIS v1: colour, TRELLIS.2: PBR materials), the default look family first."""
        return [(f"{f.words}: {f.look_words}", f.name) for f in FAMILIES.values()
                if f.new_looks_from_image and f.name in self.families]

    @staticmethod
    def look_info() -> str:
        prompt = look_family(None, from_prompt=True)
        return f"what the look from a photo gives your model (a prompt's look is {prompt.words}'s {prompt.look_words})"

    def look_default(self) -> str:
        """The Model choice's first value: the default look family where installed, else the first that is."""
        names = [name for _, name in self.look_choices()]
        return look_family().name if look_family().name in names or not names else names[0]

    def multi_update(self, family: str) -> dict:
        views = several_views(family)
        return {"interactive": views, "label": MULTI_LABEL if views else multi_reason()}


def wire_family(choice: FamilyChoice, family, k: dict, multi) -> None:
    """The Model choice's change (a click, "Use these settings", "Reuse this seed", a History card) opens or greys
    the controls it concerns, each with its reason."""
    names = ["pipeline_type", *[n for n in (*NOT_FOR_ALL, "texture_size") if n in k]]

    def changed(chosen):
        return [gr.update(**choice.control_update("formats", chosen)),
                *[gr.update(**choice.control_update(n, chosen)) for n in names],
                gr.update(**choice.multi_update(chosen)), gr.update(visible=choice.costs_apply(chosen))]
    family.change(changed, [family], [k["formats"], *[k[n] for n in names], multi, choice.costs_box],
                  api_visibility="private", show_progress="hidden", concurrency_limit=None)
    # a pick reads the costs again: the jobs finished since the page loaded count
    k["pipeline_type"].change(choice.costs_text, None, choice.costs, api_visibility="private", show_progress="hidden",
                              concurrency_limit=None)


def refuse_other_family(runner, chosen) -> None:
    """ValueError with what to do when the page's Model choice is a family that is not installed here."""
    problem = family_problem(runner, chosen)
    if problem:
        raise ValueError(problem)


def family_of(record) -> str:
    """The family id of a job folder's settings.json record (records of TRELLIS v1 jobs may name none)."""
    return family_of_record(record).name

