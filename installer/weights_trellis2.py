"""TRELLIS.2 and its gated image encoder, fetched only when the user asks (--trellis2), with progress and resume as
the base files (installer.weights), into the app's models folder where trellis.pipelines finds them by name:

    facebook/dinov3-vitl16-pretrain-lvd1689m -> models/dinov3-vitl16-pretrain-lvd1689m/  config.json, model.safetensors
    microsoft/TRELLIS.2-4B                   -> models/TRELLIS.2-4B/  pipeline.json and every network it names,
                                                texturing_pipeline.json and the shape encoder it adds
    <owner>/TRELLIS-image-large/ckpts/<stem> -> models/TRELLIS-image-large/  the v1 structure decoder it borrows
                                                (a base-install file, checked against weights_manifest.json)

DINOv3 is gated under Meta's DINOv3 License: it needs a Hugging Face token (installer.hf_token) of an account that
accepted the licence on the model's page. Its access is probed first with one small request, so a user without
access downloads nothing and is told why; a refusal is recorded beside its files (never the token) for the app's
availability check (desktop.families.trellis2_availability). No sizes or sha256 of these files are published: each
is checked for presence, .json files must parse, and a .safetensors header must describe tensors whose byte ranges
tile the whole file. Nothing here can stop the app from starting: TRELLIS.2 is then reported as unavailable.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import struct
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .hf_token import TOKENS_PAGE, Token, TokenError, find_token, save_token
from .weights import (DEFAULT_ENDPOINT, TIMEOUT_S, USER_AGENT, VerifiedCache, WeightFile, WeightsError, ensure,
                      error_text, hf_headers, hf_url, load_manifest, problem, size_text, split_repo_path)

MANIFEST_PATH = Path(__file__).with_name("trellis2_weights_manifest.json")
HEADLINE = "TRELLIS.2 is not available"
LEFT_ALONE = "TRELLIS v1 and everything else work as before."
MAX_HEADER_BYTES = 100 * 2 ** 20          # a safetensors header beyond this is not one
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}


def load_trellis2_manifest(path: Path | None = None) -> dict:
    with open(path or MANIFEST_PATH, encoding="utf-8") as f:
        return json.load(f)


@dataclass
class Trellis2Status:
    available: bool
    reason: str              # "ready", "no_token", "dinov3_not_accepted" or "missing_weights"
    message: str             # one message: what is wrong and what to do (never the token)
    model_dir: Path
    dinov3_dir: Path


# ------------------------------------------------------------------------------------------ file checks

def safetensors_problem(path: Path) -> str | None:
    """None when the header describes tensors whose byte ranges tile the file's data exactly; else what is wrong."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if n < 2 or n > MAX_HEADER_BYTES or 8 + n > size:
                return "is not a safetensors file (no complete header: an interrupted download?)"
            header = json.loads(f.read(n).decode("utf-8"))
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    except (ValueError, UnicodeDecodeError):
        return "is not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return "is not a safetensors file (its header is not a table of tensors)"
    data = size - 8 - n
    spans = []
    for name, t in header.items():
        if name == "__metadata__":
            continue
        offsets, shape = (t.get("data_offsets"), t.get("shape")) if isinstance(t, dict) else (None, None)
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] and isinstance(shape, list)
                and all(isinstance(d, int) and d >= 0 for d in shape)):
            return f"has a damaged header (tensor {name!r})"
        if offsets[1] > data:
            return (f"is cut off: tensor {name!r} ends at byte {offsets[1]:,} of the data, which has only {data:,} "
                    "(an interrupted download?)")
        numel = 1
        for d in shape:
            numel *= d
        width = DTYPE_BYTES.get(t.get("dtype"))
        if width is not None and numel * width != offsets[1] - offsets[0]:
            return (f"has a damaged header (tensor {name!r}: {numel} {t.get('dtype')} values in "
                    f"{offsets[1] - offsets[0]} bytes)")
        spans.append(offsets)
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            return (f"has a damaged header (bytes {min(begin, end):,}-{max(begin, end):,} of its data overlap or "
                    "belong to no tensor)")
        end = stop
    if end != data:
        return f"has {data - end:,} bytes after its last tensor (a different or damaged file)"
    return None


def json_problem(path: Path) -> str | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    except (ValueError, UnicodeDecodeError):
        return "is not a JSON file (damaged, or an error page saved in its place)"
    return None if isinstance(value, dict) else "is not a JSON object"


def checker(rel: str):
    return safetensors_problem if rel.endswith(".safetensors") else json_problem if rel.endswith(".json") else None


# ------------------------------------------------------------------------------------------ which files

# Each file's `rel` (where --weights-from looks) starts with its folder: "config.json" alone is in many repos.

