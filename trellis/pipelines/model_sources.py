"""Where a pipeline.json's entries are found: the pipeline folder, another repo's folder, or the hub.

A published text pipeline names its own flows by a path inside its folder ("ckpts/ss_flow_txt_...") and the
image pipeline's decoders by a path into another repo ("JeffreyXiang/TRELLIS-image-large/ckpts/ss_dec_...");
its text encoder is a whole repo ("openai/clip-vit-large-patch14"). Another repo `<owner>/<name>` is looked
for, in order:
  1. in the search folders: those the caller passes, the pipeline folder's parent (repos downloaded side by
     side) and $TRELLIS_MODEL_DIR (the app's model cache), each as `<name>`, `<owner>--<name>` or
     `<owner>/<name>`; TRELLIS repos also under a mirror owner's name (the mirrors hold the same files);
  2. in the Hugging Face cache (no network);
  3. downloaded from the hub, unless the hub is switched off (HF_HUB_OFFLINE=1).
"""
from __future__ import annotations

import os

# The same TRELLIS checkpoints are published under these owners.
MIRROR_OWNERS = ("microsoft", "JeffreyXiang", "jetx")
CLIP_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.json", "merges.txt",
              "special_tokens_map.json", "tokenizer_config.json")


class ModelNotFoundError(FileNotFoundError):
    """A model the pipeline names is neither on disk nor downloadable; the message says where it looked."""


def resolve_pipeline_json(path: str) -> str:
    local = os.path.join(path, "pipeline.json")
    if os.path.exists(local):
        return local
    if os.path.isdir(path) or os.path.isabs(path) or path.startswith("."):
        raise FileNotFoundError(f"{path} has no pipeline.json: is this a TRELLIS pipeline folder?")
    from huggingface_hub import hf_hub_download

    return hf_hub_download(path, "pipeline.json")


def search_dirs(root: str, extra=()) -> list[str]:
    dirs = [os.fspath(d) for d in extra]
    if os.path.isdir(root):
        dirs.append(os.path.dirname(os.path.abspath(root)))
    if os.environ.get("TRELLIS_MODEL_DIR"):
        dirs.append(os.environ["TRELLIS_MODEL_DIR"])
    return dirs


def split_repo_path(value: str):
    """'owner/name/some/path' -> ('owner/name', 'some/path'); None when `value` is not of that form."""
    parts = value.replace("\\", "/").split("/")
    if len(parts) < 3 or not parts[0] or not parts[1] or os.path.isabs(value) or parts[0] in (".", ".."):
        return None
    return f"{parts[0]}/{parts[1]}", "/".join(parts[2:])


def local_repo_folders(repo: str, dirs) -> list[str]:
    """Existing folders in `dirs` that may hold a copy of `repo`, best first."""
    owner, name = repo.split("/")
    owners = [owner] + ([o for o in MIRROR_OWNERS if o != owner] if name.startswith("TRELLIS") else [])
    found = []
    for d in dirs:
        for cand in [os.path.join(d, name)] + [os.path.join(d, f"{o}--{name}") for o in owners] + \
                    [os.path.join(d, o, name) for o in owners]:
            if os.path.isdir(cand) and cand not in found:
                found.append(cand)
    return found


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def load_model(root: str, value: str, dirs=(), device=None):
    """A pipeline.json `models` entry as a loaded network, on the CPU or built and filled on `device`."""
    from .. import models as model_zoo

    own = f"{root}/{value}"
    split = split_repo_path(value)
    if split is None or os.path.exists(own + ".json"):
        # A path in the pipeline folder (or, for a pipeline on the hub, in its repo).
        return model_zoo.from_pretrained(own, device=device)
    repo, stem = split
    searched = search_dirs(root, dirs)
    for folder in local_repo_folders(repo, searched):
        prefix = os.path.join(folder, stem)
        if os.path.exists(prefix + ".json"):
            return model_zoo.from_pretrained(prefix, device=device)
    try:
        config_file, weights_file = (_hub_file(repo, stem + ext) for ext in (".json", ".safetensors"))
    except Exception as err:       # offline, no such repo, proxy, ...
        raise ModelNotFoundError(
            f"{value} (named in {root}/pipeline.json) is not in {_where(searched)} and could not be downloaded "
            f"({_short(err)}). Download {repo} (at least {stem}.json and .safetensors) and put it next to "
            f"{os.path.basename(os.path.normpath(root))} or in TRELLIS_MODEL_DIR as '{repo.split('/')[1]}', "
            f"or connect to the internet.") from None
    config = model_zoo.read_config_json(config_file)
    return model_zoo.load_on(config, weights_file, device)


def _hub_file(repo: str, filename: str) -> str:
    """The hub cache's copy of a file, else downloaded (unless the hub is switched off)."""
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo, filename, local_files_only=True)
    except Exception:
        if _hub_offline():
            raise ModelNotFoundError("the Hugging Face hub is switched off (HF_HUB_OFFLINE) and the file is not "
                                     "in its cache") from None
    return hf_hub_download(repo, filename)


def find_repo_folder(name: str, root: str, dirs=(), must_have=("config.json",), allow_patterns=CLIP_FILES) -> str:
    """A whole repo named in pipeline.json (e.g. the text encoder): its local folder, else the hub's copy."""
    inside = os.path.join(root, name)
    candidates = [inside] if os.path.isdir(inside) else []
    searched = search_dirs(root, dirs)
    if split_repo_path(name + "/x") is not None and name.count("/") == 1:
        candidates += local_repo_folders(name, searched)
    for folder in candidates:
        if all(os.path.exists(os.path.join(folder, f)) for f in must_have):
            return folder
    if name.count("/") != 1:
        raise ModelNotFoundError(f"{name!r} (named in {root}/pipeline.json) is not a folder with "
                                 f"{', '.join(must_have)}")
    from huggingface_hub import snapshot_download

    def complete(folder):
        if not all(os.path.exists(os.path.join(folder, f)) for f in must_have):
            raise ModelNotFoundError(f"the cached copy lacks {', '.join(must_have)}")
        return folder

    try:
        try:
            return complete(snapshot_download(name, allow_patterns=list(allow_patterns), local_files_only=True))
        except Exception:
            if _hub_offline():
                raise ModelNotFoundError("the Hugging Face hub is switched off (HF_HUB_OFFLINE) and the repo is "
                                         "not in its cache") from None
            return complete(snapshot_download(name, allow_patterns=list(allow_patterns)))
    except Exception as err:
        raise ModelNotFoundError(
            f"{name} (named in {root}/pipeline.json) is not in {_where(searched)} and could not be downloaded "
            f"({_short(err)}). Download {name} ({', '.join(must_have)} and the tokenizer files) into a folder "
            f"'{name.split('/')[1]}' next to the pipeline folder or in TRELLIS_MODEL_DIR, or connect to the "
            f"internet.") from None


def _where(dirs) -> str:
    return ("the folders " + ", ".join(dirs)) if dirs else "any local folder"


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
