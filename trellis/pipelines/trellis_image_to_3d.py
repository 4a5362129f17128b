"""Image -> 3-D asset: the TRELLIS two-stage pipeline (spec §11, §12).

    pipeline = TrellisImageTo3DPipeline.from_pretrained("microsoft/TRELLIS-image-large")  # or a folder
    pipeline.cuda()
    outputs = pipeline.run(image, seed=1)     # {'gaussian': [...], 'mesh': [...], 'radiance_field': [...]}
    variant = pipeline.run_variant("chair.glb", image)    # the chair's shape, the photo's look

Data path, top to bottom: preprocess -> DINOv2 cond -> stage-1 flow (dense 16^3 latent) -> occupancy
decoder -> voxel coords -> stage-2 flow (sparse latent) -> de-normalise -> decoders. Everything after the
condition (and the memory policy) is shared with the text pipeline in `base.py`.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Optional

import torch

from .base import (DEFAULT_FORMATS, EmptyStructureError, TrellisPipeline, load_pipeline_parts,
                   read_pipeline_config, weights_device)
from .memory import StageTracker
from ..core.callbacks import CancelCheck, StageProgress

__all__ = ["TrellisImageTo3DPipeline", "EmptyStructureError", "DEFAULT_FORMATS", "DINOV2_URL",
           "load_image_cond_model"]

# DINOv2 ViT-L/14 + 4 registers (spec §9): the official torch.hub weights.
DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_reg4_pretrain.pth"


def load_image_cond_model(root: str, name: str, device=None):
    """The image conditioner named in pipeline.json.

    A local `<root>/<name>.json` + `.safetensors` pair (our own format; the tiny test pipeline) wins.
    Otherwise `dinov2_vitl14_reg` comes from the official torch.hub weights file, looked up in
    $TRELLIS_DINOV2_WEIGHTS, then in torch's hub cache, then downloaded there. On the CPU, or built and filled
    on `device`.
    """
    from ..models.image_conditioner import load_image_conditioner, load_official_dinov2

    prefix = os.path.join(root, name)
    if os.path.exists(prefix + ".json") and os.path.exists(prefix + ".safetensors"):
        return load_image_conditioner(prefix, device=device)
    if name != "dinov2_vitl14_reg":
        raise ValueError(f"unknown image_cond_model {name!r}: expected 'dinov2_vitl14_reg' or a checkpoint "
                         f"stem with .json/.safetensors under {root}")
    path = os.environ.get("TRELLIS_DINOV2_WEIGHTS") or os.path.join(
        torch.hub.get_dir(), "checkpoints", os.path.basename(DINOV2_URL))
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            torch.hub.download_url_to_file(DINOV2_URL, path, progress=True)
        except Exception as err:  # offline, proxy, ...
            raise RuntimeError(f"The DINOv2 weights are missing and could not be downloaded ({err}). Download "
                               f"{DINOV2_URL} and save it as {path}, or set TRELLIS_DINOV2_WEIGHTS to its "
                               f"path.") from None
    return load_official_dinov2(path, device=device)


class TrellisImageTo3DPipeline(TrellisPipeline):
    COND_MODEL = "image_cond_model"
    EMPTY_STRUCTURE_HINT = "an image with a clearer, larger object"
    # The pipeline's contract for its callers: one path (no pipeline types), no declared memory floor, and the
    # progress stages of `run` in order.
    PIPELINE_TYPES: tuple = ()
    VRAM_FLOORS: dict = {}
    PROGRESS_STAGES = ("preprocess", "condition", "sparse_structure", "slat", "decode")

    def __init__(self, models: dict, sparse_structure_sampler, slat_sampler, slat_normalization: dict,
                 image_cond_model, sparse_structure_sampler_params: dict | None = None,
                 slat_sampler_params: dict | None = None, device=None):
        self.image_cond_model = image_cond_model
        self._remover = None
        super().__init__(models, sparse_structure_sampler, slat_sampler, slat_normalization,
                         sparse_structure_sampler_params, slat_sampler_params, device=device)

    @classmethod
    def from_pretrained(cls, path: str, search_dirs=(), device=None,
                        on_model: Optional[Callable[[str, torch.nn.Module], None]] = None
                        ) -> "TrellisImageTo3DPipeline":
        """A pipeline folder or hub repo id, on the CPU or on `device` (its weights read straight onto a GPU it stays
        resident on: base.weights_device). `search_dirs`: folders holding other repos that pipeline.json names by
        `<owner>/<repo>/<path>` (besides the folder's parent and $TRELLIS_MODEL_DIR). `on_model(key, model)` is
        called as each network is loaded: the conditioner ("image_cond_model") first, then the structure flow, then
        the others (work on the first ones can start beside the load: ``structure_graphs``)."""
        args = read_pipeline_config(path, "TrellisImageTo3DPipeline")["args"]
        into = weights_device(device)
        cond_model = load_image_cond_model(path, args["image_cond_model"], device=into)
        if on_model is not None:
            on_model(cls.COND_MODEL, cond_model)
        parts = load_pipeline_parts(path, args, search_dirs, device=into, on_model=on_model)
        pipeline = cls(image_cond_model=cond_model, device=into, **parts)
        return pipeline if device is None else pipeline.to(device)

    @property
    def background_remover(self):
        """The background remover `preprocess_image` made and reuses, or None before its first call."""
        return self._remover

    # ------------------------------------------------------------------ stages
    def preprocess_image(self, image):
        """Background removal (if no real alpha), crop to the object, 518x518 RGB on black (§11.1)."""
        from .preprocess import BackgroundRemover, preprocess_image

        if self._remover is None:
            self._remover = BackgroundRemover()
        return preprocess_image(image, remover=self._remover)

    @torch.no_grad()
    def get_cond(self, images) -> dict:
        """PIL images (or a [B,3,H,W] tensor in [0,1]) -> {'cond', 'neg_cond'} (§11.2)."""
        size = self.image_cond_model.vit.args["img_size"]
        if not isinstance(images, torch.Tensor):
            from ..models.image_conditioner import images_to_tensor

            images = images_to_tensor(images, size)
        # Under fp16 autocast on CUDA when the pipeline's precision is fp16 (the reference runs DINOv2 in fp32, as
        # every other precision does here: its features then differ by rounding only, less than the fp16 flows' own,
        # and it runs several times faster; docs/benchmarks/pipeline.md#precision). Autocast is per thread.
        half = self._device.type == "cuda" and self.memory_policy.precision == "fp16"
        precision = torch.autocast("cuda", dtype=torch.float16) if half else contextlib.nullcontext()
        with self._on_device("image_cond_model") as cond_model, precision:
            cond = cond_model(images.to(self._device, torch.float32)).float()
        return {"cond": cond, "neg_cond": torch.zeros_like(cond)}

    # ------------------------------------------------------------------ entry points
    def _cond_for(self, images, preprocess: bool, progress: StageProgress, tracker: StageTracker) -> dict:
        with tracker.stage("preprocess"):
            if preprocess:
                images = [self.preprocess_image(img) for img in images]
            elif not isinstance(images, torch.Tensor):
                from .preprocess import load_image     # paths and arrays too, used as they are

                images = [load_image(img) for img in images]
        if progress:
            progress("preprocess", 1, 1)
        with tracker.stage("condition"):
            cond = self.get_cond(images)
        if progress:
            progress("condition", 1, 1)
        return cond

    def run(self, image, num_samples: int = 1, seed: int = 42, sparse_structure_sampler_params: dict | None = None,
            slat_sampler_params: dict | None = None, formats=DEFAULT_FORMATS, preprocess_image: bool = True,
            progress: StageProgress = None, cancel: CancelCheck = None) -> dict:
        """One image -> {'mesh': [MeshExtractResult], 'gaussian': [Gaussian], 'radiance_field': [Strivec]}."""
        def go(tracker):
            cond = self._cond_for([image], preprocess_image, progress, tracker)
            return self._generate(cond, num_samples, seed, sparse_structure_sampler_params, slat_sampler_params,
                                  list(formats), progress, cancel, tracker)
        return self._guarded(go)

    def run_multi_image(self, images, num_samples: int = 1, seed: int = 42,
                        sparse_structure_sampler_params: dict | None = None, slat_sampler_params: dict | None = None,
                        formats=DEFAULT_FORMATS, preprocess_image: bool = True, mode: str = "stochastic",
                        progress: StageProgress = None, cancel: CancelCheck = None) -> dict:
        """Several views of one object (§11.7): 'stochastic' uses view k mod K at step k, 'multidiffusion'
        averages the conditional velocities of all views."""
        if mode not in ("stochastic", "multidiffusion"):
            raise ValueError(f"mode must be 'stochastic' or 'multidiffusion', got {mode!r}")
        images = list(images)
        if not images:
            raise ValueError("run_multi_image needs at least one image")

        def go(tracker):
            cond = self._cond_for(images, preprocess_image, progress, tracker)
            cond["neg_cond"] = cond["neg_cond"][:1]
            for params, defaults in ((sparse_structure_sampler_params, self.sparse_structure_sampler_params),
                                     (slat_sampler_params, self.slat_sampler_params)):
                steps = {**defaults, **(params or {})}.get("steps", 50)
                if mode == "stochastic" and len(images) > steps:
                    import warnings
                    warnings.warn(f"{len(images)} images but only {steps} steps: some images are never used "
                                  f"in 'stochastic' mode", RuntimeWarning, stacklevel=3)
            return self._generate(cond, num_samples, seed, sparse_structure_sampler_params, slat_sampler_params,
                                  list(formats), progress, cancel, tracker, multi_mode=mode)
        return self._guarded(go)

    def run_variant(self, mesh, image, num_samples: int = 1, seed: int = 42, slat_sampler_params: dict | None = None,
                    formats=DEFAULT_FORMATS, preprocess_image: bool = True, progress: StageProgress = None,
                    cancel: CancelCheck = None, up: str | None = None) -> dict:
        """A new look for an existing shape: stage 2 conditioned on `image`, on the voxels of `mesh` (a path
        to a GLB / OBJ / PLY / STL, a trimesh.Trimesh or Scene); stage 1 is skipped (text facts §5). `up`: the
        mesh's up axis, "y" or "z"; None goes by the format (see `voxelize`)."""
        voxels = self.voxelize(mesh, up=up, cancel=cancel)

        def go(tracker):
            cond = self._cond_for([image], preprocess_image, progress, tracker)
            return self._generate_on_structure(cond, voxels, num_samples, seed, slat_sampler_params, list(formats),
                                               progress, cancel, tracker)
        return self._guarded(go)
