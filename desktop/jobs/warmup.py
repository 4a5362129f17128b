"""The background warm-up (JobRunner.start_warmup): a worker loads its pipeline at once and, on a GPU, runs one
tiny generation so that the first job does not wait for CUDA, cuBLAS and the kernels, while the user is still
picking an image. A job, cancel_warmup or shutdown cuts it short at its next step.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Callable

from trellis.core.callbacks import Cancelled
from trellis.core.concurrency import start_thread

from ..families import get_family
from .failures import drop_tracebacks
from .models import DevicePipelines
from .sampling import enter_attention

_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


class GraphsBesideLoad:
    """The structure flow's kept graphs, made beside the load: ``on_model`` goes to the load (the library calls it as
    each network arrives), ``make`` runs in a thread (``start``), ``made`` is what the pipeline then adopts (None where
    nothing was made)."""

    def __init__(self, precision: str, offload: str):
        self.precision, self.offload = precision, offload
        self.models: dict = {}
        self.ready, self.decoder, self.ended = threading.Event(), threading.Event(), threading.Event()
        self.made = None

    def on_model(self, key: str, model) -> None:
        self.models[key] = model
        if {"image_cond_model", "sparse_structure_flow_model"} <= set(self.models):
            self.ready.set()
        if key == "sparse_structure_decoder":
            self.decoder.set()

    def load_ended(self) -> None:
        self.ended.set()

    def make(self, device, stop: Callable[[], bool]) -> str:
        """Wait for the two networks (or the load's end, or `stop`), then capture; then the occupancy decoder's first
        call, where it is loaded before the load ends. What happened, for the log. Only where the policy the job will
        get keeps the structure flow's graphs (resident, not compiled)."""
        import torch

        from trellis.pipelines import structure_graphs
        from trellis.pipelines.memory import MemoryPolicy

        while not self.ready.wait(0.01):
            if stop() or self.ended.is_set():
                return "graphs: not made (the load ended first)"
        policy = MemoryPolicy(self.precision, self.offload).resolve(torch.device(device))
        if not policy.keeps_graphs(device):
            return "graphs: not kept with this policy"
        t = time.perf_counter()
        flow = self.models["sparse_structure_flow_model"]
        shape = structure_graphs.condition_shape(self.models["image_cond_model"])
        with contextlib.ExitStack() as held:
            # kept graphs replay what they captured: exact attention only, never waiting (the load would wait too)
            if enter_attention(held, "exact", wait=False) is None:
                return "graphs: not made (another job samples with 8-bit attention now)"
            self.made = structure_graphs.capture(flow, shape, policy.dtype, cancel=stop)
        done = f"graphs {time.perf_counter() - t:.2f}"
        # then the stage's other first use, the occupancy decoder, where it arrives before the load ends
        # (docs/benchmarks/app.md#launch-to-first-glb: stage 1's first call shorter, its conv3d gone from the top)
        while not self.decoder.wait(0.01):
            if stop() or self.ended.is_set():
                return done
        t = time.perf_counter()
        try:                    # a failure here costs the first job the decoder's first use, never the graphs
            structure_graphs.warm_decoder(self.models["sparse_structure_decoder"], flow.in_channels,
                                          flow.resolution, policy.dtype)
        except Exception as err:                    # noqa: BLE001 (said in the log)
            return f"{done}, decoder failed: {type(err).__name__}: {err}"
        return f"{done}, decoder {time.perf_counter() - t:.2f}"

    def start(self, device: str, stop: Callable[[], bool]) -> threading.Thread:
        """``make`` in a thread that logs what it did and never fails (the first job then captures them itself)."""
        def run():
            try:
                done = self.make(device, stop)
            except BaseException as err:
                self.made, done = None, f"graphs failed: {type(err).__name__}: {err}"
            print(f"device {device}: structure flow's {done} beside the load", file=sys.stderr, flush=True)

        return start_thread(run, "trellis-structure-graphs")


def warm_libraries_beside(device: str, precision: str, stop: Callable[[], bool]) -> threading.Thread | None:
    """Start ``first_use.warm_libraries`` on `device` in a thread, in the dtype `precision` names (for "auto", the one
    auto picks on this card); it logs its seconds and never fails. Its modules are imported here, in the calling
    thread: two threads importing modules with native parts for the first time at once can deadlock. None, with a
    warning, where it cannot start (the first job then does that work)."""
    try:
        import torch

        from trellis.pipelines.first_use import warm_libraries        # with the modules its steps use
        from trellis.pipelines.memory import precision_for

        dev = torch.device(device)
        if precision not in _DTYPES:
            precision = "fp32" if dev.type != "cuda" else precision_for(
                torch.cuda.get_device_capability(dev), torch.cuda.get_device_properties(dev).total_memory / 2 ** 30)
        dtype = getattr(torch, _DTYPES[precision])
    except Exception as err:
        print(f"warning: could not start warming the libraries on {device}: {err}", file=sys.stderr, flush=True)
        return None

    def run():
        t = time.perf_counter()
        steps = warm_libraries(dev, dtype, cancel=stop)
        print(f"device {device}: libraries warmed in {time.perf_counter() - t:.1f} s beside the load "
              f"({', '.join(f'{k} {v}' for k, v in steps.items())})", file=sys.stderr, flush=True)

    return start_thread(run, "trellis-first-use")


def warm_up(pipelines: DevicePipelines, request: tuple, stop: Callable[[], bool],
            job_waiting: Callable[[], bool]) -> dict:
    """Load the image pipeline, then (`request`'s forward; None: on a GPU only) one tiny generation with its
    precision and offload. Stops early when `stop()` or `job_waiting()`; never fails (the first job then loads and
    reports for itself). Returns the seconds of what it did: load_model, warm_run."""
    precision, offload, forward = request
    device = pipelines.device
    forward = device.startswith("cuda") if forward is None else forward
    timings: dict = {}
    step = "loading the model"
    try:
        if pipelines.image_pipeline is None and not stop():
            # On a GPU, beside the load: the first sampling call's libraries and kernels, and the structure flow's
            # kept graphs (docs/benchmarks/app.md#launch-to-first-glb: the first GLB sooner with each).
            primer = warm_libraries_beside(device, precision, stop) if forward else None
            graphs = GraphsBesideLoad(precision, offload) if forward and device.startswith("cuda") else None
            if graphs is not None:
                import trellis.pipelines.structure_graphs  # noqa: F401  (imported here: see warm_libraries_beside)
                maker = graphs.start(device, stop)
            t = time.perf_counter()
            try:
                pipelines.load_image(on_model=graphs.on_model if graphs is not None else None)
                timings["load_model"] = time.perf_counter() - t
                print(f"device {device}: model loaded in {timings['load_model']:.1f} s (background warm-up)",
                      file=sys.stderr, flush=True)
            finally:
                if graphs is not None:
                    graphs.load_ended()
                    maker.join()
                if primer is not None:
                    # Before a job or the warm run samples: its GPU work must not meet their graph captures.
                    primer.join()
            if graphs is not None and graphs.made is not None and pipelines.image_pipeline is not None:
                kept = pipelines.image_pipeline.keep_structure_graphs(graphs.made)
                print(f"device {device}: structure flow's graphs {'kept' if kept else 'dropped (weights moved)'}",
                      file=sys.stderr, flush=True)
        if not stop():
            # Beside what follows (the warm run, or a waiting job's sampling): the export's modules imported, its
            # decimation children started (they import numpy and fast-simplification first) and, on a GPU, its
            # kernels and libraries warmed up; after the load, which all of it would slow down (it shares the
            # interpreter, and forked children its memory). Beside a waiting job too: its export then meets warm
            # kernels, which pays for the sampling it slows (docs/benchmarks/app.md#launch-to-first-glb).
            start_thread(prepare_export, "trellis-export-warm", args=(device if forward else None, stop))
        # The tiny run is TRELLIS v1's (its formats, renders): a family without them declares no warm run.
        runs = get_family(pipelines.image_family or pipelines.models.family).warm_run
        if forward and runs and pipelines.image_pipeline is not None and not stop() and not job_waiting():
            step = "warming the kernels"
            t = time.perf_counter()
            pipeline = pipelines.activate(pipelines.image_pipeline)
            pipeline.set_memory_policy(precision=precision, offload=offload)
            warm_run(pipeline, cancel=lambda: stop() or job_waiting())
            timings["warm_run"] = time.perf_counter() - t
            print(f"device {device}: kernels warmed in {timings['warm_run']:.1f} s (background warm-up)",
                  file=sys.stderr, flush=True)
    except Cancelled:
        pass                                   # a job, cancel_warmup or shutdown came first
    except BaseException as err:               # never fatal: the first job loads and reports for itself
        print(f"warning: background warm-up on {device} stopped while {step}: {err}", file=sys.stderr, flush=True)
        drop_tracebacks(err)
        del err
    finally:
        pipelines.free_memory()
    return timings


def prepare_export(device: str | None = None, stop: Callable[[], bool] = lambda: False) -> None:
    """Import the GLB export's modules and start its decimation children into their pool; then, given a `device`,
    warm the export up there (``warm_export``). Never fails."""
    try:
        from trellis.export import assemble, schedule, warm_processes  # noqa: F401 (imported to be ready)
        warm_processes()
    except Exception as err:             # the export starts them itself then
        print(f"warning: could not prepare the export's processes: {err}", file=sys.stderr, flush=True)
    if device is not None and not stop():
        warm_export(device, stop)


def warm_steps(pipeline) -> int:
    """Sampling steps of the warm run: 1, or with compiled flow blocks 5, so that the run has steps inside the
    guidance interval (a CFG pair: batch 2) and after it (batch 1) and both shapes are compiled before a job
    (5 steps of the usual time grid, rescaled by 3, end at t = 0.2 -> 0.43 < 0.5)."""
    return 5 if pipeline.memory_policy.compile else 1


def warm_export(device: str, stop: Callable[[], bool]) -> None:
    """A 64 px textured GLB, written to memory, of a small sphere and a few thousand Gaussians on it, on `device`:
    the bake's and the renderers' kernels and the export's libraries brought up without the model. Never fails."""
    import io

    import torch
    import trimesh

    from trellis.export import to_glb
    from trellis.representations import Gaussian
    from trellis.representations.mesh import MeshExtractResult

    try:
        dev = torch.device(device)
        sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.35)
        mesh = MeshExtractResult(torch.as_tensor(sphere.vertices, dtype=torch.float32, device=dev),
                                 torch.as_tensor(sphere.faces, dtype=torch.int64, device=dev))
        points = torch.nn.functional.normalize(torch.randn(4096, 3, generator=torch.Generator().manual_seed(0)), dim=1)
        gaussians = Gaussian(aabb=[-0.5, -0.5, -0.5, 1.0, 1.0, 1.0], device=dev)
        gaussians.from_xyz((points * 0.35).to(dev))
        gaussians.from_scaling(torch.full((4096, 3), 0.01, device=dev))
        gaussians.from_rotation(torch.tensor([[1.0, 0.0, 0.0, 0.0]], device=dev).expand(4096, 4).contiguous())
        gaussians.from_opacity(torch.full((4096, 1), 0.9, device=dev))
        gaussians.from_features(torch.zeros(4096, 1, 3, device=dev))
        glb = to_glb(gaussians, mesh, texture_size=64, nviews=2, render_resolution=64, verbose=False, cancel=stop)
        glb.export(io.BytesIO(), file_type="glb")
    except Cancelled:
        pass
    except Exception as err:               # the first job's export brings them up itself
        print(f"warning: could not warm the export up on {device}: {err}", file=sys.stderr, flush=True)


