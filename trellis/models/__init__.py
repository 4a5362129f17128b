"""The six TRELLIS networks and the model-level loader (spec §2.3-§2.5, §12)."""
from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import threading

__all__ = ["SparseStructureFlowModel", "SparseStructureDecoder", "SLatFlowModel", "SLatGaussianDecoder",
           "SLatRadianceFieldDecoder", "SLatMeshDecoder", "MODEL_CLASSES", "from_pretrained", "from_config",
           "skipped_init", "load_weights", "WeightsFileError", "MissingWeightsFileError", "read_safetensors", "check_readable",
           "load_on"]

# Class name in a ckpt JSON -> module that defines it. Loaded lazily to keep `import trellis` light.
_CLASS_MODULES = {
    "SparseStructureFlowModel": ".sparse_structure_flow",
    "SparseStructureDecoder": ".sparse_structure_vae",
    "SLatFlowModel": ".structured_latent_flow",
    "SLatGaussianDecoder": ".structured_latent_vae",
    "SLatRadianceFieldDecoder": ".structured_latent_vae",
    "SLatMeshDecoder": ".structured_latent_vae",
}
MODEL_CLASSES = tuple(_CLASS_MODULES)


def __getattr__(name):
    if name in _CLASS_MODULES:
        return getattr(importlib.import_module(_CLASS_MODULES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def model_class(name: str):
    # The training configs name the activation-checkpointing variants "Elastic<X>": same parameters.
    base = name[len("Elastic"):] if name.startswith("Elastic") else name
    if base not in _CLASS_MODULES:
        raise ValueError(f"unknown model class {name!r}; known: {', '.join(MODEL_CLASSES)}")
    return __getattr__(base)


def from_config(config: dict, init: bool = True):
    """Build a model from a ckpt JSON dict {"name", "args"}: random weights, or with ``init=False`` weights
    left unset (uninitialised memory) for a caller that loads every parameter and buffer next (strict)."""
    cls = model_class(config["name"])
    if init:
        return cls(**config["args"])
    with skipped_init():
        return cls(**config["args"])


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                   "sparse_")
_init_lock = threading.RLock()


@contextlib.contextmanager
def skipped_init():
    """Modules built inside skip torch.nn.init's random initialisation (most of a large flow's build time on a
    few CPU cores; docs/benchmarks/app.md#launch-to-first-glb), for weights that are loaded right after.
    Process-wide while it lasts (torch.nn.init's functions are swapped for ones that return the tensor untouched);
    builds go one at a time."""
    import torch.nn.init as init

    def untouched(tensor, *args, **kwargs):
        return tensor

    with _init_lock:
        saved = {name: getattr(init, name) for name in _INIT_FUNCTIONS if hasattr(init, name)}
        try:
            for name in saved:
                setattr(init, name, untouched)
            yield
        finally:
            for name, fn in saved.items():
                setattr(init, name, fn)


class WeightsFileError(OSError):
    """A model file that is missing, cannot be read or is damaged: "cannot read <file>: <reason>".
    `path` and `reason` let an app add how to get the file again."""

    def __init__(self, path, reason: str, code: int | None = None):
        super().__init__(f"cannot read {path}: {reason}")
        self.path, self.reason = os.fspath(path), reason
        self.errno = code               # e.g. errno.EACCES: the file is there, this user may not read it

    def __str__(self) -> str:
        return self.args[0]


class MissingWeightsFileError(WeightsFileError, FileNotFoundError):
    """A model file that is not there at all."""


def check_readable(path) -> None:
    """Raise WeightsFileError unless `path` is a file that opens and reads (the real reason: missing,
    permission denied, a folder, ...)."""
    try:
        with open(path, "rb") as f:
            f.read(1)
    except FileNotFoundError:
        raise MissingWeightsFileError(path, "the file is missing", errno.ENOENT) from None
    except OSError as err:
        raise WeightsFileError(path, err.strerror or str(err), err.errno) from None


def read_safetensors(path) -> dict:
    """The tensors of a .safetensors file on the CPU. WeightsFileError names the file and why it cannot be
    read (safetensors itself says "No such file or directory" for any file it cannot open)."""
    from safetensors.torch import load_file

    check_readable(path)
    try:
        return load_file(path, device="cpu")
    except Exception as err:           # SafetensorError (truncated, corrupt header), OSError
        raise WeightsFileError(path, f"the file is damaged or incomplete ({err})") from None


def load_weights(model, path: str, strict: bool = True, state: dict | None = None):
    """Copy a safetensors file (or `state`, its tensors already read) into `model` (each tensor cast to the
    parameter's dtype), strict keys."""
    state = read_safetensors(path) if state is None else state
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if strict and (missing or unexpected):
        raise ValueError(f"{path} does not match {type(model).__name__}: "
                         f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                         f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    bad = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        raise ValueError(f"{path}: tensor {k} has shape {tuple(state[k].shape)}, "
                         f"the model expects {tuple(expected[k].shape)} (wrong config for these weights?)")
    model.load_state_dict(state, strict=strict)
    return model


def _resolve_files(path: str) -> tuple[str, str]:
    """Local `<path>.json` + `<path>.safetensors`, else `<owner>/<repo>/<stem>` on the Hugging Face hub."""
    if os.path.exists(path + ".json") and os.path.exists(path + ".safetensors"):
        return path + ".json", path + ".safetensors"
    parts = path.replace("\\", "/").split("/")
    if len(parts) < 3 or os.path.isabs(path) or os.path.exists(parts[0]):
        if os.path.isdir(os.path.dirname(path) or "."):     # a model folder that lacks (or hides) a file
            for file in (path + ".json", path + ".safetensors"):
                try:
                    check_readable(file)
                except MissingWeightsFileError:
                    raise MissingWeightsFileError(file, f"the file is missing (expected {path}.json and "
                                                        f"{path}.safetensors)", errno.ENOENT) from None
        raise FileNotFoundError(f"no model at {path!r}: expected {path}.json and {path}.safetensors "
                                f"(or a Hugging Face path <owner>/<repo>/<file stem>)")
    from huggingface_hub import hf_hub_download

    repo, stem = "/".join(parts[:2]), "/".join(parts[2:])
    return hf_hub_download(repo, stem + ".json"), hf_hub_download(repo, stem + ".safetensors")


def from_pretrained(path: str, device=None, **overrides):
    """Load a model from `<path>.json` ({"name", "args"}) and `<path>.safetensors` (spec §12), on the CPU or
    (`device`) built and filled straight on that device (load_on).

    `overrides` replace constructor args (e.g. use_fp16=False to run the whole model in fp32).
    """
    config_file, weights_file = _resolve_files(path)
    check_readable(config_file)
    with open(config_file, encoding="utf-8") as f:
        config = json.load(f)
    config = {"name": config["name"], "args": {**config["args"], **overrides}}
    return load_on(config, weights_file, device)


def load_on(config: dict, weights_file: str, device=None):
    """The model of a ckpt JSON dict with `weights_file`'s weights. No `device` (or the CPU without a wish to
    change): built on the CPU and filled (load_weights). A device: built there in uninitialised memory and filled
    from the file read straight into it (device_load), the same tensors as building on the CPU and moving."""
    if device is None:
        return load_weights(from_config(config, init=False), weights_file)
    import torch

    from .device_load import build_on, read_safetensors_to

    device = torch.device(device)
    with skipped_init():
        model = build_on(lambda: from_config(config, init=True), device)
    if device.type == "cuda":
        check_readable(weights_file)
        return load_weights(model, weights_file, state=read_safetensors_to(weights_file, device))
    return load_weights(model, weights_file)
