"""TRELLIS.2 (microsoft/TRELLIS.2-4B): a sharp mesh with PBR materials (base colour, metal, roughness, opacity) from
one image, sampled as an O-Voxel at one of four pipeline types. Its PLY is that mesh with vertex colours and its
preview a lit turntable of the material (it makes no Gaussians). It needs Meta's gated DINOv3 image encoder, so the
app installs it only when asked (--trellis2, after the licence is accepted): nothing is fetched behind the user's
back."""
from __future__ import annotations

from typing import Optional

from . import Family

REPO = "microsoft/TRELLIS.2-4B"                 # = desktop.families.trellis2_availability.TRELLIS2_REPO
INSTALL_COMMAND = "./run.sh --trellis2 (Windows: run.bat --trellis2)"
# Trellis2ImageTo3DPipeline.PIPELINE_TYPES (a test keeps them equal; importing the library here would import torch).
PIPELINE_TYPES = ("512", "1024", "1024_cascade", "1536_cascade")
DEFAULT_PIPELINE_TYPE = "1024_cascade"
# The least VRAM budget (GiB) a job of each pipeline type completes under on the low-VRAM path (families.check raises
# a preset's budget to it): the caps its measured
# peaks fit (docs/benchmarks/trellis2.md: 512 3.05 GiB and 1024_cascade 4.80 GiB under 6, 1536_cascade 7.40 GiB
# under 8; 1024's one pass, its largest flow 5.0 GiB at 32 768 tokens, under 6 as its cascade). The pipeline class's
# VRAM_FLOORS (a test keeps them equal).
VRAM_FLOORS = {"512": 6.0, "1024": 6.0, "1024_cascade": 6.0, "1536_cascade": 8.0}
# 2048² keeps a 1024³ surface's colour within 1 dB of its voxels, 1024² a 512³ one's (docs/benchmarks/export.md)
TEXTURE_SIZES = {"512": 1024, "1024": 2048, "1024_cascade": 2048, "1536_cascade": 2048}
# What a first job plans from before this machine has timed a stage (desktop/jobs/first_estimate.py): the measured
# figures of docs/benchmarks/trellis2.md (a test reads them there), seconds on one NVIDIA H200, full-size random
# weights, Triton, every network resident, the second job of its process.
FIRST_TIMES_DEVICE = ("one NVIDIA H200 (docs/benchmarks/trellis2.md: the chain per pipeline type, the app's whole "
                      "1024_cascade job)")
CHAIN_S = {"512": 2.30, "1024_cascade": 11.01, "1536_cascade": 34.62}      # "The chain, per pipeline type"
# the doc's split of 1024_cascade's chain into its parts
CASCADE_PARTS_S = {"condition": 0.19, "structure flow": 0.60, "structure decode": 0.01, "shape flow 512": 0.89,
                   "upsample": 0.10, "shape flow 1024": 5.38, "texture flow": 3.02, "shape decoder": 0.40,
                   "texture decoder": 0.40, "mesh": 0.02}
# "The app's whole job", Triton, Balanced, a realistic surface: whole job, sampling, files (wall: the MP4 is made
# beside the bake) and each file's own seconds
WHOLE_JOB_S = {"whole job": 12.79, "sampling": 11.01, "files": 1.73, "bake": 0.71, "mp4": 1.01, "glb": 0.28}
PREVIEW_FRAMES = 120                            # that job's lit turntable


def first_times() -> dict:
    """{pipeline type: {stage: (seconds per step, steps)}} on FIRST_TIMES_DEVICE, at 12 steps a flow. Derived where
    the doc has no figure: preprocess is the whole job less its sampling and files; 512 and 1536_cascade split their
    chain as 1024_cascade's parts do; 1024 (no chain in the doc) is 1024_cascade less its 512 pass and upsample; every
    type's files are the 1024_cascade job's (the only whole job measured); the MP4's encode is inside its figure."""
    p = CASCADE_PARTS_S
    cascade = {"condition": p["condition"], "sparse_structure": p["structure flow"] + p["structure decode"],
               "shape_slat": p["shape flow 512"] + p["upsample"] + p["shape flow 1024"],
               "tex_slat": p["texture flow"], "decode": p["shape decoder"] + p["texture decoder"] + p["mesh"]}
    one_pass = {**cascade, "shape_slat": p["shape flow 1024"]}
    w = WHOLE_JOB_S
    files = {"preprocess": (w["whole job"] - w["sampling"] - w["files"], 1), "bake": (w["bake"], 1),
             "glb": (w["glb"], 1), "video": (w["mp4"] / PREVIEW_FRAMES, PREVIEW_FRAMES), "encode": (0.0, 1)}
    steps = {"sparse_structure": 12, "shape_slat": 12, "tex_slat": 12}
    table = {}
    for kind in PIPELINE_TYPES:
        scale = CHAIN_S[kind] / CHAIN_S["1024_cascade"] if kind in CHAIN_S else 1.0
        passes = {"shape_slat": 2} if kind.endswith("_cascade") else {}
        seconds = {stage: s * scale for stage, s in (one_pass if kind == "1024" else cascade).items()}
        table[kind] = {**files, **{stage: (s / (steps.get(stage, 1) * passes.get(stage, 1)),
                                           steps.get(stage, 1) * passes.get(stage, 1)) for stage, s in seconds.items()}}
    return table


