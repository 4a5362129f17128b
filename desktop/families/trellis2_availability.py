"""Is TRELLIS.2 usable here, and if not, why and what to do, in one message (for the app's model choice).

Offline and quick: nothing is loaded or downloaded; files are only found and their safetensors headers read. It looks
where Trellis2ImageTo3DPipeline.from_pretrained looks (trellis2_loading, model_sources): the pipeline folder
(default: `TRELLIS.2-4B` in the app's models folder, $TRELLIS_MODEL_DIR), every network its pipeline.json names (the
borrowed v1 structure decoder inside it, in a repo folder beside it, or in the Hugging Face cache), and the DINOv3
image encoder (a local copy or the Hugging Face cache). DINOv3 is gated under Meta's DINOv3 License, so when it is
missing the reason is one of:

    "no_token"             no Hugging Face token on this computer, or the hub refused the installer's (HTTP 401)
    "dinov3_not_accepted"  the hub answered the installer's token with HTTP 403: the licence is not accepted (or
                           not granted yet) for that account
    "missing_weights"      the files are not (all) downloaded yet, with a token at hand

The installer (installer/weights_trellis2.py) records a refusal in `.trellis-access.json` beside DINOv3's files; the
token itself is never read into a message, only whether one exists.
"""
from __future__ import annotations

import functools
import os
import stat
from dataclasses import dataclass
from typing import Optional

from trellis.core.inputfile import read_regular
from trellis.models import read_config_json
from trellis.models.dinov3 import DINOV3_REPO
from trellis.pipelines.background import default_model_dir
from trellis.pipelines.model_sources import local_repo_folders, search_dirs, split_repo_path

__all__ = ["TRELLIS2_REPO", "TRELLIS2_FOLDER", "DINOV3_PAGE", "ACCESS_RECORD", "DOWNLOAD_HOW", "Trellis2Availability",
           "trellis2_availability", "has_hf_token"]

TRELLIS2_REPO = "microsoft/TRELLIS.2-4B"
TRELLIS2_FOLDER = "TRELLIS.2-4B"
DINOV3_PAGE = f"https://huggingface.co/{DINOV3_REPO}"
TOKENS_PAGE = "https://huggingface.co/settings/tokens"
ACCESS_RECORD = ".trellis-access.json"
TOKEN_MAX_BYTES = 64 * 1024            # a Hugging Face token is ~40 characters
DOWNLOAD_HOW = "start Trellis Desktop with --trellis2 (./run.sh --trellis2; on Windows run.bat --trellis2)"
LEFT_ALONE = "TRELLIS v1 works without it."
SHOWN = 3                  # missing files named in a message; the rest are counted


@dataclass(frozen=True)
class Trellis2Availability:
    available: bool
    reason: str                       # "ready", "missing_weights", "dinov3_not_accepted" or "no_token"
    message: str                      # what is wrong and what to do ("" when available)
    model_dir: str
    conditioner_dir: Optional[str]    # DINOv3's folder, when found


def has_hf_token(environ=None) -> bool:
    """A Hugging Face token exists here: $HF_TOKEN / $HUGGING_FACE_HUB_TOKEN, or a non-empty login token file
    (huggingface_hub's: $HF_TOKEN_PATH, $HF_HOME/token, and the default ~/.cache/huggingface/token, which a user's
    `hf auth login` wrote even where the app's process points HF_HOME elsewhere)."""
    env = os.environ if environ is None else environ
    if any(env.get(var, "").strip() for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")):
        return True
    cache = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    candidates = [env.get("HF_TOKEN_PATH"), env.get("HF_HOME") and os.path.join(env["HF_HOME"], "token"),
                  os.path.join(cache, "huggingface", "token")]
    for path in filter(None, candidates):
        try:
            # a regular file only, read no further than a token's size: a FIFO there must not block the app
            if read_regular(os.path.expanduser(path), TOKEN_MAX_BYTES, "a token").decode("utf-8").strip():
                return True
        except (OSError, ValueError):
            continue
    return False


def safetensors_ok(path: str) -> bool:
    """The file exists and its header describes tensors that cover it exactly (a cut-off download fails). A file
    unchanged since its last check (same path, size, modification time and inode) is not read again, so a caller
    that asks on every request (a server's health answer) stays cheap and still sees a file appear, grow or go."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return False
    if not stat.S_ISREG(info.st_mode):
        return False
    return safetensors_header_ok(os.path.abspath(path), info.st_size, info.st_mtime_ns, info.st_ino)


@functools.lru_cache(maxsize=1024)
def safetensors_header_ok(path: str, size: int, mtime_ns: int, inode: int) -> bool:
    """safetensors_ok's read of the header, once per version of the file (the arguments after `path` are its key)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="np"):
            return True
    except Exception:      # safetensors' own error type for a bad header, OSError for an unreadable file
        return False


def complete_model(prefix: str) -> bool:
    return os.path.isfile(prefix + ".json") and safetensors_ok(prefix + ".safetensors")


def cached(repo: str, filename: str) -> Optional[str]:
    """The Hugging Face cache's copy of a file, without the network; None when it has none."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo, filename)
    return found if isinstance(found, str) else None


def missing_networks(root: str, models: dict, dirs) -> list[str]:
    """The `models` entries of pipeline.json whose files are not where the loader would find them."""
    missing = []
    for value in models.values():
        own = os.path.join(root, *str(value).split("/"))
        split = split_repo_path(str(value))
        if split is None or os.path.exists(own + ".json"):
            if not complete_model(own):
                missing.append(f"{value}.safetensors")
            continue
        repo, stem = split
        folders = local_repo_folders(repo, search_dirs(root, dirs))
        if any(complete_model(os.path.join(folder, *stem.split("/"))) for folder in folders):
            continue
        weights = cached(repo, stem + ".safetensors")
        if not (cached(repo, stem + ".json") and weights and safetensors_ok(weights)):
            missing.append(f"{value}.safetensors (from {repo})")
    return missing


def conditioner_dir(root: str, name: str, dirs) -> Optional[str]:
    """DINOv3's folder with config.json and a complete model.safetensors, as the loader finds it, or None."""
    candidates = [os.path.join(root, *name.split("/"))] + local_repo_folders(name, search_dirs(root, dirs))
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, "config.json")) and \
                safetensors_ok(os.path.join(folder, "model.safetensors")):
            return folder
    weights = cached(name, "model.safetensors")
    if cached(name, "config.json") and weights and safetensors_ok(weights):
        return os.path.dirname(weights)
    return None


