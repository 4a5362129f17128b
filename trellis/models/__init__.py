"""The networks of both model families and the model-level loader (spec §2.3-§2.5, §12; TRELLIS.2 facts §2.4,
§15.11, §17): TRELLIS v1's six, TRELLIS.2's flows and SC-VAEs (trellis.models.trellis2)."""
from __future__ import annotations

import contextlib
import errno
import importlib
import os
import threading

from ..core.inputfile import MAX_CONFIG_BYTES, InputFileError, open_regular, read_json_file

__all__ = ["SparseStructureFlowModel", "SparseStructureDecoder", "SLatFlowModel", "SLatGaussianDecoder",
           "SLatRadianceFieldDecoder", "SLatMeshDecoder", "MODEL_CLASSES", "from_pretrained", "from_config",
           "skipped_init", "load_weights", "WeightsFileError", "MissingWeightsFileError", "read_safetensors",
           "check_readable", "safetensors_spans", "read_config_json", "load_on", "model_class", "is_trellis2_flow", "castable"]

# Class name in a ckpt JSON -> module that defines it. Loaded lazily to keep `import trellis` light.
_CLASS_MODULES = {
    "SparseStructureFlowModel": ".sparse_structure_flow",
    "SparseStructureDecoder": ".sparse_structure_vae",
    "SLatFlowModel": ".structured_latent_flow",
    "SLatGaussianDecoder": ".structured_latent_vae",
    "SLatRadianceFieldDecoder": ".structured_latent_vae",
    "SLatMeshDecoder": ".structured_latent_vae",
    "FlexiDualGridVaeDecoder": ".trellis2.sc_vae",
    "SparseUnetVaeDecoder": ".trellis2.sc_vae",
    "FlexiDualGridVaeEncoder": ".trellis2.sc_vae",
    "SparseUnetVaeEncoder": ".trellis2.sc_vae",
}
MODEL_CLASSES = tuple(_CLASS_MODULES)
# TRELLIS.2's ckpt JSONs reuse v1's flow class names; their args tell the families apart (is_trellis2_flow).
_TRELLIS2_FLOW_MODULES = {
    "SparseStructureFlowModel": ".trellis2.flow",
    "SLatFlowModel": ".trellis2.flow",
}


