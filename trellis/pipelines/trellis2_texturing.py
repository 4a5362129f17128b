"""A mesh + an image -> PBR materials on that mesh, with TRELLIS.2 (TRELLIS2_TEXTURING_FACTS.md §1-§8).

    pipeline = Trellis2TexturingPipeline.from_pretrained("path/to/TRELLIS.2-4B")
    result = pipeline.run("chair.glb", image, seed=42, resolution=1024, texture_size=2048)   # TexturedVoxels
    textured = bake_onto_user_mesh(result)              # trellis.export.pbr.onto_mesh
    textured.save("chair_textured.glb")                 # the user's vertices, faces and UVs, PBR maps

Data path (§1): the image preprocessed and encoded by DINOv3 (512 px at R = 512, else 1024) as image -> 3-D does;
the mesh put in the internal frame (trellis2_texturing_mesh) and turned into an O-Voxel at R^3
(representations.ovoxel.mesh_to_ovoxel: seams welded for its boundary term); the shape SC-VAE encoder's mean
latent on the (R/16)^3 grid; the texture flow (512 iff R = 512, else 1024) from noise drawn on the CPU from a
generator seeded with ``seed`` (the only draw), the normalised shape latent appended at every step; the texture
decoder along the encoder's own levels (every O-Voxel gets its 6 attributes). The export bakes them onto the
user's mesh (export.pbr.onto_mesh: the library's layers keep the bake out of the pipelines). Unlike the reference, the user's UVs are kept when usable and the result
stays at the user's position, scale and up axis, with the user's vertices and faces.

The networks, devices, precision and offload follow the image pipeline's policy (this class reuses its
conditioning, texture sampling and memory handling).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ..core.callbacks import CancelCheck, StageProgress, check
from ..modules.sparse import SparseTensor
from ..representations.ovoxel import (MeshFrame, MeshWithVoxel, TexturedVoxels, VoxelLookup, mesh_to_ovoxel,
                                      ovoxel_features, pbr_attributes, read_user_mesh)
from .base import TrellisPipeline
from .trellis2_image_to_3d import Trellis2ImageTo3DPipeline
from .trellis2_loading import load_conditioner
from .trellis2_texturing_config import load_texturing_parts, read_texturing_config
from .trellis2_texturing_guide import guide_subdivisions

__all__ = ["Trellis2TexturingPipeline", "RUN_STAGES"]

# The stages of run(), in order, as last_stats and progress name them.
RUN_STAGES = ("preprocess", "condition", "voxelize", "encode", "tex_slat", "decode")
SS_LEVELS = 4                     # the SC-VAEs' S2C / C2S levels: latent grid = R / 16


class Trellis2TexturingPipeline(Trellis2ImageTo3DPipeline):
    # The resolutions the app offers (any R >= 16 runs; §3.2).
    RESOLUTIONS = (512, 1024, 1536)
    PIPELINE_TYPES = ()
    # Least VRAM budget (GiB) per pipeline type: none of its own; the app holds a look to its family's floors, which
    # the texturing run at R = 1024 stays under (docs/benchmarks/texturing.md, the 8 GiB row).
    VRAM_FLOORS: dict = {}
    PROGRESS_STAGES = RUN_STAGES
    # Free memory from which "auto" keeps every network resident (half precision, fp32): two 1.3 B bf16 flows,
    # the fp16 encoder and decoder and fp32 DINOv3 are ~8 GB, plus the decoder's working set at R = 1536.
    RESIDENT_BUDGETS = (16 * 2 ** 30, 28 * 2 ** 30)
    EMPTY_STRUCTURE_HINT = "a mesh with a surface inside the grid"

    def __init__(self, models: dict, tex_slat_sampler, tex_slat_sampler_params: dict, shape_slat_normalization: dict,
                 tex_slat_normalization: dict, image_cond_model, device=None):
        self.image_cond_model = image_cond_model
        self._remover = None
        self._native_dtypes = {key: getattr(m, "dtype", None) for key, m in models.items()}
        self.tex_slat_sampler = tex_slat_sampler
        self.tex_slat_sampler_params = dict(tex_slat_sampler_params or {})
        self.tex_slat_normalization = tex_slat_normalization
        self.default_pipeline_type = "1024"
        TrellisPipeline.__init__(self, models, None, None, shape_slat_normalization, device=device)

    @classmethod
    def from_pretrained(cls, path: str, config_file: str | None = None, search_dirs=(), device=None,
                        on_model: Optional[Callable[[str, torch.nn.Module], None]] = None,
                        download_conditioner: bool = False) -> "Trellis2TexturingPipeline":
        """A TRELLIS.2 folder: its texturing_pipeline.json (``config_file`` names another), else its
        pipeline.json's texture networks and the shape encoder at its published stem. The rest as
        ``Trellis2ImageTo3DPipeline.from_pretrained``."""
        args, _ = read_texturing_config(path, config_file)
        into = cls.weights_device(device)
        cond_model = load_conditioner(path, args["image_cond_model"], search_dirs, device=into,
                                      download=download_conditioner)
        if on_model is not None:
            on_model(cls.COND_MODEL, cond_model)
        parts = load_texturing_parts(path, args, search_dirs, device=into, on_model=on_model)
        pipeline = cls(image_cond_model=cond_model, device=into, **parts)
        return pipeline if device is None else pipeline.to(device)

    @staticmethod
    def flow_key(resolution: int) -> str:
        return "tex_slat_flow_model_512" if resolution == 512 else "tex_slat_flow_model_1024"

    # ------------------------------------------------------------------ stages
    @torch.no_grad()
    def voxelize_mesh(self, internal_vertices, faces, resolution: int, cancel: CancelCheck = None):
        """The O-Voxel (``OVoxelGrid``) of the mesh in the internal frame, on the pipeline's device."""
        v = torch.as_tensor(internal_vertices, dtype=torch.float64, device=self._device)
        f = torch.as_tensor(faces, dtype=torch.int64, device=self._device)
        grid = mesh_to_ovoxel(v, f, resolution, cancel=cancel)
        if grid.coords.shape[0] == 0:
            raise ValueError(f"the mesh crosses no edge of the {resolution}^3 grid (nothing to texture): "
                             f"use {self.EMPTY_STRUCTURE_HINT}")
        return grid

    @torch.no_grad()
    def encode_shape_slat(self, grid) -> SparseTensor:
        """The shape encoder's mean latent [N, 32] on the (R/16)^3 grid (lexicographic rows)."""
        coords = torch.cat([torch.zeros_like(grid.coords[:, :1]), grid.coords], 1).int().to(self._device)
        x = SparseTensor(ovoxel_features(grid).to(self._device), coords)
        with self._on_device("shape_slat_encoder") as encoder:
            return encoder(x)

    @torch.no_grad()
    def decode_tex_slat(self, tex_slat: SparseTensor, grid) -> torch.Tensor:
        """float32 [N_fine, 6]: the texture decoder's attributes (0.5 o + 0.5) in the O-Voxel's row order,
        decoded along the encoder's own subdivision (``guide_subdivisions``)."""
        subs, _ = guide_subdivisions(tex_slat.coords, grid.coords.to(tex_slat.device), SS_LEVELS)
        with self._on_device("tex_slat_decoder") as decoder:
            out = decoder(tex_slat, guide_subs=subs)
        del subs
        rows = VoxelLookup(out.coords[:, 1:]).find(grid.coords.to(out.device))
        if bool((rows < 0).any()) or out.feats.shape[0] != grid.coords.shape[0]:
            raise RuntimeError("the texture decoder did not rebuild the O-Voxel's voxels")
        return pbr_attributes(out.feats[rows])

    # ------------------------------------------------------------------ entry point
    def run(self, mesh, image, seed: int = 42, tex_slat_sampler_params: dict | None = None,
            preprocess_image: bool = True, resolution: int = 1024, texture_size: int = 2048, *, up: str = "y",
            new_uvs: bool = False, progress: StageProgress = None, cancel: CancelCheck = None) -> TexturedVoxels:
        """``mesh`` (a trimesh mesh or scene, a path, or (vertices, faces[, uvs])) + ``image`` -> a
        ``TexturedVoxels``: the user's mesh as given, its frame and the decoded O-Voxel (``MeshWithVoxel`` with its
        PBR attributes, internal frame, z up), for ``export.pbr.onto_mesh.bake_onto_user_mesh`` (``texture_size``
        and ``new_uvs`` are its defaults). ``up``: the mesh's up axis ("y": glTF, OBJ; "z").
        ``progress(stage, i, n)`` hears RUN_STAGES (and the flow's steps under "tex_slat"); ``last_stats`` then
        holds each stage's seconds and peak memory."""
        if int(resolution) < 16:
            raise ValueError(f"resolution must be at least 16 (the latent grid is R / 16), got {resolution}")
        resolution = int(resolution)
        if self.flow_key(resolution) not in self.models:
            raise ValueError(f"this TRELLIS.2 folder has no {self.flow_key(resolution)} (its config names none): "
                             f"use another resolution or download the full model")
        user = read_user_mesh(mesh)
        frame = MeshFrame.of(user, up)
        internal = frame.internal(user.vertices)

        def go(tracker):
            def stage(name):
                return self.stage(tracker, name)

            def done(name):
                if progress:
                    progress(name, 1, 1)

            with stage("preprocess"):
                img = self._input_image(image, preprocess_image)
            done("preprocess")
            with stage("condition"):
                cond = self.get_cond([img], 512 if resolution == 512 else 1024)
            del img
            done("condition")
            check(cancel)
            with stage("voxelize"):
                grid = self.voxelize_mesh(internal, user.faces, resolution, cancel)
            done("voxelize")
            check(cancel)
            with stage("encode"):
                shape = self.encode_shape_slat(grid)
            done("encode")
            check(cancel)
            generator = torch.Generator().manual_seed(seed)
            with stage("tex_slat"):
                tex = self.sample_tex_slat(cond, self.flow_key(resolution), shape, tex_slat_sampler_params,
                                           generator, progress, cancel)
            tokens = shape.feats.shape[0]
            del cond, shape
            check(cancel)
            with stage("decode"):
                attrs = self.decode_tex_slat(tex, grid)
            del tex
            done("decode")
            dev = attrs.device
            voxels = MeshWithVoxel(torch.zeros(0, 3, device=dev), torch.zeros(0, 3, dtype=torch.long, device=dev),
                                   grid.coords.to(dev), resolution, attrs)
            info = {"frame": {"up": frame.up, "centre": frame.centre.tolist(), "scale": frame.scale},
                    "resolution": resolution, "voxels": int(grid.coords.shape[0]), "tokens": int(tokens)}
            return TexturedVoxels(user, frame, voxels, int(texture_size), bool(new_uvs), info)
        return self._guarded(go)
