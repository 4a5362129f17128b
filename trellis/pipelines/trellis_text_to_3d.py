"""Text -> 3-D asset: the TRELLIS text pipelines (text-base / -large / -xlarge), and new looks for a shape.

    pipeline = TrellisTextTo3DPipeline.from_pretrained("microsoft/TRELLIS-text-xlarge")   # or a folder
    pipeline.cuda()
    outputs = pipeline.run("a red wooden chair", seed=1)         # {'gaussian': [...], 'mesh': [...], ...}
    variant = pipeline.run_variant("chair.glb", "a chair made of gold")

The published text repos hold only their two flows; pipeline.json names the image-large decoders by
`<owner>/<repo>/<path>` and the text encoder by its repo ("openai/clip-vit-large-patch14"): both are
found beside the pipeline folder, in $TRELLIS_MODEL_DIR, in the Hugging Face cache, or downloaded
(model_sources.py). Condition (text facts §3): CLIP's `last_hidden_state` of the prompt tokenized to 77
tokens; the negative is the same for the empty prompt. After the condition everything (stages, memory
policy, RNG order) is the image pipeline's, in `base.py`.
"""
from __future__ import annotations

import warnings

import torch

from .base import DEFAULT_FORMATS, TrellisPipeline, load_pipeline_parts, read_pipeline_config
from .memory import StageTracker
from .model_sources import find_repo_folder
from ..core.callbacks import CancelCheck, StageProgress

__all__ = ["TrellisTextTo3DPipeline", "PromptTruncatedWarning", "load_text_cond_model"]


class PromptTruncatedWarning(UserWarning):
    """The prompt is longer than CLIP's 77 tokens; the rest was not used (the reference cuts silently)."""


def load_text_cond_model(root: str, name: str, search_dirs=()):
    """The text conditioner named in pipeline.json: a CLIP folder (config.json, model.safetensors, tokenizer)."""
    from ..models.clip_text import TextConditioner

    return TextConditioner.from_folder(find_repo_folder(name, root, search_dirs,
                                                        must_have=("config.json", "model.safetensors")))


class TrellisTextTo3DPipeline(TrellisPipeline):
    COND_MODEL = "text_cond_model"
    EMPTY_STRUCTURE_HINT = "a prompt that describes one object"

    def __init__(self, models: dict, sparse_structure_sampler, slat_sampler, slat_normalization: dict,
                 text_cond_model, sparse_structure_sampler_params: dict | None = None,
                 slat_sampler_params: dict | None = None):
        self.text_cond_model = text_cond_model
        self._null_cond: torch.Tensor | None = None
        super().__init__(models, sparse_structure_sampler, slat_sampler, slat_normalization,
                         sparse_structure_sampler_params, slat_sampler_params)
        self._null_cond = self.encode_text([""])      # the negative, computed once as the reference does

    @classmethod
    def from_pretrained(cls, path: str, search_dirs=()) -> "TrellisTextTo3DPipeline":
        """A text pipeline folder or hub repo id. `search_dirs`: folders holding the other repos its
        pipeline.json names (TRELLIS-image-large's decoders, the CLIP text encoder), searched before the
        folder's parent, $TRELLIS_MODEL_DIR, the Hugging Face cache and the hub."""
        args = read_pipeline_config(path, "TrellisTextTo3DPipeline")["args"]
        parts = load_pipeline_parts(path, args, search_dirs)
        return cls(text_cond_model=load_text_cond_model(path, args["text_cond_model"], search_dirs), **parts)

    def to(self, device):
        super().to(device)
        if self._null_cond is not None:
            self._null_cond = self._null_cond.to(self._device)
        return self

    # ------------------------------------------------------------------ condition
    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> CLIP last_hidden_state [B, 77, width] (fp32), on the pipeline's device."""
        with self._on_device("text_cond_model") as encoder:
            cond = encoder(list(prompts))
        cut = [p for p, t in zip(prompts, encoder.last_truncated) if t]
        if cut:
            warnings.warn(f"{len(cut)} prompt(s) longer than CLIP's 77 tokens; only the start was used: "
                          f"{cut[0][:60]!r}...", PromptTruncatedWarning, stacklevel=3)
        return cond

    def get_cond(self, prompts: list[str]) -> dict:
        """{'cond': the prompts' embeddings, 'neg_cond': the empty prompt's} (text facts §3)."""
        return {"cond": self.encode_text(prompts), "neg_cond": self._null_cond.to(self._device)}

    def _cond_for(self, prompt: str, progress: StageProgress, tracker: StageTracker) -> dict:
        if not isinstance(prompt, str):
            raise TypeError(f"the prompt must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise ValueError("The prompt is empty: describe the object to make (e.g. 'a red wooden chair').")
        with tracker.stage("condition"):
            cond = self.get_cond([prompt])
        if progress:
            progress("condition", 1, 1)
        return cond

    # ------------------------------------------------------------------ entry points
    def run(self, prompt: str, num_samples: int = 1, seed: int = 42,
            sparse_structure_sampler_params: dict | None = None, slat_sampler_params: dict | None = None,
            formats=DEFAULT_FORMATS, progress: StageProgress = None, cancel: CancelCheck = None) -> dict:
        """One prompt -> {'mesh': [MeshExtractResult], 'gaussian': [Gaussian], 'radiance_field': [Strivec]}."""
        def go(tracker):
            cond = self._cond_for(prompt, progress, tracker)
            return self._generate(cond, num_samples, seed, sparse_structure_sampler_params, slat_sampler_params,
                                  list(formats), progress, cancel, tracker)
        return self._guarded(go)

    def run_variant(self, mesh, prompt: str, num_samples: int = 1, seed: int = 42,
                    slat_sampler_params: dict | None = None, formats=DEFAULT_FORMATS, progress: StageProgress = None,
                    cancel: CancelCheck = None, up: str | None = None) -> dict:
        """A new look for an existing shape: stage 2 conditioned on `prompt`, on the voxels of `mesh` (a path
        to a GLB / OBJ / PLY / STL, a trimesh.Trimesh or Scene); stage 1 is skipped (text facts §5). `up`: the
        mesh's up axis, "y" or "z"; None goes by the format (see `voxelize`)."""
        voxels = self.voxelize(mesh, up=up, cancel=cancel)

        def go(tracker):
            cond = self._cond_for(prompt, progress, tracker)
            return self._generate_on_structure(cond, voxels, num_samples, seed, slat_sampler_params, list(formats),
                                               progress, cancel, tracker)
        return self._guarded(go)