def dinov3_files(models_dir: Path, endpoint: str, manifest: dict) -> list[WeightFile]:
    c = manifest["conditioner"]
    folder = models_dir / c["folder"]
    return [WeightFile(f"{c['folder']} {rel}", f"{c['folder']}/{rel}", hf_url(endpoint, c["repo"], c["revision"], rel),
                       folder / rel, None, verify=checker(rel)) for rel in c["files"]]


def pipeline_file(models_dir: Path, endpoint: str, manifest: dict) -> WeightFile:
    p = manifest["pipeline"]

    def check(path: Path) -> str | None:
        why = json_problem(path)
        if why is not None:
            return why
        args = json.loads(path.read_text(encoding="utf-8"))
        if args.get("name") != p["name"] or not isinstance(args.get("args", {}).get("models"), dict):
            return f"is not a {p['name']} pipeline.json (no 'models' table, or another name)"
        return None

    return WeightFile(f"{p['folder']} pipeline.json", f"{p['folder']}/pipeline.json",
                      hf_url(endpoint, p["repo"], p["revision"], "pipeline.json"),
                      models_dir / p["folder"] / "pipeline.json", None, headers=hf_headers(), verify=check)


def texturing_file(models_dir: Path, endpoint: str, manifest: dict) -> WeightFile:
    """texturing_pipeline.json: what TRELLIS.2 textures a user's own mesh with (its shape encoder besides the
    image pipeline's texture networks)."""
    p, t = manifest["pipeline"], manifest["texturing"]

    def check(path: Path) -> str | None:
        why = json_problem(path)
        if why is not None:
            return why
        args = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(args.get("args", {}).get("models"), dict):
            return f"is not a {t['name']} texturing_pipeline.json (no 'models' table)"
        return None

    return WeightFile(f"{p['folder']} {t['file']}", f"{p['folder']}/{t['file']}",
                      hf_url(endpoint, p["repo"], p["revision"], t["file"]), models_dir / p["folder"] / t["file"],
                      None, headers=hf_headers(), verify=check)


def network_files(models_dir: Path, pipeline_json: dict, endpoint: str, manifest: dict,
                  base_manifest: dict, conditioner: bool = True) -> list[WeightFile]:
    """Every network file pipeline.json names (its `models`), or WeightsError when it names one this app cannot
    place or (``conditioner``) a conditioner other than the one it knows. `rembg_model` is never read: we remove
    backgrounds with rembg's u2net (installer.weights), whatever the reference names there."""
    p, args = manifest["pipeline"], pipeline_json.get("args", {})
    folder = models_dir / p["folder"]
    image_files = base_manifest["pipeline"]["files"]
    image_repo, image_rev = base_manifest["pipeline"]["repo"], base_manifest["pipeline"]["revision"]
    files = []
    for key, value in args["models"].items():
        parts = str(value).replace("\\", "/").split("/")
        if not isinstance(value, str) or not value or value.startswith("/") or ".." in parts or ":" in value:
            raise WeightsError(f"{p['repo']}'s pipeline.json names {key} as {value!r}, not a path inside a repo.")
        split = split_repo_path(value)
        if split is None or parts[0] == "ckpts":        # its own checkpoints live in ckpts/; others are owner/repo/...
            for ext in (".json", ".safetensors"):
                files.append(WeightFile(f"{p['folder']} {value}{ext}", f"{p['folder']}/{value}{ext}",
                                        hf_url(endpoint, p["repo"], p["revision"], value + ext), folder / (value + ext),
                                        None, headers=hf_headers(), verify=checker(ext)))
            continue
        other, stem = split
        name = other.split("/")[1]
        if name not in manifest.get("image_repo_names", ()):
            raise WeightsError(f"{p['repo']}'s pipeline.json names {value} (for {key}), a network of {other}, which "
                               "this app does not know how to fetch.")
        for ext in (".json", ".safetensors"):      # the base install's own file, with its pinned size and sha256
            e = image_files.get(stem + ext)
            if e is None:
                raise WeightsError(f"{value}{ext} (named in {p['repo']}'s pipeline.json) is not a file of "
                                   f"{image_repo} in weights_manifest.json.")
            files.append(WeightFile(f"{name} {stem}{ext}", stem + ext, hf_url(endpoint, image_repo, image_rev,
                                    stem + ext), models_dir / name / (stem + ext), e["bytes"], e["sha256"],
                                    headers=hf_headers()))
    cond = (args.get("image_cond_model") or {}).get("args", {}).get("model_name")
    if conditioner and cond != manifest["conditioner"]["repo"]:
        raise WeightsError(f"{p['repo']}'s pipeline.json names the image encoder {cond!r}, not "
                           f"{manifest['conditioner']['repo']}: this app knows only that one.")
    return files


# ------------------------------------------------------------------------------------------ access

