"""TRELLIS v1 (microsoft/TRELLIS-image-large): Gaussians, a radiance field and a mesh from one image or several views
of one object; the Gaussians make the PLY and the preview, the mesh the other files, textured from renders of the
Gaussians. The app installs it by default (./run.sh, run.bat)."""
from __future__ import annotations

import os
from typing import Optional

from . import Family

REPO = "microsoft/TRELLIS-image-large"          # the app's default model (options.DEFAULT_MODEL)
MODEL_ENV = "TRELLIS_DESKTOP_MODEL"             # the launcher's v1 folder: the default of --model when set


def installed() -> Optional[str]:
    """TRELLIS v1's image pipeline as the app installs it: $TRELLIS_DESKTOP_MODEL (the launcher's), its repo's folder
    in the models folder ($TRELLIS_MODEL_DIR), or the Hugging Face cache's copy (then the repo id: the loader finds
    it there); None where none of them holds one."""
    from trellis.pipelines.background import default_model_dir
    from trellis.pipelines.model_sources import local_repo_folders
    from .trellis2_availability import cached

    from . import family_of_model

    root = os.environ.get("TRELLIS_MODEL_DIR") or str(default_model_dir().parent)
    for folder in [os.environ.get(MODEL_ENV, REPO)] + local_repo_folders(REPO, [root]):
        if os.path.isfile(os.path.join(folder, "pipeline.json")) and family_of_model(folder) is FAMILY:
            return folder
    return REPO if cached(REPO, "pipeline.json") else None


def install_line() -> str:
    return (f"start the app with ./run.sh (Windows: run.bat), which downloads it, or with --model {REPO} (or a "
            "folder holding a copy of it)")


def unavailable() -> str:
    return f"TRELLIS v1 is not installed here: {install_line()}."


FAMILY = Family(
    name="trellis",
    words="TRELLIS v1",
    about="Gaussians and a textured mesh from one image or several views of one object",
    pipeline_class="TrellisImageTo3DPipeline",
    repos=(REPO, "JeffreyXiang/TRELLIS-image-large", "jetx/TRELLIS-image-large"),
    repo_marker="trellis-image",
    peer_names=("trellis-image-large", "trellis-v1", "trellis-image", "trellis-1"),
    pipeline_types=(),                      # one path (TrellisImageTo3DPipeline.PIPELINE_TYPES)
    default_pipeline_type=None,
    vram_floors={},
    progress_stages=("preprocess", "condition", "sparse_structure", "slat", "decode"),
    stage_words={},                         # the app's common words (jobs.job.STAGE_LABELS) are v1's
    ignores={"pipeline_type": "TRELLIS v1 has one path (pipeline types are TRELLIS.2's)"},
    file_words={"ply": "PLY (Gaussian splats)", "mp4": "MP4 preview (a turntable of the Gaussians)",
                "result": "the Gaussians and the mesh, for exports after a restart"},
    texture_size=1024,                      # = settings_table's texture_size default (a test keeps them equal)
    max_images=None,
    result_key="gaussian",
    steps_module="desktop.jobs.steps",
    new_looks_from_image=True,
    warm_run=True,
    new_looks_from_prompt=True,             # the TRELLIS-text models share v1's stage 2 and decoders
    look_words="colour",
    find_installed=installed,
    unavailable_text=unavailable,
    install_text=install_line,
)
