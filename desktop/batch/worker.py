"""One batch worker: a device, the pipelines loaded on it once, and items made two at a time.

`ItemWorker.process(task)` makes one item: its folder in OUT/.batch-work, then moved onto OUT/<name>
(manifest.commit), or, for a worker that cannot see the outputs folder (a Ray node without the shared
disk), its files returned as bytes. It is thread-safe and meant to be called from two threads at once
(two local threads, or a Ray actor with max_concurrency=2): sampling (the GPU) is one stage under one
lock, the export (preview, clean-up, UV unwrap, texture bake, GLB: mostly CPU, partly in child
processes) the other under another, so that one item is exported while the next one samples.

A task is a plain dict (it crosses process boundaries):
    name, kind ("image" | "prompt"), source (image path or prompt), data (the image's bytes, or None:
    read the path), settings (GenerationSettings.to_dict(), the seed fixed), key (manifest.source_key),
    model, text_model (None: by the settings' text_model_size), out (the outputs folder), return_files (True: return the files, write nothing in out)

and the answer is a dict: state "done" | "failed", name, plus `duplicate` (another attempt had landed
first), files (return_files), kind and error (failed), retry (whether another attempt may succeed),
seconds {"sample", "export"}, device, pid, host.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid

from ..settings import GenerationSettings
from . import manifest
from .files import special_file_problem

# Failures that another attempt cannot fix (the same input fails the same way).
FINAL_KINDS = ("input", "empty", "model", "background_removal", "cancelled")


def text_model(task: dict) -> str:
    """The text pipeline of a prompt item: --text-model, else the published one of its text_model_size."""
    from ..jobs.models import text_source

    return text_source(task.get("text_model"), task["settings"].get("text_model_size", "xlarge"))


def _never() -> bool:
    return False


def item_memory(device: str, settings: GenerationSettings) -> dict:
    """timings.json's "memory" of a batch item: its VRAM budget and the device's peak since the worker's first item
    (items overlap: one's export runs beside the next one's sampling)."""
    import torch

    from trellis.core.device import memory_budget, peak_memory

    dev = torch.device(device)
    peaks = peak_memory(dev) or {"peak_allocated": None, "peak_reserved": None}
    return {"vram_budget_gib": settings.vram_budget, "held_to_bytes": memory_budget(dev),
            "peak_allocated_bytes": peaks["peak_allocated"], "peak_reserved_bytes": peaks["peak_reserved"],
            "peak_since": "worker"}


class ItemWorker:
    def __init__(self, device: str, threads: int | None = None):
        self.device = device
        self.pid, self.host = os.getpid(), socket.gethostname()
        self._sample_lock = threading.Lock()
        self._export_lock = threading.Lock()
        self._pipelines = {}          # (kind, model) -> pipeline
        self._policy = {}             # id(pipeline) -> (precision, offload, vram budget) last set
        self._budget = None           # (the VRAM budget held to,) once an item set it
        if threads:
            import torch

            torch.set_num_threads(max(1, int(threads)))
        if device.startswith("cuda"):
            import torch

            if torch.cuda.is_available():
                torch.cuda.set_device(torch.device(device))

    # ------------------------------------------------------------------ one item
    def process(self, task: dict, data: bytes | None = None) -> dict:
        from ..jobs.failures import classify_failure, drop_tracebacks
        from ..jobs.job import Job
        from ..jobs.steps import for_device

        if data is not None:
            task = {**task, "data": data}
        answer = {"name": task["name"], "device": self.device, "pid": self.pid, "host": self.host,
                  "seconds": {}}
        to_return = bool(task.get("return_files"))
        work = None
        if not to_return and os.path.lexists(os.path.join(task["out"], task["name"])):
            # Landed already (this is a retry of an attempt whose worker was presumed dead): nothing to do.
            return {**answer, "state": "done", "duplicate": True}
        try:
            if to_return:
                work = tempfile.mkdtemp(prefix=f"trellis-batch-{task['name']}.")
            else:
                work = manifest.new_work_folder(task["out"], task["name"])
                manifest.write_owner(work, self.device)
            # The values the user set travel beside the settings: for_device never lowers those.
            submitted = dataclasses.replace(GenerationSettings.from_dict(task["settings"]),
                                            explicit=frozenset(task.get("explicit") or ()))
            job = Job(id=uuid.uuid4().hex, inputs=[task.get("data") or task["source"]] if task["kind"] == "image"
                      else [], settings=submitted)
            settings = for_device(job, submitted, self.device)
            job.used_settings = settings
            job.out_dir = str(work)
            with self._sample_lock:
                t = time.perf_counter()
                gaussian, mesh = self._sample(task, job, settings, work)
                answer["seconds"]["sample"] = time.perf_counter() - t
            with self._export_lock:
                t = time.perf_counter()
                self._export(job, settings, work, gaussian, mesh)
                del gaussian, mesh
                answer["seconds"]["export"] = time.perf_counter() - t
            if to_return:
                answer["files"] = manifest.read_files(work)
            else:
                answer["duplicate"] = not manifest.commit(work, os.path.join(task["out"], task["name"]))
            answer["state"], answer["warnings"] = "done", list(job.warnings)
        except BaseException as err:          # an item's failure is the item's, never the worker's
            if isinstance(err, (KeyboardInterrupt, SystemExit)):
                raise
            kind, message = classify_failure(err, task.get("out"), self.device,
                                             vram_budget=task["settings"].get("vram_budget"))
            answer.update(state="failed", kind=kind, error=message, retry=kind not in FINAL_KINDS)
            drop_tracebacks(err)
            del err
            self._free_memory()
        finally:
            if work is not None and os.path.isdir(work):
                shutil.rmtree(work, ignore_errors=True)
        return answer

    def _sample(self, task: dict, job, settings: GenerationSettings, work):
        """Input -> the decoded Gaussians and mesh (the app's sampling: jobs.sampling); the input, settings.json and
        preprocessed image written."""
        from ..jobs.folder import JobFolder
        from ..jobs.inputs import prepare_image
        from ..jobs.sampling import sample
        from ..jobs.steps import settings_record

        folder = JobFolder(work)
        kind = "image" if task["kind"] == "image" else "prompt"
        if kind == "image":
            # The input first: a bad image fails in a second, before any model is loaded.
            loaded = self._pipelines.get(("image", task["model"]))
            problem = special_file_problem(job.inputs[0]) if isinstance(job.inputs[0], str) else None
            if problem:                       # a pipe or device would block this lock, and every item behind it
                from ..jobs.job import InputError

                raise InputError(problem)
            t = time.perf_counter()
            source = prepare_image(job.inputs[0], settings.preprocess, getattr(loaded, "background_remover", None))
            job.timings["preprocess"] = time.perf_counter() - t
        else:
            source = task["source"]
        pipeline = self.pipeline(task, kind)
        self._set_policy(pipeline, settings)
        record = settings_record(job, settings, task["model"] if kind == "image" else text_model(task), self.device)
        record[manifest.ITEM_KEY] = {"name": task["name"], "key": task["key"], "kind": kind}
        record["seed_was_random"] = bool(task.get("seed_was_random"))
        if kind == "image":
            record["inputs"] = [task["source"]]
            folder.copy_inputs(job)
            job.files.update(folder.write_preprocessed([source]))
        else:
            record["kind"], record["prompt"] = "text", source
        job.files.update(folder.write_settings(record))
        prepared = {"preprocess_image": False} if kind == "image" else {}
        return sample(job, pipeline, lambda **a: pipeline.run(source, **prepared, **a), settings)

    def _export(self, job, settings: GenerationSettings, work, gaussian, mesh) -> None:
        from ..jobs.folder import JobFolder
        from ..jobs.steps import overlaps_files, quiet, write_outputs

        folder = JobFolder(work)
        # quiet: the batch shows items, not stages.
        write_outputs(job, folder, settings, gaussian, mesh, quiet, _never, keep=True,
                      overlap=overlaps_files(self.device))
        job.timings["total"] = time.time() - job.created
        job.timings["memory"] = item_memory(self.device, settings)
        job.files.update(folder.write_timings(job.timings))

    # ------------------------------------------------------------------ pipelines, once each
    def pipeline(self, task: dict, kind: str):
        model = task["model"] if kind == "image" else text_model(task)
        key = (kind, model)
        if key not in self._pipelines:
            from ..jobs.models import load_image_pipeline, load_text_pipeline

            # One text model at a time next to the image model: a list asking for several sizes would
            # otherwise keep them all in GPU memory.
            for old in [k for k in self._pipelines if k[0] == kind]:
                del self._pipelines[old]
            self._pipelines[key] = (load_image_pipeline(model, self.device) if kind == "image"
                                    else load_text_pipeline(model, self.device)[0])
        return self._pipelines[key]

    def _set_policy(self, pipeline, settings: GenerationSettings) -> None:
        """The item's VRAM budget on the device (the worker's two items share it: the last set holds) and the
        pipeline's precision / offload, each set again only when it changed (both give cached blocks back)."""
        from ..jobs.budget import hold_to_budget, set_job_policy
        from trellis.core.device import start_peak_window

        if self._budget != (settings.vram_budget,):
            hold_to_budget(self.device, settings)
            if self._budget is None:
                start_peak_window(self.device)
            self._budget = (settings.vram_budget,)
        wanted = (settings.precision, settings.offload, settings.vram_budget)
        if self._policy.get(id(pipeline)) != wanted:
            set_job_policy(pipeline, settings)
            self._policy[id(pipeline)] = wanted

    def _free_memory(self) -> None:
        import gc

        # Under the sampling lock: emptying the cache synchronises the device, which would break a CUDA graph
        # that the other item's sampling may be capturing right now.
        with self._sample_lock:
            gc.collect()
            if self.device.startswith("cuda"):
                import torch

                with contextlib.suppress(Exception):
                    torch.cuda.empty_cache()
