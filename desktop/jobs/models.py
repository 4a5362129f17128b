"""Model loading: the image and text pipelines loaded (and the text model fetched on its first use), for the job
runner and the batch alike.

    model_family(model)                      "trellis" or "trellis2": the family of a folder or hub repo
    family_folder(family, model)             the folder a job of `family` loads: `model` (--model) or the installed one
    family_unavailable(family)               why a family is not installed here and how to install it
    load_image_pipeline(model, device)       a folder or hub repo -> the image pipeline on `device` (ModelLoadError)
    load_text_pipeline(source, device)       the same for a text pipeline
    text_source(text_model, size)            which text pipeline a prompt of `size` uses
    Models                                   the runner's models: its factories (tests pass their own)
    DevicePipelines                          one worker's pipelines, loaded once, only one of them on the GPU; one
                                             image pipeline at a time (a job of the other family switches it)

This is the app's one importer of `installer.weights` (the published text repos, the verified download).
"""
from __future__ import annotations

import contextlib
import gc
import os
import time
from pathlib import Path
from typing import Callable, Optional

from trellis.core.callbacks import Cancelled

from ..options import MODEL_FAMILIES
from .failures import is_disk_full, is_oom, model_load_message
from .job import Job, ModelLoadError

FAMILIES = tuple(MODEL_FAMILIES)               # "trellis" (TRELLIS v1), "trellis2" (TRELLIS.2)


def text_repo(size: str) -> str:
    """The published text pipeline of `size` ("base", "large", "xlarge"): its hub repo."""
    from installer.weights import text_repo as published

    return published(size)


def text_source(text_model: Optional[str], size: str) -> str:
    """The text pipeline a prompt of `size` uses: `text_model` (--text-model) when given, else the published one."""
    return os.fspath(text_model) if text_model else text_repo(size)


def text_model_message(source: str, err: BaseException) -> str:
    """What to do when the text pipeline at `source` could not be loaded."""
    if isinstance(err, ModelLoadError):
        return str(err)
    return (f"could not load the text model {source}: {str(err).rstrip('.')}. Check the internet connection (the "
            f"text model is downloaded on its first use), or pass --text-model FOLDER pointing at a downloaded "
            f"copy (e.g. `hf download {source} --local-dir FOLDER`).")


TRELLIS2_PIPELINE = "Trellis2ImageTo3DPipeline"      # pipeline.json's name of a TRELLIS.2 folder


def model_family(model: str) -> str:
    """"trellis2" for a TRELLIS.2 pipeline (a folder whose pipeline.json names it, or a hub repo named TRELLIS.2),
    else "trellis" (v1; a folder that cannot be read is v1's, whose loader then says what is wrong). No download."""
    import json

    local = os.path.join(os.fspath(model), "pipeline.json")
    if os.path.isfile(local):
        try:
            with open(local, encoding="utf-8") as f:
                name = json.load(f).get("name")
        except (OSError, ValueError, AttributeError):
            return "trellis"
        return "trellis2" if name == TRELLIS2_PIPELINE else "trellis"
    return "trellis2" if "trellis.2" in os.fspath(model).lower() and not os.path.isdir(model) else "trellis"


def family_folder(family: str, model: str) -> Optional[str]:
    """The folder (or hub repo) a job of `family` loads: `model` (--model) where it is of that family, else where the
    app installs that family; None where it is not installed here. Only files are looked at, nothing is loaded."""
    if model_family(model) == family:
        return os.fspath(model)
    if family == "trellis2":
        from trellis.pipelines.trellis2_availability import trellis2_availability

        found = trellis2_availability()
        return found.model_dir if found.available else None
    return installed_v1()


def installed_v1() -> Optional[str]:
    """TRELLIS v1's image pipeline as the app installs it: $TRELLIS_DESKTOP_MODEL (the launcher's), its repo's folder
    in the models folder ($TRELLIS_MODEL_DIR), or the Hugging Face cache's copy (then the repo id: the loader finds
    it there); None where none of them holds one."""
    from trellis.pipelines.background import default_model_dir
    from trellis.pipelines.model_sources import local_repo_folders
    from trellis.pipelines.trellis2_availability import cached

    from ..options import DEFAULT_MODEL, default_model

    root = os.environ.get("TRELLIS_MODEL_DIR") or str(default_model_dir().parent)
    for folder in [default_model()] + local_repo_folders(DEFAULT_MODEL, [root]):
        if os.path.isfile(os.path.join(folder, "pipeline.json")) and model_family(folder) == "trellis":
            return folder
    return DEFAULT_MODEL if cached(DEFAULT_MODEL, "pipeline.json") else None


def family_unavailable(family: str) -> str:
    """Why `family` cannot run here (family_folder found none) and how to install it, in one message."""
    if family == "trellis2":
        from trellis.pipelines.trellis2_availability import trellis2_availability

        return trellis2_availability().message or "TRELLIS.2 is not installed here."
    from ..options import DEFAULT_MODEL

    return (f"TRELLIS v1 is not installed here: start the app with ./run.sh (Windows: run.bat), which downloads it, "
            f"or with --model {DEFAULT_MODEL} (or a folder holding a copy of it).")