BAKE = "TRELLIS.2 bakes its PBR textures from its voxels' colours, metal and roughness, not from rendered views"
GUIDANCE = "TRELLIS.2 uses its pipeline's own guidance"


def availability(model: Optional[str] = None):
    """trellis2_availability (of `model`, else of the app's models folder): whether it could run, and why not."""
    from .trellis2_availability import trellis2_availability

    return trellis2_availability(model)


def installed() -> Optional[str]:
    found = availability()
    return found.model_dir if found.available else None


def unavailable() -> str:
    return availability().message or "TRELLIS.2 is not installed here."


def load_problem(model: str) -> Optional[str]:
    """Why TRELLIS.2 at `model` cannot load here (no DINOv3 token, files missing), None where every file is there."""
    import os

    return availability(model if os.path.isdir(model) else None).message or None


def owns_result_file(path) -> bool:
    """A kept O-Voxel result (trellis.export.is_ovoxel_result: only the zip's directory is read)."""
    from trellis.export import is_ovoxel_result

    return is_ovoxel_result(path)


def install_line(found=None) -> str:
    """One line: how to install TRELLIS.2 (for an unavailable `found`, Trellis2Availability; None: this computer's):
    the gated DINOv3 licence step (unless its files are here already) and the installer command."""
    from .trellis2_availability import DINOV3_PAGE

    found = found if found is not None else availability()
    if found.reason == "missing_weights" and found.conditioner_dir is not None:
        return (f"TRELLIS.2 is not installed completely here: run {INSTALL_COMMAND} to finish its download "
                "(it resumes).")
    why = {"dinov3_not_accepted": " (Hugging Face has not granted your account DINOv3 yet)",
           "no_token": " (it needs a Hugging Face token)"}.get(found.reason, "")
    return (f"TRELLIS.2 is not installed here{why}: accept Meta's DINOv3 licence at {DINOV3_PAGE} with your Hugging "
            f"Face account, then run {INSTALL_COMMAND} with your token.")


FAMILY = Family(
    name="trellis2",
    words="TRELLIS.2",
    about="a sharp mesh with PBR materials (colour, metal, roughness) from one image",
    pipeline_class="Trellis2ImageTo3DPipeline",
    repos=(REPO,),
    repo_marker="trellis.2",
    peer_names=("trellis2-4b", "trellis.2-4b", "trellis.2", "trellis-2", "trellis2-image"),
    pipeline_types=PIPELINE_TYPES,
    default_pipeline_type=DEFAULT_PIPELINE_TYPE,
    vram_floors=VRAM_FLOORS,
    progress_stages=("preprocess", "condition", "sparse_structure", "shape_slat", "tex_slat", "decode"),
    stage_words={"shape_slat": "Sampling the shape", "tex_slat": "Sampling the texture",
                 "ovoxel": "Turning the model into voxels", "shape_encode": "Encoding the model's shape"},
    ignores={"ss_cfg": GUIDANCE, "slat_cfg": GUIDANCE, "bake_mode": BAKE, "bake_views": BAKE, "bake_resolution": BAKE,
             "fill_holes": "TRELLIS.2's export always closes small holes",
             "multi_image_mode": "TRELLIS.2 takes one image"},
    file_words={"ply": "PLY (mesh with vertex colours)", "mp4": "MP4 preview (a lit turntable of its PBR material)",
                "result": "the O-Voxel, for exports after a restart"},
    texture_size=1024,                      # = settings_table's texture_size default (a test keeps them equal)
    texture_sizes=TEXTURE_SIZES,            # its jobs' own, by pipeline type, where the settings do not say
    first_times=first_times(),
    first_times_device=FIRST_TIMES_DEVICE,
    max_images=1,
    result_key="ovoxel",
    steps_module="desktop.jobs.trellis2_steps",
    new_looks_from_image=True,
    warm_run=False,
    look_words="PBR materials",
    look_pipeline_class="Trellis2TexturingPipeline",
    look_steps_module="desktop.jobs.trellis2_looks",
    # the texturing pipeline's stages (its own "voxelize" and "encode" renamed: those words mean others in the app)
    look_stages=("voxelize", "preprocess", "condition", "ovoxel", "shape_encode", "tex_slat", "decode"),
    find_installed=installed,
    unavailable_text=unavailable,
    install_text=install_line,
    load_problem=load_problem,
    owns_result_file=owns_result_file,
)