def probe_access(url: str, token: Token, opener) -> int:
    """The hub's HTTP status for the first byte of a gated file, asked with the token (sent to that host only).
    OSError-like exceptions when the host cannot be reached."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Range": "bytes=0-0"})
    for k, v in token.header().items():
        req.add_unredirected_header(k, v)
    try:
        with opener(req, timeout=TIMEOUT_S) as resp:
            resp.read(1)
            return getattr(resp, "status", 200)
    except urllib.error.HTTPError as e:
        e.close()
        return e.code


def access_record_path(models_dir: Path, manifest: dict) -> Path:
    return models_dir / manifest["conditioner"]["folder"] / manifest["access_record"]


def record_refusal(models_dir: Path, manifest: dict, status: str, http_status: int) -> None:
    """What the hub answered, for the app's availability check (the token is not part of it)."""
    c = manifest["conditioner"]
    path = access_record_path(models_dir, manifest)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"repo": c["repo"], "status": status, "http_status": http_status,
                                    "page": c["page"], "checked": time.strftime("%Y-%m-%d")}, indent=1),
                        encoding="utf-8")
    except OSError:
        pass                        # only a hint for the app: it then says "no access" in general terms


# ------------------------------------------------------------------------------------------ messages

def gate_text(manifest: dict) -> str:
    c = manifest["conditioner"]
    return (f"DINOv3 ({c['repo']}), TRELLIS.2's image encoder, is gated on Hugging Face under Meta's DINOv3 License: "
            f"sign in at huggingface.co and accept the licence at {c['page']}")


def notice(manifest: dict, dinov3_missing: bool) -> str:
    p, c = manifest["pipeline"], manifest["conditioner"]
    text = f"TRELLIS.2 (asked for with --trellis2): {p['repo']} ({p['licence'].split(' (')[0]}, about " \
           f"{size_text(p['approx_bytes'])})"
    if not dinov3_missing:
        return text + "."
    return (f"{text} and DINOv3 (about {size_text(c['approx_bytes'])}). {gate_text(manifest)}; the installer then "
            f"downloads it with a token of that account (HF_TOKEN, --hf-token-file FILE, or `hf auth login`). The "
            "token is used for that download only: never shown, logged or stored (unless --save-hf-token).")


def no_token_text(manifest: dict, why: str) -> str:
    return (f"{HEADLINE}: {why}. {gate_text(manifest)}, make a read token at {TOKENS_PAGE}, and start again with "
            f"--trellis2 and the token in HF_TOKEN, in a file named by --hf-token-file FILE, or saved by "
            f"`hf auth login`. {LEFT_ALONE}")


def refusal_text(manifest: dict, token: Token, http_status: int) -> tuple[str, str]:
    """(reason, message) for the hub's refusal of the token."""
    c = manifest["conditioner"]
    if http_status == 401:
        return "no_token", no_token_text(manifest, f"Hugging Face did not accept {token} (HTTP 401: expired, "
                                                   "revoked or mistyped)")
    return "dinov3_not_accepted", (
        f"{HEADLINE}: {token} works, but its account has no access to DINOv3 ({c['repo']}, HTTP {http_status}): Meta's "
        f"DINOv3 License is not accepted yet, or the request is not granted yet. Signed in with that account, accept "
        f"it at {c['page']} (Hugging Face e-mails you once access is granted), then start again with --trellis2. "
        f"{LEFT_ALONE}")


# ------------------------------------------------------------------------------------------ the step

def still_to_get(folder: Path, approx: int) -> int:
    """About how much is still to download into `folder`: the estimate less what is there (finished or partial)."""
    have = 0
    for path in folder.rglob("*") if folder.is_dir() else ():
        try:
            have += path.stat().st_size if path.is_file() else 0
        except OSError:
            pass
    return max(approx - have, 0)