def ignored_pipeline_type(job: Job) -> None:
    """A TRELLIS v1 job given a TRELLIS.2 pipeline type other than its preset's (the fast and high presets set one):
    the job says it was ignored. For "custom" settings, as GenerationSettings.for_device reads them: one the user set
    other than the default, or one no preset gives."""
    from ..settings import PRESETS, preset_value
    from ..settings_table import DEFAULT_PIPELINE_TYPE

    settings = job.settings
    if settings.preset in PRESETS:
        expected = {preset_value(settings.preset, "pipeline_type")}
    elif "pipeline_type" in settings.explicit:
        expected = {DEFAULT_PIPELINE_TYPE}
    else:                                     # a preset's value kept when another control moved the page to custom
        expected = {preset_value(p, "pipeline_type") for p in PRESETS}
    if settings.pipeline_type not in expected:
        job.warn(f"pipeline_type {settings.pipeline_type} is a TRELLIS.2 setting: this TRELLIS v1 model has one "
                 "path and ignored it.")


def load_image_pipeline(model: str, device: str, on_model: Optional[Callable] = None):
    """The image pipeline of `model` (a folder or hub repo; either family) on `device`; ModelLoadError with what to
    do. `on_model`: the library's hook, called as each network is loaded."""
    from trellis.pipelines import Trellis2ImageTo3DPipeline, TrellisImageTo3DPipeline

    trellis2 = model_family(model) == "trellis2"
    try:
        cls = Trellis2ImageTo3DPipeline if trellis2 else TrellisImageTo3DPipeline
        pipeline = cls.from_pretrained(model, device=device, on_model=on_model)
    except Exception as err:
        if is_oom(err) or is_disk_full(err):
            raise
        raise ModelLoadError(trellis2_unavailable(model, err) if trellis2 else model_load_message(model, err)) from err
    return pipeline


def trellis2_unavailable(model: str, err: BaseException) -> str:
    """Why TRELLIS.2 at `model` cannot be loaded here and what to do (``trellis2_availability``: no DINOv3 token,
    files missing), or the loader's own message where every file is in place."""
    from trellis.pipelines.trellis2_availability import trellis2_availability

    found = trellis2_availability(model if os.path.isdir(model) else None)
    return found.message or model_load_message(model, err)


def load_text_pipeline(source: str, device: str, fetch: Optional[Callable[[], Path]] = None) -> tuple:
    """(the text pipeline of `source` (a folder or hub repo) on `device`, where it was loaded from); `fetch`, if
    given, first puts the files in a folder and gives it. ModelLoadError with what to do."""
    from trellis.pipelines import TrellisTextTo3DPipeline

    try:
        if fetch is not None:
            source = str(fetch())
        pipeline = TrellisTextTo3DPipeline.from_pretrained(source)
    except Exception as err:
        if is_oom(err) or is_disk_full(err) or isinstance(err, Cancelled):
            raise
        raise ModelLoadError(text_model_message(source, err)) from err
    return pipeline.to(device), source


