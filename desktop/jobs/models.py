"""Model loading: the image and text pipelines loaded (and the text model fetched on its first use), for the job
runner and the batch alike.

    (the families themselves, how a model folder is recognised and where each is installed: desktop/families)
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

from ..families import FAMILIES, family_folder, family_of_model, get_family
from .failures import is_disk_full, is_oom, model_load_message
from .job import Job, ModelLoadError


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


def load_image_pipeline(model: str, device: str, on_model: Optional[Callable] = None):
    """The image pipeline of `model` (a folder or hub repo; either family) on `device`; ModelLoadError with what to
    do. `on_model`: the library's hook, called as each network is loaded."""
    import trellis.pipelines

    family = family_of_model(model)
    try:
        pipeline = getattr(trellis.pipelines, family.pipeline_class).from_pretrained(model, device=device,
                                                                                    on_model=on_model)
    except Exception as err:
        if is_oom(err) or is_disk_full(err):
            raise
        # why the family's files cannot run here (TRELLIS.2: no DINOv3 token, files missing), else the loader's own
        problem = family.load_problem(model)
        raise ModelLoadError(problem or model_load_message(model, err)) from err
    return pipeline


def load_look_pipeline(family, folder: str, device: str):
    """The pipeline of `family`'s new looks (its `look_pipeline_class`) from `folder` on `device`; ModelLoadError with
    what to do."""
    import trellis.pipelines

    family = get_family(family)
    try:
        return getattr(trellis.pipelines, family.look_pipeline_class).from_pretrained(folder, device=device)
    except Exception as err:
        if is_oom(err) or is_disk_full(err):
            raise
        raise ModelLoadError(family.load_problem(folder) or model_load_message(folder, err)) from err


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
        self.family = family_of_model(self.model_path).name   # its family's id: which steps a job of none takes
        self.text_model = os.fspath(text_model) if text_model else None
        self.image_factory = image_factory or self.load_image
        self.text_factory = text_factory or self.load_text

    def text_model_for(self, size: str) -> str:
        return text_source(self.text_model, size)

    def folder_for(self, family: Optional[str]) -> Optional[str]:
        """The folder a job of `family` (None: the model's own) loads, None where that family is not installed."""
        if family is None or get_family(family).name == self.family:
            return self.model_path
        return family_folder(family, self.model_path)

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
        # a family's new-look pipeline (TRELLIS.2's texturing): it shares most networks with the image pipeline,
        # so only one of the two is held at a time
        self.look_pipeline, self.look_folder = None, None

    def load_image(self, on_model: Optional[Callable] = None, family: Optional[str] = None) -> None:
        """Load the image pipeline of `family` (None: the model's own) now (the warm-up; a job loads it through
        `image`); `on_model` goes to the library's loader, not to a factory given instead (it takes the device only),
        which loads the model's own family only. ModelLoadError where `family` is not installed."""
        family = family or self.models.family
        if family != self.models.family:
            folder = self.models.folder_for(family)
            if folder is None:
                raise ModelLoadError(get_family(family).unavailable())
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
            raise ModelLoadError(get_family(family).unavailable())
        switching = self.image_pipeline is not None and not loaded
        self.unload_look()
        if switching:
            self.unload_image()
        if self.image_pipeline is None:
            # Said where the load is not the usual one-off: the user sees why this job waits.
            other = switching or family != self.models.family
            progress("load", 0, 1, f"loading {get_family(family).words} …" if other else "")
            t = time.perf_counter()
            self.load_image(family=family)
            job.timings["load_model"] = time.perf_counter() - t
        return self.activate(self.image_pipeline)

    def look(self, job: Job, progress, family: str) -> tuple:
        """(`family`'s new-look pipeline, its folder), loaded on first use (its seconds in the job's timings) from
        where that family is installed; the image pipeline is unloaded first (the same large networks)."""
        folder = self.models.folder_for(family)
        if folder is None:
            raise ModelLoadError(get_family(family).unavailable())
        if self.look_pipeline is None or self.look_folder != folder:
            self.unload_look()
            if self.image_pipeline is not None:
                self.unload_image()
            progress("load", 0, 1, f"loading {get_family(family).words} ({get_family(family).look_words}) …")
            t = time.perf_counter()
            self.look_pipeline, self.look_folder = load_look_pipeline(family, folder, self.device), folder
            job.timings["load_model"] = time.perf_counter() - t
        return self.activate(self.look_pipeline), folder

    def unload_look(self) -> None:
        """Drop the new-look pipeline, if one is held, and give its memory back."""
        if self.look_pipeline is not None:
            self.look_pipeline, self.look_folder = None, None
            self.free_memory()

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

            for other in (self.image_pipeline, self.text_pipeline, self.look_pipeline):
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