def ensure_trellis2(models_dir: Path, *, endpoint: str | None = None, token_file=None, save: bool = False,
                    source_dir=None, retries: int = 2, full_check: bool = False, log=None, opener=None,
                    sleep=time.sleep, stream=None, hook=None, manifest: dict | None = None,
                    base_manifest: dict | None = None, environ=None) -> Trellis2Status:
    """DINOv3 (if the hub grants the token access), then TRELLIS.2-4B, present and checked afterwards; never raises
    for what the user can fix: the status says whether TRELLIS.2 is available and, if not, why and what to do."""
    manifest = manifest or load_trellis2_manifest()
    base_manifest = base_manifest or load_manifest()
    opener = opener or urllib.request.urlopen
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    say = log.say if log is not None else (lambda text: print(text, file=stream or sys.stderr))
    models_dir = Path(models_dir)
    model_dir = models_dir / manifest["pipeline"]["folder"]
    dino = dinov3_files(models_dir, endpoint, manifest)
    dinov3_dir = dino[0].dest.parent
    cache = VerifiedCache(models_dir / "verified.json", trust=not full_check)

    def unavailable(reason: str, message: str) -> Trellis2Status:
        return Trellis2Status(False, reason, message, model_dir, dinov3_dir)

    dino_missing = [wf for wf in dino if problem(wf.dest, wf, cache) is not None]
    try:
        token = find_token(token_file, environ)
    except TokenError as e:
        if dino_missing:
            return unavailable("no_token", no_token_text(manifest, str(e)))
        say(f"({e}; DINOv3 is already here, so no token is needed.)")
        token = None
    if dino_missing and token is None:
        return unavailable("no_token", no_token_text(manifest, "no Hugging Face token was found"))
    pipeline = pipeline_file(models_dir, endpoint, manifest)
    need = still_to_get(model_dir, manifest["pipeline"]["approx_bytes"])
    need += still_to_get(dinov3_dir, manifest["conditioner"]["approx_bytes"]) if dino_missing else 0
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(models_dir).free
    except OSError:
        free = None
    if free is not None and free < need + 2 ** 30:
        return unavailable("missing_weights", f"{HEADLINE}: its files need about {size_text(need)} more, and the "
                                              f"drive of {models_dir} has {size_text(free)} free. Free some space "
                                              f"and start again with --trellis2. {LEFT_ALONE}")
    say(notice(manifest, bool(dino_missing)))
    if dino_missing:
        say(f"Checking DINOv3 access with {token} ...")
        try:
            status = probe_access(dino[0].url, token, opener)
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            return unavailable("missing_weights", f"{HEADLINE}: {endpoint} could not be reached ({error_text(e)}). "
                                                  "Start again with --trellis2 once online (finished files are "
                                                  "kept, a partial one continues), or use a Hugging Face mirror "
                                                  f"with --hf-endpoint URL. {LEFT_ALONE}")
        if status in (401, 403):
            record_refusal(models_dir, manifest, "token_refused" if status == 401 else "not_accepted", status)
            reason, message = refusal_text(manifest, token, status)
            if status == 403 and save:
                message += save_text(token, environ)
            return unavailable(reason, message)
        for wf in dino:
            wf.headers = token.header()
        try:
            ensure(dino, log=log, cache=cache, source_dir=source_dir, retries=retries, opener=opener, sleep=sleep,
                   stream=stream, hook=hook, headline=HEADLINE)
        except WeightsError as e:
            return unavailable("missing_weights", f"{e}\n{LEFT_ALONE}")
    access_record_path(models_dir, manifest).unlink(missing_ok=True)
    if save and token is not None:
        say(save_text(token, environ).strip())
    try:
        ensure([pipeline], log=log, cache=cache, source_dir=source_dir, retries=retries, opener=opener, sleep=sleep,
               stream=stream, hook=hook, headline=HEADLINE)
        files = network_files(models_dir, json.loads(pipeline.dest.read_text(encoding="utf-8")), endpoint, manifest,
                              base_manifest)
        ensure(files, log=log, cache=cache, source_dir=source_dir, retries=retries, opener=opener, sleep=sleep,
               stream=stream, hook=hook, headline=HEADLINE)
        texturing = texturing_file(models_dir, endpoint, manifest)
        ensure([texturing], log=log, cache=cache, source_dir=source_dir, retries=retries, opener=opener,
               sleep=sleep, stream=stream, hook=hook, headline=HEADLINE)
        # its other networks (the shape encoder); the image pipeline's texture networks are the same files
        have = {wf.dest for wf in files}
        extra = [wf for wf in network_files(models_dir, json.loads(texturing.dest.read_text(encoding="utf-8")),
                                            endpoint, manifest, base_manifest, conditioner=False)
                 if wf.dest not in have]
        ensure(extra, log=log, cache=cache, source_dir=source_dir, retries=retries, opener=opener, sleep=sleep,
               stream=stream, hook=hook, headline=HEADLINE)
    except WeightsError as e:
        text = str(e)
        return unavailable("missing_weights", (text if text.startswith(HEADLINE) else f"{HEADLINE}: {text}")
                           + f"\n{LEFT_ALONE}")
    return Trellis2Status(True, "ready", f"TRELLIS.2 is ready: {model_dir}, with DINOv3 in {dinov3_dir} (files "
                                         "checked: present, JSON parses, safetensors headers cover each file).",
                          model_dir, dinov3_dir)


def save_text(token: Token, environ=None) -> str:
    """--save-hf-token: the token into huggingface_hub's token file; what happened, in words (never the token)."""
    try:
        path = save_token(token, environ)
    except OSError as e:
        return f" (The token could not be saved: {e.strerror or e}.)"
    if path is None:
        return " (The token is already the one saved by your Hugging Face login.)"
    return f" (Saved {token} to {path}, huggingface_hub's token file, as `hf auth login` does.)"
