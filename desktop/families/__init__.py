"""The image model families the app runs, each declared once (one file per family: trellis.py, trellis2.py), and the
one place that tells them apart. Every surface (page, CLI, REST, StableProjectorz, OpenAI-style, MCP, batch, the
Blender add-on through REST) asks this registry; no other module compares a family's name.

    FAMILIES                          name -> Family, TRELLIS v1 first; DEFAULT_FAMILY is v1
    get_family(name)                  the Family of an id ("trellis", "trellis2"); ValueError with what is accepted
    family_of_model(model)            the Family of a model folder or hub repo (its pipeline.json), no download
    family_for_model_name(name)       the Family a peer's model name means ("trellis2-4b", ...), or None
    family_of_record(record)          the Family of a job folder's settings.json record (v1's name none)
    family_of_result(result)          the Family whose kept result `result` (a dict of arrays) is
    family_of_result_file(path, rec)  the Family whose result.npz `path` is (its job's settings.json record first)
    look_family(wanted, from_prompt)  the Family that makes a new look on the user's mesh; FamilyRefusal where none
    family_problem(runner, wanted)    None when a job of `wanted` can run on `runner`, else what to do
    check(family, settings, images)   THE rule for settings a family cannot use (below)
    validation.validate()             every family declares every fact, consistently (the structure tests call it)

The one rule for a setting the chosen family cannot use, on every surface (all of them queue through
JobRunner.submit, which calls `check`):
  - a setting the family does not use, given with a value other than its preset's: the job runs, with one warning in
    the same words everywhere (`ignored_warning`);
  - what the family cannot make at all (several views of one object for TRELLIS.2): refused before anything is
    queued, a `FamilyRefusal` (a ValueError): REST answers 422, the CLI exits 2 (a usage error), MCP isError.

Nothing here imports more of the app than its own modules (the settings table reads the families), nor more than the
standard library at import time: the CLI's `--help` stays instant.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping, Optional

__all__ = ["Family", "FamilyRefusal", "FAMILIES", "DEFAULT_FAMILY", "FAMILY_HELP", "get_family", "family_of_model",
           "family_for_model_name", "family_of_record", "family_of_result", "family_of_result_file", "family_folder",
           "family_problem", "check", "budget_floor", "ignored_warning", "runner_family",
           "loaded_family", "runner_families", "names_words", "look_family", "looks_words"]


class FamilyRefusal(ValueError):
    """What a family cannot make at all (a usage error on every surface: REST 422, CLI exit 2, MCP isError)."""


@dataclass(frozen=True, eq=False)        # one record per family: compared and hashed as itself
class Family:
    """One image model family: what it is called, how its model folder is recognised and installed, what it makes
    and which settings it uses. Each fact is declared once, in its family's file."""

    name: str                              # the id on every surface: settings.json, REST model_family, --model-family
    words: str                             # its name for people
    about: str                             # one line for people: what it makes
    pipeline_class: str                    # pipeline.json's "name" of its model folders
    repos: tuple                           # its published hub repos (the first is the one the installer fetches)
    repo_marker: str                       # lower-case words of a hub repo id of this family ("trellis.2")
    peer_names: tuple                      # lower-case model names it answers to (OpenAI-style, LocalAI, MCP); the
                                           # first is its public name, the one answers give (never a folder)
    pipeline_types: tuple                  # the library pipeline class's PIPELINE_TYPES (() : one path)
    default_pipeline_type: Optional[str]
    vram_floors: Mapping[str, float]       # least VRAM budget (GiB) a job of each pipeline type completes under
    progress_stages: tuple                 # the stages of a generation before its files (the pipeline's progress)
    stage_words: Mapping[str, str]         # its own stage names -> what progress shows
    ignores: Mapping[str, str]             # setting -> why this family does not use it
    file_words: Mapping[str, str]          # file kind (ply, mp4, result) -> what that file is, for this family
    texture_size: int                      # = the settings table's texture_size default (a test keeps them equal)
    max_images: Optional[int]              # images of one object a job takes (None: several views)
    result_key: str                        # the array its kept result is recognised by (result.npz, keep_result)
    steps_module: str                      # the module of its job steps: generate, generate_in_phases, export
    new_looks_from_image: bool             # a new look from a photo on the user's mesh runs this family (`new_look`)
    warm_run: bool                         # the warm-up's tiny run uses its pipeline (v1's formats and renders)
    new_looks_from_prompt: bool = False    # a new look from a prompt runs this family's text models
    look_words: str = ""                   # what its new look gives the user's mesh ("colour", "PBR materials")
    look_pipeline_class: str = ""          # the library pipeline of its new looks ("": its image pipeline's)
    look_stages: tuple = ()                # a new look's stages before its files ((): v1's VARIANT_STAGES)
    look_steps_module: str = ""            # the module of its new look's step `variant` ("": steps_module)
    # pipeline type -> the texture side of its jobs where the settings do not say ({}: texture_size for every job)
    texture_sizes: Mapping[str, int] = field(default_factory=dict)
    # pipeline type ("" for one path) -> {stage: (seconds per step, steps)} on first_times_device: what a job's ETA
    # plans from before this machine timed its stages (desktop/jobs/first_estimate.py); {}: the app's CPU reference
    first_times: Mapping[str, Mapping[str, tuple]] = field(default_factory=dict)
    first_times_device: str = ""           # the device (and source) its first_times were measured on
    find_installed: Callable[[], Optional[str]] = field(compare=False, repr=False, default=lambda: None)
    unavailable_text: Callable[[], str] = field(compare=False, repr=False, default=lambda: "")
    install_text: Callable[[], str] = field(compare=False, repr=False, default=lambda: "")
    # whether a result.npz is this family's (its reader's own test; v1's is every other one)
    owns_result_file: Callable[[str], bool] = field(compare=False, repr=False, default=lambda path: False)
    # why the model at a path of this family cannot load here (files missing, no licence), None: the loader's words
    load_problem: Callable[[str], Optional[str]] = field(compare=False, repr=False, default=lambda model: None)

    def __post_init__(self):
        # a declaration is read on every surface: nobody may change it in place
        for name in ("vram_floors", "stage_words", "ignores", "file_words", "texture_sizes"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        object.__setattr__(self, "first_times", MappingProxyType(
            {kind: MappingProxyType(dict(times)) for kind, times in self.first_times.items()}))
        for name in ("repos", "peer_names", "pipeline_types", "progress_stages", "look_stages"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def __str__(self) -> str:
        return self.name

    # ------------------------------------------------------------------ settings
    def uses(self, setting: str) -> bool:
        """Whether a job of this family reads `setting` (settings_table's name)."""
        return setting not in self.ignores

    def why_not(self, setting: str) -> str:
        """Why this family does not use `setting` ("" where it does)."""
        return self.ignores.get(setting, "")

    def check(self, settings, images: int = 1) -> tuple:
        """(the settings a job of this family runs with, [warnings]); FamilyRefusal for what it cannot make."""
        return check(self, settings, images)

    # ------------------------------------------------------------------ memory, progress, files
    def vram_floor(self, pipeline_type: Optional[str] = None) -> Optional[float]:
        """The least VRAM budget (GiB) a job of `pipeline_type` (None: the default one) completes under; None where
        the family declares none."""
        if not self.vram_floors:
            return None
        return self.vram_floors[pipeline_type or self.default_pipeline_type]

    def texture_for(self, pipeline_type: Optional[str] = None) -> int:
        """The texture side of a job of `pipeline_type` (None or unknown: the default one) where the settings do not
        say."""
        kind = pipeline_type if pipeline_type in self.texture_sizes else self.default_pipeline_type
        return self.texture_sizes.get(kind, self.texture_size)

    def texture_words(self) -> str:
        """Its jobs' texture sides by pipeline type, for people ("1024 at 512, 2048 at 1024 / 1024_cascade"); ""
        where it declares none."""
        sizes = sorted(set(self.texture_sizes.values()))
        return ", ".join(f"{size} at {' / '.join(k for k, v in self.texture_sizes.items() if v == size)}"
                         for size in sizes)

    def stage_word(self, stage: str) -> Optional[str]:
        """What progress shows for this family's own stage `stage` (None: the app's common words apply)."""
        return self.stage_words.get(stage)

    def file_word(self, kind: str) -> Optional[str]:
        """What this family's file of `kind` (ply, mp4, result) is; None where the app's common words apply."""
        return self.file_words.get(kind)

    def first_times_of(self, pipeline_type: Optional[str] = None) -> Optional[Mapping[str, tuple]]:
        """{stage: (seconds per step, steps)} of a job of `pipeline_type` on first_times_device (an unknown or no
        type: the default one's); None where the family declares none."""
        if not self.first_times:
            return None
        return self.first_times.get(pipeline_type or "", self.first_times.get(self.default_pipeline_type or ""))

    def runs_stages(self, stages) -> bool:
        """Whether a job over `stages` is one of this family's: a generation's or a new look's stages are all there."""
        have = set(stages)
        return any(ours and set(ours) <= have for ours in (self.progress_stages, self.look_stages))

    @property
    def times_by_pipeline_type(self) -> bool:
        """Its stage times differ by pipeline type (the ETA learns them per type)."""
        return bool(self.pipeline_types)

    # ------------------------------------------------------------------ installation
    def installed_folder(self) -> Optional[str]:
        """Where the app installed this family's model (a folder or a cached hub repo), None where it did not.
        Only files are looked at."""
        return self.find_installed()

    def unavailable(self) -> str:
        """Why this family cannot run here and how to install it, one message."""
        return self.unavailable_text()

    def install_line(self) -> str:
        """One line: how to install this family here."""
        return self.install_text()


def _families() -> dict:
    from . import trellis, trellis2

    return {f.name: f for f in (trellis.FAMILY, trellis2.FAMILY)}


FAMILIES: dict = _families()
DEFAULT_FAMILY: Family = next(iter(FAMILIES.values()))


def names_words() -> str:
    """"trellis (TRELLIS v1) or trellis2 (TRELLIS.2)": the ids with their words, for help and errors."""
    items = [f"{f.name} ({f.words})" for f in FAMILIES.values()]
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else items[0]


def looks_words() -> str:
    """"trellis (colour) or trellis2 (PBR materials)": what each family's new look gives, for help and errors."""
    items = [f"{f.name} ({f.look_words})" for f in FAMILIES.values() if f.new_looks_from_image]
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else items[0]


FAMILY_HELP = (f"the model family an image job is for: {names_words()}; default: the family of the server's model "
               "folder. The other family runs too where it is installed (the server loads it in place of the one "
               "loaded: the job's progress says so); one that is not installed is refused with how to install it "
               "(GET /v1/health: `families`). Not used by prompts (the TRELLIS-text models). A new look from an image "
               f"(retexture) takes it too: {looks_words()}; default {DEFAULT_FAMILY.name}")


def get_family(name) -> Family:
    """The Family of the id `name` (a Family is returned as it is); ValueError saying what is accepted."""
    if isinstance(name, Family):
        return name
    found = FAMILIES.get(name) if isinstance(name, str) else None
    if found is None:
        raise ValueError(f"model_family must be {names_words()}, not {name!r}")
    return found


def look_family(wanted=None, from_prompt: bool = False) -> Family:
    """The family that makes a new look on the user's own mesh: `wanted` (None or "": today's default, the first
    family that makes looks from a photo, or from a prompt with `from_prompt`); FamilyRefusal with words for a family
    that makes none, or none from a prompt (ValueError for an unknown id)."""
    if wanted is None or wanted == "":
        return next(f for f in FAMILIES.values()
                    if (f.new_looks_from_prompt if from_prompt else f.new_looks_from_image))
    family = get_family(wanted)
    if from_prompt and not family.new_looks_from_prompt:
        others = " / ".join(f.words for f in FAMILIES.values() if f.new_looks_from_prompt)
        raise FamilyRefusal(f"a {family.words} new look takes an image, not a prompt: give an image (a new look from "
                            f"a prompt is {others}'s)")
    if not family.new_looks_from_image:
        raise FamilyRefusal(f"{family.words} makes no new looks on your model: use model_family {looks_words()}")
    return family


def family_of_model(model) -> Family:
    """The family of a model folder (the pipeline class its pipeline.json names) or hub repo (its name), without a
    download; a folder that cannot be read is v1's, whose loader then says what is wrong."""
    text = os.fspath(model)
    local = os.path.join(text, "pipeline.json")
    if os.path.isfile(local):
        try:
            with open(local, encoding="utf-8") as f:
                name = json.loads(f.read(1 << 20)).get("name")
        except (OSError, ValueError, AttributeError, RecursionError):
            return DEFAULT_FAMILY
        return next((f for f in FAMILIES.values() if f.pipeline_class == name), DEFAULT_FAMILY)
    if os.path.isdir(text):
        return DEFAULT_FAMILY
    lower = text.lower()
    return next((f for f in FAMILIES.values() if f is not DEFAULT_FAMILY and f.repo_marker in lower), DEFAULT_FAMILY)


def family_for_model_name(name) -> Optional[Family]:
    """The family a client's model name means (its id, a peer name or a hub repo, any case), None for another."""
    if not isinstance(name, str):
        return None
    key = name.strip().lower()
    return next((f for f in FAMILIES.values()
                 if key == f.name or key in f.peer_names or key in (r.lower() for r in f.repos)), None)


def family_of_record(record) -> Family:
    """The family of a job folder's settings.json record (records of TRELLIS v1 jobs may name none)."""
    name = record.get("family") if isinstance(record, dict) else None
    return FAMILIES.get(name, DEFAULT_FAMILY) if isinstance(name, str) else DEFAULT_FAMILY


def family_of_result(result) -> Family:
    """The family whose kept result `result` is (a mapping of its arrays; one of no family's keys: v1's)."""
    keys = set(result or ())
    return next((f for f in FAMILIES.values() if f.result_key in keys), DEFAULT_FAMILY)


def family_of_result_file(path, record=None) -> Family:
    """The family whose result.npz `path` is: the one its job's settings.json `record` names (the record of truth,
    whatever the file holds); where it names none, the file's own (only its zip directory is read; an unreadable one
    is v1's, whose reader then says what is wrong with it)."""
    name = record.get("family") if isinstance(record, dict) else None
    if isinstance(name, str) and name in FAMILIES:
        return FAMILIES[name]
    return next((f for f in FAMILIES.values() if f is not DEFAULT_FAMILY and f.owns_result_file(path)),
                DEFAULT_FAMILY)


# ---------------------------------------------------------------------- the one rule for settings
def ignored_warning(family: Family, name: str, value) -> str:
    """The words every surface uses for a setting `family` does not use, given anyway."""
    shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
    return f"{name} {shown} is not used by {family.words}: {family.why_not(name)}; the job ran without it."


def check(family, settings, images: int = 1) -> tuple:
    """(the settings a job of `family` runs with, [warnings]) for GenerationSettings `settings` and `images` views of
    one object. What the family cannot make raises FamilyRefusal; a setting it does not use, given a value of the
    user's own (settings.given), is a warning; a VRAM budget below its pipeline type's floor is raised to it where
    the preset set it, and kept with a warning where the user did."""
    family = get_family(family)
    if family.max_images is not None and images > family.max_images:
        most = "one image" if family.max_images == 1 else f"at most {family.max_images} images"
        raise FamilyRefusal(f"a {family.words} job takes {most} ({images} given): several views of one object are a "
                            f"{' / '.join(f.words for f in FAMILIES.values() if f.max_images is None)} feature")
    warnings = [ignored_warning(family, name, getattr(settings, name))
                for name in family.ignores if settings.given(name)]
    settings, warning = budget_floor(family, settings)
    return settings, warnings + ([warning] if warning else [])


def budget_floor(family: Family, settings) -> tuple:
    """(settings, warning or None): a VRAM budget below the floor of the job's pipeline type raised to it where the
    preset set it (the presets' budgets are sized for TRELLIS v1); one the user set is kept, with a warning that the
    job will likely run out of memory."""
    have = settings.vram_budget
    if not family.vram_floors or have is None:
        return settings, None
    kind = settings.pipeline_type if settings.pipeline_type in family.vram_floors else family.default_pipeline_type
    floor = family.vram_floors[kind]
    if have >= floor:
        return settings, None
    if settings.from_preset_only("vram_budget"):
        whose = "a preset's" if settings.preset == "custom" else f"the {settings.preset} preset's"
        return settings.replace(vram_budget=floor), (
            f"vram_budget {have:g} -> {floor:g} GiB: {whose} {have:g} GiB is sized for {DEFAULT_FAMILY.words}; "
            f"{family.words}'s pipeline type {kind} needs about {floor:g} GiB. Set vram_budget yourself to keep "
            "another value.")
    fits = [k for k, need in family.vram_floors.items() if need <= have]     # smaller types this budget takes
    other = f", or pick pipeline type {fits[-1]}" if fits else ""
    return settings, (f"vram_budget {have:g} GiB is below the {floor:g} GiB {family.words}'s pipeline type {kind} "
                      f"needs: the job will likely run out of GPU memory (raise vram_budget{other})")


# ---------------------------------------------------------------------- a runner's families
def runner_family(runner) -> Family:
    """The family of the runner's model folder (what a job naming none runs)."""
    family = getattr(getattr(runner, "models", None), "family", None)
    if isinstance(family, str) and family in FAMILIES:
        return FAMILIES[family]
    if isinstance(family, Family):
        return family
    return family_of_model(runner.model_path)


def loaded_family(runner) -> Family:
    """The family loaded now (a job of the other one switches it), else the runner's own."""
    family = getattr(runner, "loaded_family", None)
    if isinstance(family, Family):
        return family
    return FAMILIES[family] if isinstance(family, str) and family in FAMILIES else runner_family(runner)


def runner_families(runner) -> list:
    """The families (ids) a job can ask for on `runner`: its own, and the other one where it is installed."""
    families = getattr(runner, "families", None)
    return [str(f) for f in families()] if callable(families) else [runner_family(runner).name]


def family_folder(family, model) -> Optional[str]:
    """The folder (or hub repo) a job of `family` loads: `model` where it is of that family, else where the app
    installed that family; None where it is not installed here. Only files are looked at."""
    family = get_family(family)
    if family_of_model(model) is family:
        return os.fspath(model)
    return family.installed_folder()


def family_problem(runner, wanted) -> Optional[str]:
    """None when a job for the family `wanted` (None or "": the runner's own) can run on `runner` (its own family, or
    the other one where it is installed: the runner switches to it), else what is wrong and how to install it."""
    if wanted is None or wanted == "":
        return None
    try:
        family = get_family(wanted)
    except ValueError as err:
        return str(err)
    own = runner_family(runner)
    if family is own or family_folder(family, runner.model_path) is not None:
        return None
    return f"This server runs {own.words} ({runner.model_path}); {family.unavailable()}"
