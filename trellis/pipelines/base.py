"""What the image and text pipelines share: loading pipeline.json, the memory policy (precision, offload),
the two flow stages, the decoders, variants on a given structure, and cancel / out-of-memory clean-up.

A subclass names its conditioner (`COND_MODEL`, an attribute holding an nn.Module) and turns its input
into {'cond', 'neg_cond'}; everything after the condition is here, top to bottom: stage-1 flow (dense
latent) -> occupancy decoder -> voxel coords -> stage-2 flow (sparse latent) -> de-normalise -> decoders.
The random generator is used as the reference uses it (spec §11.3): one CPU generator seeded once, the
stage-1 noise drawn first, then one stage-2 noise row per voxel.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch

from ..core.device import obtainable_device_memory
from ..core.module_cancel import checked_between_modules
from ..models import read_config_json
from ..modules.attention import attention_mode
from ..modules.sparse import SparseTensor
from ..core.callbacks import CancelCheck, Cancelled, StageProgress, check
from . import samplers
from .memory import HostWeights, MemoryPolicy, StageTracker, free_device_memory, release_device_memory
from .samplers.cuda_graph import GraphedFlow
from .structure_graphs import KeptGraphs, flow_weights
from .model_sources import load_model, resolve_pipeline_json

DEFAULT_FORMATS = ("mesh", "gaussian", "radiance_field")
DECODER_OF_FORMAT = {"mesh": "slat_decoder_mesh", "gaussian": "slat_decoder_gs", "radiance_field": "slat_decoder_rf"}
REQUIRED_MODELS = ("sparse_structure_flow_model", "sparse_structure_decoder", "slat_flow_model")



class EmptyStructureError(ValueError):
    """Stage 1 found no occupied voxel: there is nothing to build a 3-D asset from."""


def read_pipeline_config(path: str, name: str) -> dict:
    config = read_config_json(resolve_pipeline_json(path))
    if not isinstance(config, dict) or config.get("name") != name:
        described = config.get("name") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{path}: pipeline.json describes {described!r}, not {name}")
    return config


def load_pipeline_parts(path: str, args: dict, search_dirs=(), device=None,
                        on_model: Optional[Callable[[str, torch.nn.Module], None]] = None) -> dict:
    """Models and samplers of a pipeline.json `args` as keyword arguments of the pipeline's constructor; the models
    on the CPU or built and filled on `device` (weights_device), the structure flow first (a job's first user of
    them); `on_model(key, model)` is called as each one is loaded."""
    first = "sparse_structure_flow_model"
    order = sorted(args["models"], key=lambda key: key != first)        # stable: the others in the file's order
    models = {}
    for key in order:
        models[key] = load_model(path, args["models"][key], search_dirs, device)
        if on_model is not None:
            on_model(key, models[key])
    models = {key: models[key] for key in args["models"]}
    missing = set(REQUIRED_MODELS) - set(models)
    if missing:
        raise ValueError(f"{path}: pipeline.json lacks the models {sorted(missing)}")

    def sampler(entry):
        return getattr(samplers, entry["name"])(**entry.get("args", {})), dict(entry.get("params", {}))

    ss_sampler, ss_params = sampler(args["sparse_structure_sampler"])
    slat_sampler, slat_params = sampler(args["slat_sampler"])
    return dict(models=models, sparse_structure_sampler=ss_sampler, slat_sampler=slat_sampler,
                slat_normalization=args["slat_normalization"], sparse_structure_sampler_params=ss_params,
                slat_sampler_params=slat_params)


# The SLat flow's lean mode (row-chunked norms and MLP, released skips) for the offloading preset: bit-identical
# (tests/trellis/pipelines/test_slat_lean.py, tests/gpu), it cuts the flow's activation peak to about a quarter but slows the low-VRAM
# chain (docs/benchmarks/memory.md#lean-mode), so it is on only when the device is short: offloading, and less than
# LEAN_BELOW_FREE_BYTES free as stage 2 starts (always on the CPU, where nothing is measured).
LEAN_BELOW_FREE_BYTES = 3 * 2 ** 30

# Lean mode also when the flow, once on the device, leaves less free than its stage's activations would take without
# it: LEAN_ACTIVATION_MARGIN x batch items x tokens x flow_activation_bytes(flow). The rule before the load alone misses
# a large flow whose activations outgrow what its weights leave free (docs/benchmarks/trellis2.md#low-vram).
LEAN_ACTIVATION_MARGIN = 1.25

# Batched CFG while offloading with cfg_batch left to "auto" (MemoryPolicy.cfg_batch None): decided per flow stage,
# once the flow is on the device, from the memory then free (under any cap, plus the allocator's idle cache) against
# the batch-2 activations of that stage's tokens: CFG_ACTIVATION_BYTES_PER_TOKEN per token and batch item (above
# the measured fp16 peaks of both flows), times CFG_BATCH_MARGIN. Never in lean mode (the device is short). Batched
# CFG saves a quarter of the low-VRAM chain for a few hundred MiB of peak (docs/benchmarks/memory.md#cfg-batching).
CFG_ACTIVATION_BYTES_PER_TOKEN = 32 * 1024
CFG_BATCH_MARGIN = 2.0


def weights_device(device) -> torch.device | None:
    """Where a pipeline for `device` builds and fills its networks: that device itself where they stay resident
    (the CPU, a GPU without offloading: no extra host copies on the way), else None (built on the CPU: an offloading
    policy keeps them in pinned host memory)."""
    if device is None:
        return None
    device = torch.device(device)
    if device.type == "cuda" and MemoryPolicy().resolve(device).offload != "none":
        return None
    return device


def cfg_batch_fits(tokens: int, free_bytes: int | None, lean: bool = False) -> bool:
    """Whether a flow stage of ``tokens`` tokens per batch item runs its conditional and unconditional passes as
    one batch of 2 with ``free_bytes`` free (None: not measured, e.g. the CPU: yes). Pure."""
    if free_bytes is None:
        return True
    if lean:
        return False
    return free_bytes >= CFG_BATCH_MARGIN * 2 * tokens * CFG_ACTIVATION_BYTES_PER_TOKEN


def flow_activation_bytes(flow) -> int:
    """A SLat flow's activations per token and batch item outside lean mode, above its weights: its MLP's hidden
    layer twice (the twin's linear, then its GELU) and eight rows of its width, in its torso's dtype. At or above
    the measured peaks (docs/benchmarks/memory.md#cfg-batching, trellis2.md#the-networks-alone)."""
    hidden = flow.blocks[0].mlp.mlp[0].out_features
    return (2 * hidden + 8 * flow.model_channels) * flow.dtype.itemsize


def activations_fit(tokens: int, batch: int, per_token: int, free_bytes: int | None) -> bool:
    """Whether a flow stage's activations (``per_token`` bytes for each of ``tokens`` tokens and ``batch`` items,
    times LEAN_ACTIVATION_MARGIN) fit in ``free_bytes`` (None: not measured, e.g. the CPU: yes). Pure."""
    return free_bytes is None or free_bytes >= LEAN_ACTIVATION_MARGIN * batch * tokens * per_token


class TrellisPipeline:
    COND_MODEL = "cond_model"        # the attribute that holds the conditioner (a subclass names its own)
    EMPTY_STRUCTURE_HINT = "a clearer input"

    def __init__(self, models: dict, sparse_structure_sampler, slat_sampler, slat_normalization: dict,
                 sparse_structure_sampler_params: dict | None = None, slat_sampler_params: dict | None = None,
                 device=None):
        self.models = dict(models)
        self.sparse_structure_sampler = sparse_structure_sampler
        self.slat_sampler = slat_sampler
        self.sparse_structure_sampler_params = dict(sparse_structure_sampler_params or {})
        self.slat_sampler_params = dict(slat_sampler_params or {})
        self.slat_normalization = slat_normalization
        self._device = torch.device("cpu" if device is None else device)     # where the models were loaded
        self._policy = MemoryPolicy()
        self._hosts: dict[str, HostWeights] = {}     # pinned CPU homes while offloading
        # CUDA graphs kept from job to job (the sparse-structure flow's, see memory.pick_preset): model key ->
        # (the weights' addresses and dtypes they were captured with, GraphedFlow)
        self._kept_graphs: dict[str, tuple] = {}
        self.last_stats: list[dict] = []
        self.last_cfg_batch: dict[str, bool] = {}    # per flow stage of the last run: CFG as one batch of 2
        self.last_lean: dict[str, bool] = {}         # per SLat flow stage of the last run: lean mode
        for m in self._all_models().values():
            m.eval()
        self._apply_precision()

    def _all_models(self) -> dict:
        return {**self.models, self.COND_MODEL: getattr(self, self.COND_MODEL)}

    # ------------------------------------------------------------------ device and memory policy
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def memory_policy(self) -> MemoryPolicy:
        return self._policy.resolve(self._device)

    def to(self, device):
        self._device = torch.device(device)
        self._apply_precision()
        self._place_all()
        return self

    def cuda(self, device=None):
        return self.to("cuda" if device is None else device)

    def cpu(self):
        return self.to("cpu")

    def set_memory_policy(self, precision: str | None = None, offload: str | None = None,
                          cfg_batch: bool | str | None = None, cuda_graphs: bool | str | None = None,
                          compile: bool | str | None = None) -> MemoryPolicy:
        """Change precision / offload / CFG batching / CUDA graphs / compiled flow blocks at run time (no
        reload from disk). None keeps the current value; "auto" (for cfg_batch, cuda_graphs, compile) gives the
        choice back to the device (MemoryPolicy's None). The weights are placed anew (kept CUDA graphs dropped) only
        where the resolved policy changes or the models are offloaded."""
        current, before = self._policy, self.memory_policy

        def pick(new, old):
            return old if new is None else (None if new == "auto" else new)

        self._policy = MemoryPolicy(precision or current.precision, offload or current.offload,
                                    pick(cfg_batch, current.cfg_batch), pick(cuda_graphs, current.cuda_graphs),
                                    pick(compile, current.compile))
        self._apply_precision()
        # The same resident policy again (the app sets one before every job) leaves the weights where they are, and
        # so the CUDA graphs kept for them.
        if self.memory_policy != before or self._offloading():
            self._place_all()
        return self.memory_policy

    def _apply_precision(self) -> None:
        policy = self.memory_policy
        for model in self.models.values():
            model.set_torso_dtype(policy.dtype)       # the conditioner stays fp32 as in the reference
            if hasattr(model, "compile_blocks"):
                model.compile_blocks = bool(policy.compile)
            if hasattr(model, "lean"):                # the SLat flow's low-VRAM mode: same numbers, lower peak
                model.lean = self._lean_wanted(policy)

    def _lean_wanted(self, policy: MemoryPolicy) -> bool:
        if policy.offload != "model":
            return False
        free = free_device_memory(self._device)
        return free is None or free < LEAN_BELOW_FREE_BYTES

    def _lean_for_activations(self, stage: str, flow, noise, cfg_batch: bool) -> None:
        """Lean mode on, with the flow on the device while offloading, when its stage's activations would not fit in
        what is free (``activations_fit``); recorded in ``last_lean``."""
        if not flow.lean and self._offloading() and isinstance(noise, SparseTensor):
            rows = int(noise.feats.shape[0])            # every sample's tokens; a CFG batch doubles them
            flow.lean = not activations_fit(rows, 2 if cfg_batch else 1, flow_activation_bytes(flow), self._free_now())
        self.last_lean[stage] = bool(flow.lean)

    def _cfg_batch_for(self, flow, noise, policy: MemoryPolicy) -> bool:
        """The policy's CFG batching; when it is "auto" (``cfg_batch`` None) and the preset said no because the
        models are offloaded, whether the batch fits now, with the flow on the device (``cfg_batch_fits``)."""
        if policy.cfg_batch or self._policy.cfg_batch is not None or not self._offloading():
            return bool(policy.cfg_batch)
        return cfg_batch_fits(self._tokens(flow, noise), self._free_now(), bool(getattr(flow, "lean", False)))

    @staticmethod
    def _tokens(flow, noise) -> int:
        """Tokens per batch item of a flow's input: a sparse tensor's rows per item, a dense grid's patches."""
        if isinstance(noise, SparseTensor):
            return int(noise.feats.shape[0]) // max(1, noise.batch_size)
        patch = int(getattr(flow, "patch_size", 1))
        return int(torch.Size(noise.shape[2:]).numel()) // patch ** (noise.dim() - 2)

    def _free_now(self) -> int | None:
        return obtainable_device_memory(self._device)

    def _offloading(self) -> bool:
        return self.memory_policy.offload == "model" and self._device.type != "cpu"

    def _place_all(self) -> None:
        """Every model at its home: the compute device, or pinned CPU memory when offloading. Kept CUDA graphs are
        dropped (their memory pool freed): they replay the addresses of the weights and policy they were made with."""
        self.release_graphs()
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

    def release_graphs(self) -> None:
        """Drop the CUDA graphs kept from job to job (their memory pool returns to PyTorch's cache; the next job
        captures again)."""
        self._kept_graphs.clear()

    def keep_structure_graphs(self, made: KeptGraphs) -> bool:
        """Adopt graphs of the structure flow made before this pipeline was (``structure_graphs.capture``, beside
        the load) as the ones kept from job to job; only while its weights are where they were captured and the
        policy keeps that flow's graphs. Returns whether they were adopted."""
        key = "sparse_structure_flow_model"
        flow = self.models.get(key)
        if flow is None or made.graphed.model is not flow or made.weights != flow_weights(flow):
            return False
        if not self.memory_policy.keeps_graphs(self._device):
            return False
        self._kept_graphs[key] = (made.weights, made.graphed)
        return True

    KEPT_GRAPH_STAGES = ("sparse_structure",)   # flows whose inputs have the same shapes in every job

    def _graphs_for(self, stage: str, model_key: str, flow, policy: MemoryPolicy):
        """What the sampler's ``cuda_graph`` gets: a ``GraphedFlow`` kept on the pipeline (policy True or
        "structure", a stage in ``KEPT_GRAPH_STAGES``, resident on CUDA, eager blocks), True (new graphs for this
        run: policy True, other stages) or False. A kept one is replaced when the weights it replays are no longer
        the flow's (other addresses or dtypes). False under 8-bit attention: a graph replays the kernels it captured,
        and the 8-bit path's per-call tables are not capturable."""
        if attention_mode() != "exact":
            return False
        if stage not in self.KEPT_GRAPH_STAGES or not policy.keeps_graphs(self._device):
            return policy.cuda_graphs is True and not policy.compile and self._device.type == "cuda"
        weights = flow_weights(flow)
        kept = self._kept_graphs.get(model_key)
        if kept is None or kept[0] != weights or kept[1].model is not flow:
            kept = self._kept_graphs[model_key] = (weights, GraphedFlow(flow, kept=True))
        return kept[1]

    @staticmethod
    def _cache_context(policy: MemoryPolicy) -> bool:
        """Whether a flow run keeps what depends on its condition alone (the cross-attentions' keys and values,
        ~270 MiB for the SLat flow's CFG pair in fp16; ``modules.context_cache``): when the flows stay resident,
        not when the memory is short enough to offload."""
        return policy.offload == "none"

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
    def _sample(self, stage: str, sampler, model_key: str, defaults: dict, noise, cond: dict,
                sampler_params: dict | None, progress: StageProgress, cancel: CancelCheck, **sampler_kwargs):
        """Run one flow stage: pipeline.json params overridden by the caller's, memory policy applied."""
        params = {**defaults, **(sampler_params or {})}
        policy = self.memory_policy
        with self._on_device(model_key) as flow:
            cfg_batch = self.last_cfg_batch[stage] = self._cfg_batch_for(flow, noise, policy)
            if hasattr(flow, "lean"):
                self._lean_for_activations(stage, flow, noise, cfg_batch)
            return sampler.sample(
                flow, noise, **cond, **params, **sampler_kwargs, verbose=False, cancel=cancel,
                cfg_batch=cfg_batch, cuda_graph=self._graphs_for(stage, model_key, flow, policy),
                cache_context=self._cache_context(policy),
                progress=(lambda i, n: progress(stage, i, n)) if progress else None).samples

    @torch.no_grad()
    def sample_sparse_structure(self, cond: dict, num_samples: int = 1, sampler_params: dict | None = None,
                                generator: torch.Generator | None = None, progress: StageProgress = None,
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
            raise EmptyStructureError(f"The first stage found no occupied voxel, so there is no 3-D shape to "
                                      f"build. Try another seed, a stronger stage-1 guidance, or "
                                      f"{self.EMPTY_STRUCTURE_HINT}.")
        return coords

    @torch.no_grad()
    def sample_slat(self, cond: dict, coords: torch.Tensor, sampler_params: dict | None = None,
                    generator: torch.Generator | None = None, progress: StageProgress = None,
                    cancel: CancelCheck = None, **sampler_kwargs) -> SparseTensor:
        """Stage 2: the structured latent on `coords`, de-normalised (§11.5)."""
        flow = self.models["slat_flow_model"]
        if hasattr(flow, "lean"):
            flow.lean = self._lean_wanted(self.memory_policy)     # what is free now, before the flow loads
        feats = torch.randn(coords.shape[0], flow.in_channels, generator=generator).to(self._device)
        noise = SparseTensor(feats=feats, coords=coords.to(self._device))
        slat = self._sample("slat", self.slat_sampler, "slat_flow_model", self.slat_sampler_params, noise, cond,
                            sampler_params, progress, cancel, **sampler_kwargs)
        std = torch.tensor(self.slat_normalization["std"], device=self._device)[None]
        mean = torch.tensor(self.slat_normalization["mean"], device=self._device)[None]
        return slat * std + mean

    @torch.no_grad()
    def decode_slat(self, slat: SparseTensor, formats=DEFAULT_FORMATS, progress: StageProgress = None,
                    cancel: CancelCheck = None, tracker: StageTracker | None = None) -> dict:
        out = {}
        for i, fmt in enumerate(formats):
            if fmt not in DECODER_OF_FORMAT:
                raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(DECODER_OF_FORMAT)}")
            check(cancel)
            stage = tracker.stage(f"decode_{fmt}") if tracker else contextlib.nullcontext()
            with stage, self._on_device(DECODER_OF_FORMAT[fmt]) as decoder, checked_between_modules(decoder, cancel):
                out[fmt] = decoder(slat)
            if progress:
                progress("decode", i + 1, len(formats))
        return out

    # ------------------------------------------------------------------ generation
    def _generate(self, cond, num_samples, seed, ss_params, slat_params, formats, progress, cancel, tracker,
                  **sampler_kwargs) -> dict:
        generator = torch.Generator().manual_seed(seed)
        with tracker.stage("sparse_structure"):
            coords = self.sample_sparse_structure(cond, num_samples, ss_params, generator, progress, cancel,
                                                  **sampler_kwargs)
        with tracker.stage("slat"):
            slat = self.sample_slat(cond, coords, slat_params, generator, progress, cancel, **sampler_kwargs)
        return self.decode_slat(slat, formats, progress, cancel, tracker)

    def voxelize(self, mesh, up: str | None = None, cancel: CancelCheck = None) -> torch.Tensor:
        """A mesh (path, trimesh.Trimesh or Scene) -> int32 [N, 3] voxel indices at stage 2's resolution
        (64^3 for the published models), normalised as the reference does (text facts §5). `up`: the mesh's
        up axis, "y" or "z"; None goes by the format (glTF / OBJ y, STL / PLY and meshes given directly z)."""
        from ..representations.voxels import voxelize

        return voxelize(mesh, resolution=self.models["slat_flow_model"].resolution, up=up, cancel=cancel)

    def _generate_on_structure(self, cond, voxels: torch.Tensor, num_samples, seed, slat_params, formats, progress,
                               cancel, tracker) -> dict:
        """Stage 2 and the decoders on a given structure (stage 1 skipped): a variant of an existing shape."""
        voxels = voxels.to(torch.int32)
        batch = torch.arange(num_samples, dtype=torch.int32).repeat_interleave(voxels.shape[0])[:, None]
        coords = torch.cat([batch, voxels.repeat(num_samples, 1)], dim=1)
        generator = torch.Generator().manual_seed(seed)
        with tracker.stage("slat"):
            slat = self.sample_slat(cond, coords, slat_params, generator, progress, cancel)
        return self.decode_slat(slat, formats, progress, cancel, tracker)

    def _guarded(self, fn, *args, **kwargs):
        """Run a generation so that a cancel or an out-of-memory leaves no activation behind."""
        tracker = StageTracker(self._device)
        failure = None
        if bool(self._hosts) != self._offloading():
            self._place_all()           # the policy resolves otherwise than at placement (a VRAM budget set since)
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
