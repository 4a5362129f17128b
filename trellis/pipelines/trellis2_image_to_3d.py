"""Image -> 3-D asset with TRELLIS.2 (TRELLIS2_FACTS §1-§5): O-Voxel shape and PBR material.

    pipeline = Trellis2ImageTo3DPipeline.from_pretrained("microsoft/TRELLIS.2-4B")      # or a folder
    meshes = pipeline.run(image, seed=42, pipeline_type="1024_cascade")               # [MeshWithVoxel]

Data path, top to bottom (§3.1): preprocess (no crop margin, §5.1) -> DINOv3 at 512 (and 1024) -> structure flow
(dense 16^3 latent) -> v1 occupancy decoder (64^3, max-pooled to 32^3 unless type 1024) -> shape flow (sparse,
32 channels per voxel; a cascade re-quantises its 16x up-sampled voxels for a second, finer pass) -> texture
flow (its input: noise || the normalised shape latent) -> shape decoder (mesh) and texture decoder (6 PBR
attributes per fine voxel). Every noise is drawn on the CPU from one generator seeded once, in the stage order
(structure, low-res shape, high-res shape, texture), then moved to the device: the same seed gives the same noise
on any device. The device / precision / offload policy is v1's (base.py): the networks keep their checkpoints'
dtypes (bf16 flows, fp16 decoders) unless the precision is fp32; "auto" keeps them resident only from
RESIDENT_BUDGETS free, else each one visits the device for its stage alone. run() frees what no later stage
needs (the conditions, the low-resolution latent, the decoders' subdivisions) and, when memory is short, gives
the allocator's cache back between stages; an out-of-memory names its stage and the VRAM budget
(memory.StageOutOfMemoryError).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..core.callbacks import CancelCheck, StageProgress, check
from ..core.device import memory_budget
from ..modules.sparse import SparseTensor
from .base import EmptyStructureError, TrellisPipeline, read_pipeline_config
from .memory import MemoryPolicy, StageTracker, naming_stage, release_device_memory
from .trellis2_cascade import DECODER_UPSAMPLE, MAX_NUM_TOKENS, cascade_coords
from .trellis2_cascade import PIPELINE_TYPES as TYPES
from .trellis2_cascade import pipeline_type as type_named
from .trellis2_loading import load_conditioner, load_trellis2_parts, validate_args

__all__ = ["Trellis2ImageTo3DPipeline"]


class Trellis2ImageTo3DPipeline(TrellisPipeline):
    COND_MODEL = "image_cond_model"
    EMPTY_STRUCTURE_HINT = "an image with a clearer, larger object"
    KEPT_GRAPH_STAGES = ()          # CUDA graphs of these flows are not set up: eager everywhere
    # Free memory from which "auto" keeps every network resident, (half precision, fp32): the weights alone are
    # ~16 GB in the checkpoints' dtypes (five 1.3 B-parameter bf16 flows, fp16 decoders, fp32 DINOv3), plus the
    # largest stage's working set (the 1536 cascade's decoders). Below, offload "model" (memory.pick_preset).
    RESIDENT_BUDGETS = (24 * 2 ** 30, 44 * 2 ** 30)
    # The pipeline's contract for its callers: its pipeline types (trellis2_cascade), the least VRAM budget (GiB) a
    # run of each completes under on the low-VRAM path (the caps its measured peaks fit, docs/benchmarks/trellis2.md),
    # and the progress stages of `run` in order (shape_slat twice in a cascade).
    PIPELINE_TYPES = tuple(TYPES)
    VRAM_FLOORS = {"512": 6.0, "1024": 6.0, "1024_cascade": 6.0, "1536_cascade": 8.0}
    PROGRESS_STAGES = ("preprocess", "condition", "sparse_structure", "shape_slat", "tex_slat", "decode")

    def __init__(self, models: dict, samplers: dict, sampler_params: dict, shape_slat_normalization: dict,
                 tex_slat_normalization: dict, image_cond_model, default_pipeline_type: str = "1024_cascade",
                 device=None):
        self.image_cond_model = image_cond_model
        self._remover = None
        # The torso dtype each network was loaded in (bf16 flows, fp16 decoders): what it runs unless fp32.
        self._native_dtypes = {key: getattr(m, "dtype", None) for key, m in models.items()}
        self.tex_slat_sampler = samplers["tex_slat_sampler"]
        self.tex_slat_sampler_params = dict(sampler_params.get("tex_slat_sampler", {}))
        self.tex_slat_normalization = tex_slat_normalization
        type_named(default_pipeline_type)          # a clear error at load, not at the first run
        self.default_pipeline_type = str(default_pipeline_type)
        super().__init__(models, samplers["sparse_structure_sampler"], samplers["shape_slat_sampler"],
                         shape_slat_normalization, sampler_params.get("sparse_structure_sampler"),
                         sampler_params.get("shape_slat_sampler"), device=device)

    # The base class's names for what TRELLIS.2 calls the shape stage.
    @property
    def shape_slat_sampler(self):
        return self.slat_sampler

    @property
    def shape_slat_sampler_params(self) -> dict:
        return self.slat_sampler_params

    @property
    def shape_slat_normalization(self) -> dict:
        return self.slat_normalization

    @property
    def background_remover(self):
        """The background remover `preprocess_image` made and reuses, or None before its first call (as v1's)."""
        return self._remover

    @classmethod
    def from_pretrained(cls, path: str, search_dirs=(), device=None,
                        on_model: Optional[Callable[[str, torch.nn.Module], None]] = None,
                        download_conditioner: bool = False) -> "Trellis2ImageTo3DPipeline":
        """A pipeline folder or hub repo id, on the CPU or on `device`. `search_dirs`: folders holding other repos
        pipeline.json names (the v1 structure decoder, DINOv3). `download_conditioner`: fetch DINOv3 from the hub
        when no local or cached copy exists (its licence must have been accepted there). `on_model(key, model)` is
        called as each network is loaded, the conditioner first."""
        args = read_pipeline_config(path, "Trellis2ImageTo3DPipeline")["args"]
        validate_args(path, args)
        into = cls.weights_device(device)
        cond_model = load_conditioner(path, args.get("image_cond_model"), search_dirs, device=into,
                                      download=download_conditioner)
        if on_model is not None:
            on_model(cls.COND_MODEL, cond_model)
        parts = load_trellis2_parts(path, args, search_dirs, device=into, on_model=on_model)
        pipeline = cls(image_cond_model=cond_model, device=into, **parts)
        return pipeline if device is None else pipeline.to(device)

    @classmethod
    def weights_device(cls, device) -> torch.device | None:
        """base.weights_device with this family's resident budgets: the device itself where the networks will stay
        resident, else None (built on the CPU, kept in pinned host memory)."""
        if device is None:
            return None
        device = torch.device(device)
        if device.type == "cuda" and MemoryPolicy().resolve(device, cls.RESIDENT_BUDGETS).offload != "none":
            return None
        return device

    @property
    def memory_policy(self) -> MemoryPolicy:
        return self._policy.resolve(self._device, self.RESIDENT_BUDGETS)

    @contextlib.contextmanager
    def stage(self, tracker: StageTracker | None, name: str):
        """One stage of a run: timed by `tracker` (None: not timed), an out-of-memory inside named with the stage
        and the budget, and, when memory is short (offloading, or a VRAM budget set), the allocator's cache given
        back after it: a stage's activations are not the next one's sizes, and kept they would add up in what the
        process reserves. Resident without a budget the cache stays (new allocations cost time)."""
        timed = tracker.stage(name) if tracker is not None else contextlib.nullcontext()
        with timed, naming_stage(name, self._device, self.memory_policy.offload):
            yield
        if self._offloading() or memory_budget(self._device) is not None:
            release_device_memory(self._device)

    def _apply_precision(self) -> None:
        policy = self.memory_policy
        for key, model in self.models.items():
            native = self._native_dtypes.get(key)
            if hasattr(model, "set_torso_dtype") and native is not None:
                want = torch.float32 if policy.precision == "fp32" else native
                if getattr(model, "dtype", None) != want:
                    model.set_torso_dtype(want)
            if hasattr(model, "compile_blocks"):
                model.compile_blocks = bool(policy.compile)
            if hasattr(model, "lean"):
                model.lean = self._lean_wanted(policy)

    def _graphs_for(self, stage, model_key, flow, policy):
        return False

    # ------------------------------------------------------------------ stages
    def preprocess_image(self, image):
        """Background removal (rembg u2net) if no real alpha, crop with no margin, premultiply on black (§5.1)."""
        from .preprocess import TRELLIS2_FRAMING, BackgroundRemover, preprocess_image

        if self._remover is None:
            self._remover = BackgroundRemover()
        return preprocess_image(image, remover=self._remover, framing=TRELLIS2_FRAMING)

    @torch.no_grad()
    def get_cond(self, images, resolution: int) -> dict:
        """PIL images (or a [B, 3, S, S] tensor in [0, 1]) -> {'cond': DINOv3 tokens at S = resolution,
        'neg_cond': zeros of that shape} (§5.2, §4)."""
        with self._on_device(self.COND_MODEL) as cond_model:
            cond = cond_model.encode(images, resolution).to(self._device)
        return {"cond": cond, "neg_cond": torch.zeros_like(cond)}

    def _noise(self, generator, *shape) -> torch.Tensor:
        """float32 standard normal drawn on the CPU (the reference's draw), then moved to the device."""
        return torch.randn(*shape, generator=generator).to(self._device)

    @torch.no_grad()
    def sample_sparse_structure(self, cond: dict, num_samples: int = 1, sampler_params: dict | None = None,
                                generator: torch.Generator | None = None, ss_res: int = 64,
                                progress: StageProgress = None, cancel: CancelCheck = None) -> torch.Tensor:
        """Stage 1: int32 coords [N, 4] (batch, x, y, z) of the occupied cells of the ss_res^3 grid (the decoder's
        64^3 occupancy, max-pooled when ss_res is smaller: a cell is occupied if any of its children is)."""
        z = self.sample_structure_latent(cond, num_samples, sampler_params, generator, progress, cancel)
        check(cancel)
        return self.decode_structure(z, ss_res)

    @torch.no_grad()
    def sample_structure_latent(self, cond: dict, num_samples: int = 1, sampler_params: dict | None = None,
                                generator: torch.Generator | None = None, progress: StageProgress = None,
                                cancel: CancelCheck = None) -> torch.Tensor:
        """Stage 1's flow: the dense structure latent [B, C, R, R, R]."""
        flow = self.models["sparse_structure_flow_model"]
        reso = flow.resolution
        noise = self._noise(generator, num_samples, flow.in_channels, reso, reso, reso)
        return self._sample("sparse_structure", self.sparse_structure_sampler, "sparse_structure_flow_model",
                            self.sparse_structure_sampler_params, noise, cond, sampler_params, progress, cancel)

    @torch.no_grad()
    def decode_structure(self, z: torch.Tensor, ss_res: int = 64) -> torch.Tensor:
        """Stage 1's decoder: the occupied cells of the ss_res^3 grid (see sample_sparse_structure)."""
        with self._on_device("sparse_structure_decoder") as decoder:
            occupancy = (decoder(z) > 0).float()
        factor = occupancy.shape[-1] // ss_res
        if factor > 1:
            occupancy = F.max_pool3d(occupancy, factor, factor)
        coords = torch.argwhere(occupancy > 0.5)[:, [0, 2, 3, 4]].int()
        if coords.shape[0] == 0:
            raise EmptyStructureError(f"The first stage found no occupied voxel, so there is no 3-D shape to "
                                      f"build. Try another seed or {self.EMPTY_STRUCTURE_HINT}.")
        return coords

    @torch.no_grad()
    def sample_shape_slat(self, cond: dict, flow_key: str, coords: torch.Tensor, sampler_params: dict | None = None,
                          generator: torch.Generator | None = None, progress: StageProgress = None,
                          cancel: CancelCheck = None) -> SparseTensor:
        """A shape pass on `coords` with the flow `flow_key`, de-normalised (§3.1 step 5)."""
        flow = self.models[flow_key]
        if hasattr(flow, "lean"):
            flow.lean = self._lean_wanted(self.memory_policy)
        noise = SparseTensor(self._noise(generator, coords.shape[0], flow.in_channels), coords.to(self._device))
        slat = self._sample("shape_slat", self.slat_sampler, flow_key, self.slat_sampler_params, noise, cond,
                            sampler_params, progress, cancel)
        return self._denormalise(slat, self.slat_normalization)

    @torch.no_grad()
    def sample_shape_slat_cascade(self, cond_lr: dict, cond_hr: dict, coords: torch.Tensor, ss_res: int, res: int,
                                  max_num_tokens: int = MAX_NUM_TOKENS, sampler_params: dict | None = None,
                                  generator: torch.Generator | None = None, progress: StageProgress = None,
                                  cancel: CancelCheck = None) -> tuple[SparseTensor, int]:
        """§3.2: the 512 shape pass, its voxels up-sampled 16x by the shape decoder and re-quantised to the R/16
        grid (R lowered under the token cap), the 1024 shape pass there. Returns (shape latent, final R)."""
        lr = self.sample_shape_slat(cond_lr, "shape_slat_flow_model_512", coords, sampler_params, generator,
                                    progress, cancel)
        check(cancel)
        hr_coords, res = self.upsample_shape(lr, ss_res, res, max_num_tokens)
        del lr
        hr = self.sample_shape_slat(cond_hr, "shape_slat_flow_model_1024", hr_coords, sampler_params, generator,
                                    progress, cancel)
        return hr, res

    @torch.no_grad()
    def upsample_shape(self, lr: SparseTensor, ss_res: int, res: int, max_num_tokens: int = MAX_NUM_TOKENS
                       ) -> tuple[torch.Tensor, int]:
        """§3.2's middle: the low-resolution latent's voxels up-sampled 16x by the shape decoder, re-quantised to the
        high-resolution pass's grid. Returns (its coords, the final R)."""
        with self._on_device("shape_slat_decoder") as decoder:
            fine = decoder.upsample(lr, 4)
        return cascade_coords(fine, ss_res * DECODER_UPSAMPLE, res, max_num_tokens)

    @torch.no_grad()
    def sample_tex_slat(self, cond: dict, flow_key: str, shape_slat: SparseTensor, sampler_params: dict | None = None,
                        generator: torch.Generator | None = None, progress: StageProgress = None,
                        cancel: CancelCheck = None) -> SparseTensor:
        """§3.1 step 7: noise on the shape latent's voxels, the normalised shape latent appended at every step
        (noise first), de-normalised with the texture statistics."""
        flow = self.models[flow_key]
        if hasattr(flow, "lean"):
            flow.lean = self._lean_wanted(self.memory_policy)
        shape = self._normalise(shape_slat, self.slat_normalization)
        extra = flow.in_channels - shape.feats.shape[1]
        noise = shape.replace(self._noise(generator, shape.feats.shape[0], extra))
        slat = self._sample("tex_slat", self.tex_slat_sampler, flow_key, self.tex_slat_sampler_params, noise, cond,
                            sampler_params, progress, cancel, concat_cond=shape)
        return self._denormalise(slat, self.tex_slat_normalization)

    @torch.no_grad()
    def decode_latent(self, shape_slat: SparseTensor, tex_slat: SparseTensor, res: int, cancel: CancelCheck = None):
        """Shape decoder -> dual-grid meshes at `res`; texture decoder on the same subdivision -> the fine voxels'
        PBR attributes (0.5 o + 0.5, §8). One MeshWithVoxel per batch item."""
        out, subs = self.decode_shape(shape_slat)
        check(cancel)
        tex = self.decode_texture(tex_slat, subs)
        del subs
        return self.to_meshes(out, tex, res)

    @torch.no_grad()
    def decode_shape(self, shape_slat: SparseTensor) -> tuple[SparseTensor, list]:
        """The shape decoder: its head output on the fine voxels and its subdivision at each level."""
        with self._on_device("shape_slat_decoder") as decoder:
            return decoder(shape_slat, return_subs=True)

    @torch.no_grad()
    def decode_texture(self, tex_slat: SparseTensor, subs: list) -> SparseTensor:
        """The texture decoder along the shape decoder's subdivision `subs`: 6 channels per fine voxel."""
        with self._on_device("tex_slat_decoder") as decoder:
            return decoder(tex_slat, guide_subs=subs)

    @torch.no_grad()
    def to_meshes(self, shape_out: SparseTensor, tex: SparseTensor | None, res: int) -> list:
        """Dual-grid meshes at `res` from the shape decoder's output, with the fine voxels' PBR attributes (none
        yet when `tex` is None: ``attach_attributes`` adds them)."""
        decoder = self.models["shape_slat_decoder"]     # its head's settings only: no weights are used here
        decoder.set_resolution(res)
        meshes = decoder.to_meshes(shape_out)
        if tex is not None:
            attach_attributes(meshes, tex)
        return meshes

    def _normalise(self, slat: SparseTensor, stats: dict) -> SparseTensor:
        mean, std = (torch.tensor(stats[k], device=self._device)[None] for k in ("mean", "std"))
        return (slat - mean) / std

    def _denormalise(self, slat: SparseTensor, stats: dict) -> SparseTensor:
        mean, std = (torch.tensor(stats[k], device=self._device)[None] for k in ("mean", "std"))
        return slat * std + mean

    # ------------------------------------------------------------------ entry point
    def run(self, image, num_samples: int = 1, seed: int = 42, pipeline_type: str | None = None,
            max_num_tokens: int = MAX_NUM_TOKENS, sparse_structure_sampler_params: dict | None = None,
            shape_slat_sampler_params: dict | None = None, tex_slat_sampler_params: dict | None = None,
            preprocess_image: bool = True, return_latent: bool = False, progress: StageProgress = None,
            cancel: CancelCheck = None, on_shape: Optional[Callable[[list], None]] = None):
        """One image -> [MeshWithVoxel] (one per sample); with `return_latent` also (shape latent, texture latent,
        res). `pipeline_type`: "512", "1024", "1024_cascade" or "1536_cascade" (default: pipeline.json's).
        `progress(stage, i, n)`: stages preprocess, condition, sparse_structure, shape_slat (twice in a cascade),
        tex_slat, decode. `last_stats` then holds each stage's seconds and peak memory: RUN_STAGES (a cascade's
        shape pass as shape_slat_lr, upsample, shape_slat_hr). `on_shape(meshes)`: the shape is decoded and meshed
        before the texture flow (its outputs then held through it) and the meshes, without attributes yet, handed
        over, so that the caller's work on the shape alone runs while the texture samples; the same objects get
        their attributes and are returned, the same numbers as without. The reference's hole filling after
        meshing (facts §11) is not done here."""
        kind = type_named(pipeline_type or self.default_pipeline_type)
        ss_params, shape_params, tex_params = (sparse_structure_sampler_params, shape_slat_sampler_params,
                                               tex_slat_sampler_params)

        def go(tracker):
            def stage(name):
                return self.stage(tracker, name)

            with stage("preprocess"):
                img = self._input_image(image, preprocess_image)
            if progress:
                progress("preprocess", 1, 1)
            with stage("condition"):
                conds = {size: self.get_cond([img], size) for size in kind.cond_sizes}
            del img
            if progress:
                progress("condition", 1, 1)
            generator = torch.Generator().manual_seed(seed)
            with stage("sparse_structure"):
                z = self.sample_structure_latent(conds[512], num_samples, ss_params, generator, progress, cancel)
            drop_conditions(conds, kind, "sparse_structure")
            check(cancel)
            with stage("structure_decode"):
                coords = self.decode_structure(z, kind.ss_res)
            del z
            res = kind.res
            if kind.cascade:
                with stage("shape_slat_lr"):
                    lr = self.sample_shape_slat(conds[512], "shape_slat_flow_model_512", coords, shape_params,
                                                generator, progress, cancel)
                drop_conditions(conds, kind, "shape_slat_lr")
                check(cancel)
                with stage("upsample"):
                    coords, res = self.upsample_shape(lr, kind.ss_res, res, max_num_tokens)
                del lr
                with stage("shape_slat_hr"):
                    shape = self.sample_shape_slat(conds[1024], "shape_slat_flow_model_1024", coords, shape_params,
                                                   generator, progress, cancel)
            else:
                with stage("shape_slat"):
                    shape = self.sample_shape_slat(conds[int(kind.shape)], f"shape_slat_flow_model_{kind.shape}",
                                                   coords, shape_params, generator, progress, cancel)
            del coords
            drop_conditions(conds, kind, "shape_slat")
            meshes = None
            if on_shape is not None:
                with stage("decode_shape"):
                    out, subs = self.decode_shape(shape)
                with stage("mesh"):
                    meshes = self.to_meshes(out, None, res)
                del out
                on_shape(meshes)
                check(cancel)
            with stage("tex_slat"):
                tex = self.sample_tex_slat(conds[int(kind.tex)], f"tex_slat_flow_model_{kind.tex}", shape,
                                           tex_params, generator, progress, cancel)
            conds.clear()
            check(cancel)
            if meshes is None:
                with stage("decode_shape"):
                    out, subs = self.decode_shape(shape)
                check(cancel)
            with stage("decode_texture"):
                attrs = self.decode_texture(tex, subs)
            del subs
            if meshes is None:
                with stage("mesh"):
                    meshes = self.to_meshes(out, attrs, res)
                del out
            else:
                attach_attributes(meshes, attrs)
            del attrs
            if progress:
                progress("decode", 1, 1)
            return (meshes, (shape, tex, res)) if return_latent else meshes
        return self._guarded(go)

    def _input_image(self, image, preprocess: bool):
        if preprocess:
            return self.preprocess_image(image)
        from .preprocess import load_image     # paths and arrays too, used as they are

        return load_image(image)


# The stages of run(), in order, as last_stats names them (a cascade's shape pass: lr, upsample, hr; with on_shape,
# decode_shape and mesh come before tex_slat).
RUN_STAGES = ("preprocess", "condition", "sparse_structure", "structure_decode", "shape_slat_lr", "upsample",
              "shape_slat_hr", "shape_slat", "tex_slat", "decode_shape", "decode_texture", "mesh")


def attach_attributes(meshes: list, tex: SparseTensor) -> None:
    """Each mesh's fine voxels' PBR attributes (0.5 o + 0.5, §8) from the texture decoder's output `tex`."""
    from ..representations.ovoxel import pbr_attributes

    for mesh, rows in zip(meshes, tex.layout):
        mesh.attrs = pbr_attributes(tex.feats[rows])


def drop_conditions(conds: dict, kind, after: str) -> None:
    """Drop the DINOv3 tokens (and their zero negatives) that no stage after `after` uses: the 512 ones once the
    structure stage (type 1024) or the low-resolution shape pass (cascades) is done; the texture flow keeps its own."""
    later = {"sparse_structure": {kind.tex} | ({kind.shape} if not kind.cascade else {"512", "1024"}),
             "shape_slat_lr": {"1024", kind.tex}, "shape_slat": {kind.tex}}[after]
    for size in [s for s in conds if str(s) not in later]:
        del conds[size]
