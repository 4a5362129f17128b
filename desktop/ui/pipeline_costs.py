"""What each TRELLIS.2 pipeline type costs on this machine, said beside the page's pipeline type: the time and peak GPU
memory of this machine's last finished job of that type where it has run one (its timings.json: the whole job, and
its sampling alone), else the figures measured on the project's benchmark GPU (MEASURED), named as such: a GPU's
speed does not scale from another's by any one number, so they are not scaled. Which of the measured peaks applies
here is the app's own choice: every network resident where the GPU holds the pipeline's resident budget, else each
network on the GPU only for its stage."""
from __future__ import annotations

from typing import NamedTuple, Optional

from ..settings_table import PIPELINE_TYPES
from .values import choice_labels

GiB = 2 ** 30


class Measured(NamedTuple):
    chain_s: float              # the sampling and decoding, image -> O-Voxel (the export comes on top)
    resident_gib: float         # peak reserved, every network resident (the default preset on a large GPU)
    offloaded_gib: float        # peak reserved, each network on the GPU for its stage (low-VRAM preset, under a cap)


# benchmarks/trellis2_pipeline_gpu.py on one H200 (docs/benchmarks/trellis2.md): full-size random weights, second
# run of the process, fast paths on; `1024` (one pass) not measured there.
MEASURED_ON = "an H200"
MEASURED = {"512": Measured(2.3, 17.7, 3.1), "1024_cascade": Measured(11.0, 20.3, 5.8),
            "1536_cascade": Measured(34.6, 24.4, 7.9)}
# What installing the pipeline-typed family costs before its first job: its download (the TRELLIS.2-4B repo's 14.8 GB
# and the DINOv3 ViT-L encoder's 1.2 GB).
DOWNLOAD_GB = 16
CPU_WORDS = ("On a CPU TRELLIS.2 is very slow: its 1.3-billion-parameter flows over some 20 000 voxels make a "
             "1024_cascade job likely an hour or more (an estimate from its size, not a measurement); it is made for "
             "a CUDA GPU.")


def install_cost(family) -> str:
    """What installing `family` costs and what it needs to run, said before the user installs it: its download and
    GPU memory (MEASURED's peaks and its declared floors); "" for a family without pipeline types (installed with the
    app)."""
    if not family.pipeline_types:
        return ""
    resident = [m.resident_gib for m in MEASURED.values()]
    floors = list(family.vram_floors.values()) or [m.offloaded_gib for m in MEASURED.values()]
    return (f"Installing {family.words} downloads about {DOWNLOAD_GB} GB; it needs an NVIDIA GPU with about "
            f"{min(resident):.0f}-{max(resident):.0f} GB of memory (every network resident), or {min(floors):g}-"
            f"{max(floors):g} GB on the slower low-VRAM path; on a CPU a job takes an hour or more.")


def trellis2_job(job) -> bool:
    """A finished TRELLIS.2 generation with its timings (a job listed from an earlier run names no family: its
    sampling ran TRELLIS.2's texture flow, which v1 has not)."""
    from ..families import FAMILIES, get_family

    pipeline = (job.timings or {}).get("pipeline") or {}
    stages = {s.get("stage") for s in pipeline.get("stages") or [] if isinstance(s, dict)}
    family = get_family(job.family) if getattr(job, "family", None) else \
        next((f for f in FAMILIES.values() if stages & set(f.stage_words)), None)
    return (job.state == "done" and job.finished is not None and job.kind == "generate" and family is not None
            and bool(family.pipeline_types) and "seconds" in pipeline)


def last_jobs(jobs) -> dict:
    """{pipeline type: this machine's last finished TRELLIS.2 job of that type}."""
    found: dict = {}
    for job in jobs:
        kind = getattr(job.settings, "pipeline_type", None)
        if kind in PIPELINE_TYPES and trellis2_job(job) and (kind not in found or job.finished > found[kind].finished):
            found[kind] = job
    return found


def gpu_of(device: str) -> Optional[tuple]:
    """(name, memory GiB) of the CUDA device `device`, or None (a CPU, or no GPU to ask)."""
    if not str(device).startswith("cuda"):
        return None
    try:
        import torch

        props = torch.cuda.get_device_properties(torch.device(device))
    except (RuntimeError, AssertionError, ValueError):
        return None
    return props.name, props.total_memory / GiB


def learned_words(job) -> str:
    timings = job.timings
    whole = timings.get("total", 0.0) - timings.get("ready", 0.0)       # a model load is no cost of the type
    text = f"{whole:.0f} s the whole job ({timings['pipeline'].get('seconds', 0.0):.0f} s sampling)"
    memory = timings.get("memory") or {}
    if memory.get("peak_reserved_bytes") is not None:
        budget = memory.get("vram_budget_gib")
        text += f", peak {memory['peak_reserved_bytes'] / GiB:.1f} GiB"
        text += f" (budget {budget:g} GiB)" if budget else ""
    return text + ": your last job of this type"


def measured_words(kind: str, gpu: Optional[tuple], resident_budget_gib: float) -> str:
    figures = MEASURED.get(kind)
    if figures is None:
        return "not measured yet"
    text = f"about {figures.chain_s:g} s sampling on {MEASURED_ON} (the export comes on top)"
    if gpu is None:
        return text + f", peak {figures.offloaded_gib:g}-{figures.resident_gib:g} GiB of GPU memory"
    _, total = gpu
    if total >= resident_budget_gib:
        return text + f", peak about {figures.resident_gib:g} GiB (every network resident)"
    if total >= figures.offloaded_gib:
        return text + (f", peak about {figures.offloaded_gib:g} GiB (this GPU is below {resident_budget_gib:g} GiB: "
                       "each network on it only for its stage, slower)")
    return text + f", needs about {figures.offloaded_gib:g} GiB of GPU memory: more than this GPU's {total:.0f} GiB"


def costs_text(jobs, device: str, resident_budget_gib: Optional[float] = None) -> str:
    """The page's lines (Markdown): per pipeline type, its time and peak GPU memory here."""
    if resident_budget_gib is None:
        from trellis.pipelines.trellis2_image_to_3d import Trellis2ImageTo3DPipeline

        resident_budget_gib = Trellis2ImageTo3DPipeline.RESIDENT_BUDGETS[0] / GiB
    gpu = gpu_of(device)
    learned = last_jobs(jobs)
    where = f"{gpu[0]}, {gpu[1]:.0f} GiB" if gpu else ("the CPU" if str(device) == "cpu" else str(device))
    lines = [f"**Each pipeline type on this machine** ({where}):"]
    if str(device) == "cpu" and not learned:       # a type run here says its own time instead
        lines.append(CPU_WORDS)
    named = dict((kind, label) for label, kind in choice_labels("pipeline_type"))
    for kind in PIPELINE_TYPES:
        words = learned_words(learned[kind]) if kind in learned else measured_words(kind, gpu, resident_budget_gib)
        lines.append(f"- {named.get(kind, kind)}: {words}")         # in the pipeline type's own words
    return "\n".join(lines)