def warm_run(pipeline, cancel=None) -> None:
    """One tiny generation (`warm_steps` steps per stage on a 96 px RGBA disc, both decoders, a one-frame 64 px
    render of each) that brings up what a first job would otherwise wait for: the CUDA context and cuBLAS,
    attention and sparse conv kernels, the renderers' kernels (and, with `--compile`, the compiled flow blocks).
    Results are thrown away; an empty structure just ends it. The export's own: warm_export."""
    import numpy as np
    from PIL import Image

    from trellis.pipelines import EmptyStructureError
    from trellis.utils import render_utils

    yy, xx = np.mgrid[0:96, 0:96]
    disc = (np.hypot(xx - 47.5, yy - 47.5) < 30).astype(np.uint8) * 255
    image = Image.fromarray(np.dstack([np.full((96, 96, 3), 160, np.uint8), disc]), "RGBA")
    steps = warm_steps(pipeline)
    try:
        # exact attention, the jobs' default: waits while another worker's job samples with 8-bit attention
        with contextlib.ExitStack() as held:
            enter_attention(held, "exact", cancel)
            out = pipeline.run(image, seed=0, formats=["gaussian", "mesh"],
                               sparse_structure_sampler_params={"steps": steps}, slat_sampler_params={"steps": steps},
                               cancel=cancel)
    except EmptyStructureError:
        return
    for kind in ("gaussian", "mesh"):
        if cancel is not None and cancel():
            raise Cancelled()
        render_utils.render_video(out[kind][0], resolution=64, num_frames=1, cancel=cancel, verbose=False)