def fetch_text_model(models_dir: Path, size: str, progress=None, cancelled: Callable[[], bool] = lambda: False):
    """The published text model of `size` in the app's models folder, downloaded there first where missing (each
    file checked against the hub's sha256), its megabytes reported as the "download" stage of `progress`."""
    from installer import weights

    done: dict = {}

    def hook(label, got, total):
        # Cancel stops a long download (the partial file is kept: the next text job resumes it).
        if cancelled():
            raise Cancelled()
        done[label] = (got, total or got)
        if progress is not None:
            mb = sum(g for g, _ in done.values()) // 2 ** 20
            progress("download", mb, max(mb, sum(t for _, t in done.values()) // 2 ** 20, 1), label)
    try:
        return weights.ensure_text_model(models_dir, size, hook=hook)
    except weights.WeightsError as err:
        raise ModelLoadError(str(err)) from None


class Models:
    """The models of one runner: the image model (`model_path`) and the text model of a prompt (`text_model`, or
    None for the published one of the job's size), each loaded by a factory. The image factory is
    `(device) -> pipeline`; the text factory `(device, size, progress) -> pipeline or (pipeline, where it was
    loaded from)`."""

    def __init__(self, model_path: str, text_model: Optional[str] = None, image_factory: Optional[Callable] = None,
                 text_factory: Optional[Callable] = None):
        self.model_path = os.fspath(model_path)
        self.family = model_family(self.model_path)          # "trellis" or "trellis2": which steps a job takes
        self.text_model = os.fspath(text_model) if text_model else None
        self.image_factory = image_factory or self.load_image
        self.text_factory = text_factory or self.load_text

    def text_model_for(self, size: str) -> str:
        return text_source(self.text_model, size)

    def folder_for(self, family: Optional[str]) -> Optional[str]:
        """The folder a job of `family` (None: the model's own) loads, None where that family is not installed."""
        return self.model_path if family in (None, self.family) else family_folder(family, self.model_path)

    def families(self) -> list:
        """The image families a job can run here: the model's own, and the other one where it is installed."""
        return [f for f in FAMILIES if self.folder_for(f) is not None]

    def load_image(self, device: str, on_model: Optional[Callable] = None):
        return load_image_pipeline(self.model_path, device, on_model)

    def load_text(self, device: str, size: str, progress=None):
        """The text pipeline of `size` and where it was loaded from. The app's own install (TRELLIS_MODEL_DIR set by
        the launcher) downloads the published files into its models folder on first use, with the job's progress;
        elsewhere the library finds them (a folder, the Hugging Face cache, or the hub)."""
        models_dir = os.environ.get("TRELLIS_MODEL_DIR")
        job = getattr(progress, "job", None)

        def fetch():
            return fetch_text_model(Path(models_dir), size, progress, lambda: job is not None and job.cancel_requested)
        fetching = not self.text_model and models_dir
        return load_text_pipeline(self.text_model_for(size), device, fetch if fetching else None)


class DevicePipelines:
    """The pipelines of one device: one image pipeline (of one family) and one text pipeline (of one size), each
    loaded on first use. On a GPU only the one in use stays there; the other waits in CPU memory. A job of the other
    image family unloads the image pipeline and loads that family's (two would not fit a small GPU)."""

    def __init__(self, models: Models, device: str):
        self.models, self.device = models, device
        self.image_pipeline, self.image_family = None, None
        self.text_pipeline, self.text_wanted, self.text_loaded_from = None, None, None

    def load_image(self, on_model: Optional[Callable] = None, family: Optional[str] = None) -> None:
        """Load the image pipeline of `family` (None: the model's own) now (the warm-up; a job loads it through
        `image`); `on_model` goes to the library's loader, not to a factory given instead (it takes the device only),
        which loads the model's own family only. ModelLoadError where `family` is not installed."""
        family = family or self.models.family
        if family != self.models.family:
            folder = self.models.folder_for(family)
            if folder is None:
                raise ModelLoadError(family_unavailable(family))
            self.image_pipeline = load_image_pipeline(folder, self.device, on_model)
        else:
            factory = self.models.image_factory
            default = factory == self.models.load_image
            self.image_pipeline = factory(self.device, on_model=on_model) if on_model and default \
                else factory(self.device)
        self.image_family = family

    def image(self, job: Job, progress, family: Optional[str] = None):
        """The image pipeline of `family` (None: the model's own), loaded on first use (its seconds in the job's
        timings), on the device; the other family's is unloaded first, once the wanted one is known to be installed
        (a family that is not fails the job and leaves the loaded one as it is)."""
        family = family or self.models.family
        loaded = self.image_pipeline is not None and self.image_family == family
        if not loaded and family != self.models.family and self.models.folder_for(family) is None:
            raise ModelLoadError(family_unavailable(family))
        switching = self.image_pipeline is not None and not loaded
        if switching:
            self.unload_image()
        if self.image_pipeline is None:
            # Said where the load is not the usual one-off: the user sees why this job waits.
            other = switching or family != self.models.family
            progress("load", 0, 1, f"loading {MODEL_FAMILIES[family]} …" if other else "")
            t = time.perf_counter()
            self.load_image(family=family)
            job.timings["load_model"] = time.perf_counter() - t
        return self.activate(self.image_pipeline)

    def unload_image(self) -> None:
        """Drop the image pipeline and give its memory back (the device's cached blocks included)."""
        self.image_pipeline, self.image_family = None, None
        self.free_memory()

    def text(self, job: Job, size: str, progress) -> tuple:
        """(the text pipeline of `size`, where it was loaded from), loaded on first use; another size replaces it."""
        wanted = self.models.text_model_for(size)
        if self.text_pipeline is None or self.text_wanted != wanted:
            self.text_pipeline = None
            self.free_memory()
            progress("load", 0, 1)
            t = time.perf_counter()
            loaded = self.models.text_factory(self.device, size, progress)
            job.timings["load_model"] = time.perf_counter() - t
            # A factory gives the pipeline, or (pipeline, where it was loaded from).
            self.text_pipeline, source = loaded if isinstance(loaded, tuple) else (loaded, wanted)
            self.text_wanted, self.text_loaded_from = wanted, source
        return self.activate(self.text_pipeline), self.text_loaded_from

    def background_remover(self):
        """The loaded image pipeline's background remover, or None (the library's shared one is used then)."""
        return self.image_pipeline.background_remover if self.image_pipeline is not None else None

    def activate(self, pipeline):
        """`pipeline` on the device; on a GPU the other pipeline moves to CPU memory first."""
        if self.device.startswith("cuda"):
            import torch

            for other in (self.image_pipeline, self.text_pipeline):
                if other is not None and other is not pipeline and getattr(other, "device", None) is not None \
                        and other.device.type != "cpu":
                    other.to("cpu")
            if str(pipeline.device) != str(torch.device(self.device)):
                pipeline.to(self.device)
        return pipeline

    def free_memory(self) -> None:
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            from trellis.core.device import release_device_memory

            if torch.cuda.is_available():
                with contextlib.suppress(Exception):
                    release_device_memory(torch.device(self.device))