def __getattr__(name):
    if name in _CLASS_MODULES:
        return getattr(importlib.import_module(_CLASS_MODULES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_trellis2_flow(args: dict | None) -> bool:
    """Whether a flow's ckpt args are TRELLIS.2's: its flows use RoPE (pe_mode "rope"), v1's an absolute
    position embedding ("ape", also v1's default)."""
    return bool(args) and args.get("pe_mode") == "rope"


def model_class(name: str, args: dict | None = None):
    """The class a ckpt JSON's "name" (and, for the flow names both families use, its "args") builds."""
    # The training configs name the activation-checkpointing variants "Elastic<X>": same parameters.
    base = name[len("Elastic"):] if name.startswith("Elastic") else name
    if base not in _CLASS_MODULES:
        raise ValueError(f"unknown model class {name!r}; known: {', '.join(MODEL_CLASSES)}")
    if base in _TRELLIS2_FLOW_MODULES and is_trellis2_flow(args):
        return getattr(importlib.import_module(_TRELLIS2_FLOW_MODULES[base], __name__), base)
    return __getattr__(base)


def from_config(config: dict, init: bool = True):
    """Build a model from a ckpt JSON dict {"name", "args"}: random weights, or with ``init=False`` weights
    left unset (uninitialised memory) for a caller that loads every parameter and buffer next (strict)."""
    cls = model_class(config["name"], config.get("args"))
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
    """Raise WeightsFileError unless `path` is a regular file that opens and reads (the real reason: missing,
    permission denied, a folder, a pipe or a device: refused before it is opened, so a FIFO never blocks)."""
    try:
        with open_regular(path) as f:
            f.read(1)
    except FileNotFoundError:
        raise MissingWeightsFileError(path, "the file is missing", errno.ENOENT) from None
    except InputFileError as err:
        raise WeightsFileError(path, f"it {err.reason}") from None
    except OSError as err:
        raise WeightsFileError(path, err.strerror or str(err), err.errno) from None


def read_safetensors(path) -> dict:
    """The tensors of a .safetensors file on the CPU. WeightsFileError names the file and why it cannot be
    read (safetensors itself says "No such file or directory" for any file it cannot open)."""
    from safetensors.torch import load_file

    check_readable(path)
    safetensors_spans(path)            # names the tensor at fault in a damaged or cut-short file
    try:
        return load_file(path, device="cpu")
    except Exception as err:           # SafetensorError (truncated, corrupt header), OSError
        raise WeightsFileError(path, f"the file is damaged or incomplete ({err})") from None


def safetensors_spans(path) -> dict:
    """The tensors a .safetensors file's header lists, {name: (dtype, shape, start, end)}, its data not read.
    WeightsFileError for a file that is not a regular one, or whose header is damaged, cut short or far too long."""
    from .device_load import tensor_spans

    try:
        with open_regular(path) as f:
            return tensor_spans(f, path)[0]
    except InputFileError as err:
        raise WeightsFileError(path, f"it {err.reason}") from None


def castable(source, target) -> bool:
    """Whether a file's tensor of dtype `source` may be cast on load into a parameter of dtype `target`: floating
    into floating (the TRELLIS.2 files are all bf16 or all fp16, their norms and outer layers fp32 in memory),
    otherwise the same dtype."""
    return source == target or (source.is_floating_point and target.is_floating_point)


def load_weights(model, path: str, strict: bool = True, state: dict | None = None):
    """Copy a safetensors file (or `state`, its tensors already read) into `model` (each tensor cast to the
    parameter's dtype), strict keys. The state-dict entries a network computes itself (its `computed_buffers`,
    e.g. RoPE phases) are neither needed from the file nor read from it."""
    expected = model.state_dict()
    computed = set(getattr(model, "computed_buffers", ()))
    if state is None:
        if strict:                   # the header's names checked first: a file of other tensors is not read
            check_names(model, path, safetensors_spans(path), expected, computed)
        state = read_safetensors(path)
    if computed:
        state = {k: v for k, v in state.items() if k not in computed}
    if strict:
        check_names(model, path, state, expected, computed)
    bad = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        raise ValueError(f"{path}: tensor {k} has shape {tuple(state[k].shape)}, "
                         f"the model expects {tuple(expected[k].shape)} (wrong config for these weights?)")
    bad = [k for k in state if k in expected and not castable(state[k].dtype, expected[k].dtype)]
    if bad:
        k = bad[0]
        raise ValueError(f"{path}: tensor {k} is {str(state[k].dtype).replace('torch.', '')}, the model holds "
                         f"{str(expected[k].dtype).replace('torch.', '')} there (not a weights file of this network?)")
    model.load_state_dict(state, strict=strict and not computed)
    return model


def check_names(model, path, names, expected: dict, computed: set) -> None:
    """ValueError unless the tensor `names` of `path` are `model`'s state dict's (less the ones it computes)."""
    missing = sorted(set(expected) - set(names) - computed)
    unexpected = sorted(set(names) - set(expected) - computed)
    if missing or unexpected:
        raise ValueError(f"{path} does not match {type(model).__name__}: "
                         f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                         f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")


def read_config_json(path) -> dict:
    """A model's config (a ckpt JSON, a pipeline.json): a regular file of at most MAX_CONFIG_BYTES, nested no
    deeper than MAX_JSON_DEPTH. InputFileError (an OSError and a ValueError) names the file and what is wrong."""
    return read_json_file(path, MAX_CONFIG_BYTES, what="a model's config")


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
    config = read_config_json(config_file)
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
