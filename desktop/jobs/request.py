"""What a surface asks the runner to make, as one record: `JobRequest`. Every surface (page, CLI, retexture, REST v1,
StableProjectorz, OpenAI-style, MCP, rerun) fills one in and hands it to `JobRunner.submit_request`; the kind of
job follows from what it holds, and what is missing or wrong is said here, once, in words that name the surface's
own fields (`FieldNames`).

    generate  images (one, or several views of one object), in the image family `family` (None: the model's own)
    text      a prompt (the TRELLIS-text model)
    variant   a new look: `mesh` (a path, or (file name, bytes) of an upload) keeps its shape and takes the look of
              the prompt or of one image; `family` chooses the family that makes a look from an image

`job_for(request, folder_for, default_family)` makes the Job a request asks for, by the one family rule of every
surface (what a family cannot make refused, a setting it does not use warned of, a memory floor applied): the runner's
`submit_request` and the batch's items both take their jobs from it.
"""
from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Callable, Optional

from ..families import FAMILIES, FamilyRefusal, get_family, look_family
from ..families import check as family_check
from ..settings import GenerationSettings, check_prompt
from .job import Job

REQUEST_KINDS = ("generate", "text", "variant")


class RequestError(ValueError):
    """What is missing or wrong in a JobRequest. `field`: the input it is about ("images", "prompt", "mesh",
    "family"), or None when it is the combination of inputs."""

    def __init__(self, message: str, field: Optional[str] = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class FieldNames:
    """What a surface calls a request's inputs, for the messages that name them. `prompt` None: the surface's clients
    send no prompt (the messages offer none); `mesh` None: the surface makes no new look from there."""
    images: str = "images"
    prompt: Optional[str] = "a prompt"
    mesh: Optional[str] = "a 3-D model"
    family: str = "the model family"


PYTHON_NAMES = FieldNames()


@dataclass(frozen=True)
class JobRequest:
    """One job to queue. `kind` is derived from what the request holds (a mesh: variant; else a prompt: text; else
    images: generate; nothing: None) unless a surface states it (a page's tab); `checked()` says what is missing or
    wrong. `settings` None: the defaults. `keep_result`: the decoded result stays in memory for exports."""
    images: tuple = ()
    prompt: Optional[str] = None
    mesh: object = None
    settings: Optional[GenerationSettings] = None
    keep_result: bool = False
    family: Optional[str] = None
    kind: Optional[str] = None

    def __post_init__(self):
        images = self.images
        # one image may come bare (a path, bytes, a PIL image); a list of views becomes a tuple
        images = () if images is None else tuple(images) if isinstance(images, (list, tuple)) else (images,)
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "family", self.family or None)
        object.__setattr__(self, "keep_result", bool(self.keep_result))
        if self.kind is not None and self.kind not in REQUEST_KINDS:
            raise ValueError(f"unknown job kind {self.kind!r}: one of {', '.join(REQUEST_KINDS)}")
        if self.settings is not None and not isinstance(self.settings, GenerationSettings):
            raise TypeError("settings must be a GenerationSettings")
        if self.kind is None:
            derived = ("variant" if self.mesh is not None else "text" if self.prompt is not None
                       else "generate" if images else None)
            object.__setattr__(self, "kind", derived)

    @property
    def image(self):
        """The one image of a new look from a photo (None: its look comes from the prompt)."""
        return self.images[0] if self.kind == "variant" and self.images else None

    def replace(self, **changes) -> "JobRequest":
        return dataclasses.replace(self, **changes)

    def checked(self, names: FieldNames = PYTHON_NAMES) -> "JobRequest":
        """This request with its prompt stripped; RequestError (a ValueError) saying what is missing or wrong, in
        the words of `names`."""
        message, field = self._problem(names)
        if message:
            raise RequestError(message, field)
        if self.prompt is None:
            return self
        return self.replace(prompt=check_prompt(self.prompt))

    def _problem(self, names: FieldNames) -> tuple:
        kind, images, prompt, mesh = self.kind, self.images, self.prompt, self.mesh
        if kind == "variant":
            return self._look_problem(names)
        if mesh is not None:
            what = "text" if kind == "text" else "photos"
            return f"{names.mesh or 'a 3-D model'} goes with a new look, not with an asset from {what}", "mesh"
        if prompt is not None and images:
            both = (f"give {names.prompt or 'a prompt'} or {names.images}, not both: one job makes an asset from text "
                    "or from photos (clear the one not wanted)")
            if names.mesh:            # where the same request makes new looks: how to ask for one
                both += f"; a prompt for a 3-D model's new look goes with {names.mesh}"
            return both, None
        if kind is None:
            return self._nothing(names), None
        if kind == "text":
            problem = _prompt_problem(prompt)
            return (problem, "prompt") if problem else (self._family_problem(names), "family")
        if not images:
            return f"no image: give {names.images}", "images"
        return None, None

    def _look_problem(self, names: FieldNames) -> tuple:
        images, prompt, mesh = self.images, self.prompt, self.mesh
        if mesh is None:
            return f"a new look needs {names.mesh or 'a 3-D model'} to give it to", "mesh"
        if isinstance(mesh, tuple) and (len(mesh) != 2 or not isinstance(mesh[1], (bytes, bytearray))):
            return "a new look needs a 3-D model: a file path, or (file name, bytes)", "mesh"
        if prompt is not None and images:
            return (f"a new look takes {names.prompt or 'a prompt'} or an image, not both (clear the one not "
                    "wanted)"), None
        if prompt is None and len(images) != 1:
            several = f" ({len(images)} given)" if images else ""
            return (f"a new look for {names.mesh or 'the 3-D model'} needs {names.prompt or 'a prompt'} or exactly "
                    f"one image{several}"), "images" if images else None
        if prompt is not None:
            return _prompt_problem(prompt), "prompt"
        return None, None

    def _nothing(self, names: FieldNames) -> str:
        if not names.prompt:
            return f"no image: give {names.images}"
        text = f"nothing to make (no image, no prompt): give {names.prompt} for an asset from text"
        if not names.mesh:
            return f"{text}, or {names.images} for one from photos"
        return f"{text}, {names.images} for one from photos, or {names.mesh} with a prompt or one image for a new look"

    def _family_problem(self, names: FieldNames) -> Optional[str]:
        if self.family is None:
            return None
        try:
            family = get_family(self.family)
        except ValueError as err:                     # not a family id: its words say which ones are
            return str(err)
        if family.new_looks_from_prompt:          # the family whose text models make prompts
            return None
        return (f"{family.words} makes assets from an image; a prompt is made by the TRELLIS-text model: leave out "
                f"{names.family}, or give an image")