def refusal(root: str, name: str, dirs) -> Optional[str]:
    """The installer's record of the hub refusing access to `name` ("not_accepted", "token_refused"), or None."""
    for folder in local_repo_folders(name, search_dirs(root, dirs)):
        try:
            status = read_config_json(os.path.join(folder, ACCESS_RECORD)).get("status")
        except (OSError, ValueError, AttributeError):
            continue
        if status in ("not_accepted", "token_refused"):
            return status
    return None


def listed(items: list[str]) -> str:
    more = len(items) - SHOWN
    return ", ".join(items[:SHOWN]) + (f" and {more} more" if more > 0 else "")


def trellis2_availability(model: Optional[str] = None, search_dirs=(), environ=None) -> Trellis2Availability:
    """Whether TRELLIS.2 can be loaded here (`model`: its pipeline folder; default the app's models folder's
    TRELLIS.2-4B), and if not, one message: what is missing and what to do."""
    env = os.environ if environ is None else environ
    models_root = env.get("TRELLIS_MODEL_DIR") or str(default_model_dir().parent)
    if model is None:
        found = local_repo_folders(TRELLIS2_REPO, [models_root])
        model = found[0] if found else os.path.join(models_root, TRELLIS2_FOLDER)
    root = os.fspath(model)
    dirs = [os.fspath(d) for d in search_dirs] + [models_root]
    missing, cond_name = [], DINOV3_REPO
    try:
        config = read_config_json(os.path.join(root, "pipeline.json"))
        models = config["args"]["models"]
        if config.get("name") != "Trellis2ImageTo3DPipeline" or not isinstance(models, dict):
            raise ValueError
        cond_name = (config["args"].get("image_cond_model") or {}).get("args", {}).get("model_name") or DINOV3_REPO
        missing = missing_networks(root, models, dirs)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        missing = ["pipeline.json and the networks it names"]
    cond = conditioner_dir(root, cond_name, dirs)
    page = f"https://huggingface.co/{cond_name}"
    gate = (f"it needs Meta's DINOv3 image encoder ({cond_name}), whose weights are gated on Hugging Face "
            "under the DINOv3 License")
    also = f" ({TRELLIS2_FOLDER}'s own files, about 15 GB, come with it.)" if missing else ""

    def unavailable(reason: str, message: str) -> Trellis2Availability:
        return Trellis2Availability(False, reason, message, root, cond)

    if cond is None:
        refused = refusal(root, cond_name, dirs)
        if refused == "not_accepted":
            return unavailable("dinov3_not_accepted", (
                f"TRELLIS.2 is not available: Hugging Face refused your token access to DINOv3 ({cond_name}, HTTP "
                f"403): Meta's DINOv3 License is not accepted for that account, or the request is not granted yet. "
                f"Signed in with that account, accept it at {page} (Hugging Face e-mails you once access is "
                f"granted), then {DOWNLOAD_HOW}.{also} {LEFT_ALONE}"))
        if refused == "token_refused" or not has_hf_token(env):
            why = ("Hugging Face did not accept the token the installer had (HTTP 401: expired, revoked or mistyped)"
                   if refused == "token_refused" else "no Hugging Face token was found on this computer")
            return unavailable("no_token", (
                f"TRELLIS.2 is not available: {gate}, and {why}. Sign in at huggingface.co, accept the licence at "
                f"{page}, make a read token at {TOKENS_PAGE}, then {DOWNLOAD_HOW} and the token in HF_TOKEN, in a "
                f"file named by --hf-token-file, or saved by `hf auth login`.{also} {LEFT_ALONE}"))
        missing = missing + [f"DINOv3 ({cond_name}: config.json, model.safetensors)"]
    if missing:
        return unavailable("missing_weights", (
            f"TRELLIS.2 is not available: its model files are not all downloaded (missing: {listed(missing)}; "
            f"its folder: {root}). "
            f"{DOWNLOAD_HOW[0].upper()}{DOWNLOAD_HOW[1:]}: it fetches them with progress and resumes an interrupted "
            f"download" + (f" (DINOv3 is gated: accept the DINOv3 License at {page} with the account of your token "
                           "first)" if cond is None else "") + f". {LEFT_ALONE}"))
    return Trellis2Availability(True, "ready", "", root, cond)
