"""Image -> 3-D asset: the TRELLIS two-stage pipeline (spec §11, §12).

    pipeline = TrellisImageTo3DPipeline.from_pretrained("microsoft/TRELLIS-image-large")  # or a folder
    pipeline.cuda()
    outputs = pipeline.run(image, seed=1)     # {'gaussian': [...], 'mesh': [...], 'radiance_field': [...]}

Data path, top to bottom: preprocess -> DINOv2 cond -> stage-1 flow (dense 16^3 latent) -> occupancy
decoder -> voxel coords -> stage-2 flow (sparse latent) -> de-normalise -> decoders. The random
generator is used as the reference uses it (§11.3), so the same weights and seed give the same asset.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Callable, Optional

import numpy as np
import torch

from .. import models as model_zoo
from ..modules.sparse import SparseTensor
from ..utils.cancel import CancelCheck, Cancelled, check
from . import samplers
from .memory import HostWeights, MemoryPolicy, StageTracker, release_device_memory

DEFAULT_FORMATS = ("mesh", "gaussian", "radiance_field")
# DINOv2 ViT-L/14 + 4 registers (spec §9): the official torch.hub weights.
DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_reg4_pretrain.pth"
_DECODER_OF_FORMAT = {"mesh": "slat_decoder_mesh", "gaussian": "slat_decoder_gs",
                      "radiance_field": "slat_decoder_rf"}

Progress = Optional[Callable[[str, int, int], None]]


class EmptyStructureError(ValueError):
    """Stage 1 found no occupied voxel: there is nothing to build a 3-D asset from."""


def _resolve_pipeline_json(path: str) -> str:
    local = os.path.join(path, "pipeline.json")
    if os.path.exists(local):
        return local
    if os.path.isdir(path) or os.path.isabs(path) or path.startswith("."):
        raise FileNotFoundError(f"{path} has no pipeline.json: is this a TRELLIS pipeline folder?")
    from huggingface_hub import hf_hub_download

    return hf_hub_download(path, "pipeline.json")


def _load_model(root: str, value: str):
    """A pipeline.json model entry: `<root>/<value>` first, else `<owner>/<repo>/<stem>` itself (§2.5)."""
    try:
        return model_zoo.from_pretrained(f"{root}/{value}")
    except (FileNotFoundError, OSError) as first:
        try:
            return model_zoo.from_pretrained(value)
        except (FileNotFoundError, OSError, ValueError):
            raise first from None


def load_image_cond_model(root: str, name: str):
    """The image conditioner named in pipeline.json.

    A local `<root>/<name>.json` + `.safetensors` pair (our own format; the tiny test pipeline) wins.
    Otherwise `dinov2_vitl14_reg` comes from the official torch.hub weights file, looked up in
    $TRELLIS_DINOV2_WEIGHTS, then in torch's hub cache, then downloaded there.
    """
    from ..models.image_conditioner import load_image_conditioner, load_official_dinov2

    prefix = os.path.join(root, name)
    if os.path.exists(prefix + ".json") and os.path.exists(prefix + ".safetensors"):
        return load_image_conditioner(prefix)
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
    return load_official_dinov2(path)


class TrellisImageTo3DPipeline:
    def __init__(self, models: dict, sparse_structure_sampler, slat_sampler, slat_normalization: dict,
                 image_cond_model, sparse_structure_sampler_params: dict | None = None,
                 slat_sampler_params: dict | None = None):
        self.models = dict(models)
        self.sparse_structure_sampler = sparse_structure_sampler
        self.slat_sampler = slat_sampler
        self.sparse_structure_sampler_params = dict(sparse_structure_sampler_params or {})
        self.slat_sampler_params = dict(slat_sampler_params or {})
        self.slat_normalization = slat_normalization
        self.image_cond_model = image_cond_model
        self._device = torch.device("cpu")
        self._policy = MemoryPolicy()
        self._remover = None
        self._hosts: dict[str, HostWeights] = {}     # pinned CPU homes while offloading
        self.last_stats: list[dict] = []
        for m in self._all_models().values():
            m.eval()
        self._apply_precision()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str) -> "TrellisImageTo3DPipeline":
        with open(_resolve_pipeline_json(path), encoding="utf-8") as f:
            config = json.load(f)
        if config.get("name") != "TrellisImageTo3DPipeline":
            raise ValueError(f"{path}: pipeline.json describes {config.get('name')!r}, "
                             f"not TrellisImageTo3DPipeline")
        args = config["args"]
        models = {key: _load_model(path, value) for key, value in args["models"].items()}
        missing = {"sparse_structure_flow_model", "sparse_structure_decoder", "slat_flow_model"} - set(models)
        if missing:
            raise ValueError(f"{path}: pipeline.json lacks the models {sorted(missing)}")

        def sampler(entry):
            cls_ = getattr(samplers, entry["name"])
            return cls_(**entry.get("args", {})), dict(entry.get("params", {}))

        ss_sampler, ss_params = sampler(args["sparse_structure_sampler"])
        slat_sampler, slat_params = sampler(args["slat_sampler"])
        return cls(models, ss_sampler, slat_sampler, args["slat_normalization"],
                   load_image_cond_model(path, args["image_cond_model"]), ss_params, slat_params)

    def _all_models(self) -> dict:
        return {**self.models, "image_cond_model": self.image_cond_model}

    # ------------------------------------------------------------------ device and memory policy
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def memory_policy(self) -> MemoryPolicy:
        return self._policy.resolve(self._device)

    def to(self, device) -> "TrellisImageTo3DPipeline":
        self._device = torch.device(device)
        self._apply_precision()
        self._place_all()
        return self

    def cuda(self, device=None) -> "TrellisImageTo3DPipeline":
        return self.to("cuda" if device is None else device)

    def cpu(self) -> "TrellisImageTo3DPipeline":
        return self.to("cpu")

    def set_memory_policy(self, precision: str | None = None, offload: str | None = None,
                          cfg_batch: bool | None = None, cuda_graphs: bool | None = None) -> MemoryPolicy:
        """Change precision / offload / CFG batching / CUDA graphs at run time (no reload from disk)."""
        current = self._policy
        self._policy = MemoryPolicy(precision or current.precision, offload or current.offload,
                                    current.cfg_batch if cfg_batch is None else cfg_batch,
                                    current.cuda_graphs if cuda_graphs is None else cuda_graphs)
        self._apply_precision()
        self._place_all()
        return self.memory_policy

    def _apply_precision(self) -> None:
        dtype = self.memory_policy.dtype
        for model in self.models.values():
            model.set_torso_dtype(dtype)       # DINOv2 stays fp32 as in the reference

    def _offloading(self) -> bool:
        return self.memory_policy.offload == "model" and self._device.type != "cpu"

    def _place_all(self) -> None:
        """Every model at its home: the compute device, or pinned CPU memory when offloading."""
        if self._offloading():
            for name, model in self._all_models().items():
                if name in self._hosts:
                    self._hosts[name].refresh()        # dtypes may have changed
                else:
                    self._hosts[name] = HostWeights(model)
        else:
            self._hosts.clear()
            for model in self._all_models().values():
                model.to(self._device)
        release_device_memory(self._device)

    @contextlib.contextmanager
    def _on_device(self, *names):
        """Models `names` on the compute device for the duration of the block (offload "model")."""
        models = [self._all_models()[n] for n in names]
        offload = self._offloading()
        if offload:
            for n in names:
                self._hosts[n].to_device(self._device)
        try:
            yield models if len(models) > 1 else models[0]
        finally:
            if offload:
                for n in names:
                    self._hosts[n].to_host()
                release_device_memory(self._device)

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
            from PIL import Image

            arrays = [np.asarray(img.convert("RGB").resize((size, size), Image.LANCZOS), dtype=np.float32) / 255
                      for img in images]
            images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        with self._on_device("image_cond_model") as cond_model:
            cond = cond_model(images.to(self._device, torch.float32))
        return {"cond": cond, "neg_cond": torch.zeros_like(cond)}

    def _sample(self, stage: str, sampler, model_key: str, defaults: dict, noise, cond: dict,
                sampler_params: dict | None, progress: Progress, cancel: CancelCheck, **sampler_kwargs):
        """Run one flow stage: pipeline.json params overridden by the caller's, memory policy applied."""
        params = {**defaults, **(sampler_params or {})}
        policy = self.memory_policy
        with self._on_device(model_key) as flow:
            return sampler.sample(
                flow, noise, **cond, **params, **sampler_kwargs, verbose=False, cancel=cancel,
                cfg_batch=policy.cfg_batch, cuda_graph=policy.cuda_graphs,
                progress=(lambda i, n: progress(stage, i, n)) if progress else None).samples

    @torch.no_grad()
    def sample_sparse_structure(self, cond: dict, num_samples: int = 1, sampler_params: dict | None = None,
                                generator: torch.Generator | None = None, progress: Progress = None,
                                cancel: CancelCheck = None, **sampler_kwargs) -> torch.Tensor:
        """Stage 1: int32 coords [N, 4] = (batch, x, y, z) of the occupied voxels."""
        flow = self.models["sparse_structure_flow_model"]
        reso, channels = flow.resolution, flow.in_channels
        noise = torch.randn(num_samples, channels, reso, reso, reso, generator=generator).to(self._device)
        z = self._sample("sparse_structure", self.sparse_structure_sampler, "sparse_structure_flow_model",
                         self.sparse_structure_sampler_params, noise, cond, sampler_params, progress, cancel,
                         **sampler_kwargs)
        del noise
        check(cancel)
        with self._on_device("sparse_structure_decoder") as decoder:
            occupancy = decoder(z) > 0
        coords = torch.argwhere(occupancy)[:, [0, 2, 3, 4]].int()
        if coords.shape[0] == 0:
            raise EmptyStructureError("The first stage found no occupied voxel, so there is no 3-D shape to "
                                      "build. Try another seed, a stronger stage-1 guidance, or an image with "
                                      "a clearer, larger object.")
        return coords

    @torch.no_grad()
    def sample_slat(self, cond: dict, coords: torch.Tensor, sampler_params: dict | None = None,
                    generator: torch.Generator | None = None, progress: Progress = None,
                    cancel: CancelCheck = None, **sampler_kwargs) -> SparseTensor:
        """Stage 2: the structured latent on `coords`, de-normalised (§11.5)."""
        flow = self.models["slat_flow_model"]
        feats = torch.randn(coords.shape[0], flow.in_channels, generator=generator).to(self._device)
        noise = SparseTensor(feats=feats, coords=coords.to(self._device))
        slat = self._sample("slat", self.slat_sampler, "slat_flow_model", self.slat_sampler_params, noise, cond,
                            sampler_params, progress, cancel, **sampler_kwargs)
        std = torch.tensor(self.slat_normalization["std"], device=self._device)[None]
        mean = torch.tensor(self.slat_normalization["mean"], device=self._device)[None]
        return slat * std + mean

    @torch.no_grad()
    def decode_slat(self, slat: SparseTensor, formats=DEFAULT_FORMATS, progress: Progress = None,
                    cancel: CancelCheck = None, tracker: StageTracker | None = None) -> dict:
        out = {}
        for i, fmt in enumerate(formats):
            if fmt not in _DECODER_OF_FORMAT:
                raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(_DECODER_OF_FORMAT)}")
            check(cancel)
            stage = tracker.stage(f"decode_{fmt}") if tracker else contextlib.nullcontext()
            with stage, self._on_device(_DECODER_OF_FORMAT[fmt]) as decoder:
                out[fmt] = decoder(slat)
            if progress:
                progress("decode", i + 1, len(formats))
        return out

    # ------------------------------------------------------------------ entry points
    def _cond_for(self, images, preprocess: bool, progress: Progress, tracker: StageTracker) -> dict:
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

    def _generate(self, cond, num_samples, seed, ss_params, slat_params, formats, progress, cancel, tracker,
                  **sampler_kwargs) -> dict:
        # One CPU generator seeded once, drawn in the reference's order (SS noise, then SLat noise).
        generator = torch.Generator().manual_seed(seed)
        with tracker.stage("sparse_structure"):
            coords = self.sample_sparse_structure(cond, num_samples, ss_params, generator, progress, cancel,
                                                  **sampler_kwargs)
        with tracker.stage("slat"):
            slat = self.sample_slat(cond, coords, slat_params, generator, progress, cancel, **sampler_kwargs)
        return self.decode_slat(slat, formats, progress, cancel, tracker)

    def _guarded(self, fn, *args, **kwargs):
        """Run a generation so that a cancel or an out-of-memory leaves no activation behind."""
        tracker = StageTracker(self._device)
        failure = None
        try:
            return fn(*args, tracker=tracker, **kwargs)
        except (Cancelled, torch.OutOfMemoryError) as err:
            failure = err
            # Drop the traceback: its frames hold the intermediate tensors.
            failure.__traceback__ = None
        finally:
            self.last_stats = tracker.as_dicts()
            if failure is not None:
                self._place_all()       # offloaded models back home
            release_device_memory(self._device)   # give cached blocks back: other apps share the GPU
        raise failure

    def run(self, image, num_samples: int = 1, seed: int = 42, sparse_structure_sampler_params: dict | None = None,
            slat_sampler_params: dict | None = None, formats=DEFAULT_FORMATS, preprocess_image: bool = True,
            progress: Progress = None, cancel: CancelCheck = None) -> dict:
        """One image -> {'mesh': [MeshExtractResult], 'gaussian': [Gaussian], 'radiance_field': [Strivec]}."""
        def go(tracker):
            cond = self._cond_for([image], preprocess_image, progress, tracker)
            return self._generate(cond, num_samples, seed, sparse_structure_sampler_params, slat_sampler_params,
                                  list(formats), progress, cancel, tracker)
        return self._guarded(go)

    def run_multi_image(self, images, num_samples: int = 1, seed: int = 42,
                        sparse_structure_sampler_params: dict | None = None, slat_sampler_params: dict | None = None,
                        formats=DEFAULT_FORMATS, preprocess_image: bool = True, mode: str = "stochastic",
                        progress: Progress = None, cancel: CancelCheck = None) -> dict:
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