def job_for(request: JobRequest, folder_for: Callable[[str], Optional[str]], default_family: str,
            refuse_not_installed: bool = False) -> Job:
    """The Job `request` asks for (checked first: RequestError). `folder_for(family id)` says where that family's model
    is installed here (None: not installed); `default_family` is the family of an image job that names none. An image
    job's settings pass its family's rule (FamilyRefusal for what it cannot make); one for a family not installed here
    fails when it starts (the worker says how to install it), or, with `refuse_not_installed`, is refused here with the
    family's own words (FamilyRefusal). A new look's family (None: the first that makes looks) must be installed for a
    look from an image: FamilyRefusal where it was asked for, else ValueError naming the families that are."""
    request = request.checked()
    settings = request.settings or GenerationSettings()
    if request.kind == "text":
        return Job(id=uuid.uuid4().hex, inputs=[], settings=settings, kind="text", prompt=request.prompt,
                   keep_result=request.keep_result)
    if request.kind == "variant":
        family, used, warnings = _look_rule(request, settings, folder_for)
        inputs = [] if request.image is None else [request.image]
        kind = dict(kind="variant", prompt=request.prompt, mesh=request.mesh)
    else:
        family = get_family(request.family or default_family)
        if refuse_not_installed and folder_for(family.name) is None:
            raise FamilyRefusal(family.unavailable())
        used, warnings = family_check(family, settings, len(request.images))
        inputs, kind = list(request.images), {}
    job = Job(id=uuid.uuid4().hex, inputs=inputs, settings=used, keep_result=request.keep_result,
              family=None if family is None else family.name, asked_settings=settings if settings != used else None,
              **kind)
    for warning in warnings:
        job.warn(warning)
    return job


def _look_rule(request: JobRequest, settings: GenerationSettings, folder_for: Callable) -> tuple:
    """(the family that makes a new look from an image, or None for one from a prompt; its settings; warnings)."""
    image, wanted = request.image, request.family
    looks = look_family(wanted, from_prompt=image is None)
    if image is None:                           # a look from a prompt: the text models, no image family
        return None, settings, []
    if folder_for(looks.name) is None:
        if wanted:
            raise FamilyRefusal(f"a {looks.words} new look ({looks.look_words}) needs {looks.words}, which is not "
                                f"installed here: {looks.install_line()}")
        others = "".join(f"; model_family {f.name} makes one with {f.look_words} here" for f in FAMILIES.values()
                         if f.new_looks_from_image and f is not looks and folder_for(f.name))
        raise ValueError(f"a new look from an image needs a {looks.words} image model, which is not installed "
                         f"here (a new look from a prompt works{others})")
    if not wanted:                              # the default look keeps the settings as given, unwarned
        return looks, settings, []
    return (looks, *family_check(looks, settings, 1))


def prompt_label(prompt: str) -> str:
    """What lists and progress lines call a job made from a prompt: its first 40 characters in quotes (… when cut)."""
    return f'"{prompt[:40]}…"' if len(prompt) > 40 else f'"{prompt}"'


def _prompt_problem(prompt) -> Optional[str]:
    try:
        check_prompt(prompt if prompt is not None else "")
    except ValueError as err:
        return str(err)
    return None
