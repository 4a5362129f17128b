"""Model files: download on first start (with progress and resume), check every file against its published
size and sha256, and say exactly what is missing and where it goes when they cannot be fetched.

    files = wanted_files(layout, repo=..., endpoint=...)     # what the app needs, where it goes
    ensure(files, log=..., cache=VerifiedCache(...))         # present and correct afterwards, or WeightsError

Standard library only (urllib): it runs on the Python that run.sh / run.bat found, before the app starts.
The three sources:
* the TRELLIS pipeline (default microsoft/TRELLIS-image-large at the commit in weights_manifest.json) from
  the Hugging Face hub or a mirror ($HF_ENDPOINT / --hf-endpoint), `<endpoint>/<repo>/resolve/<rev>/<path>`;
  another repo id takes its sizes and sha256 from the hub's file listing instead;
* DINOv2 ViT-L/14-reg from Meta's URL (the one trellis/pipelines/trellis_image_to_3d.py names), saved where
  that loader looks: torch.hub's checkpoints folder under TORCH_HOME (and TRELLIS_DINOV2_WEIGHTS is set);
* u2net.onnx from rembg's release (the one trellis/pipelines/preprocess.py names), saved as
  <TRELLIS_MODEL_DIR>/u2net/u2net.onnx, where BackgroundRemover looks.
A file is checked by hashing it once; the result is remembered by (size, mtime) in models/verified.json,
so later starts only stat the files (--repair hashes everything again). TRELLIS.2 and its gated DINOv3, fetched only
with --trellis2, are installer/weights_trellis2.py's (the same download, other checks: no hashes are published).
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .layout import Layout

MANIFEST_PATH = Path(__file__).with_name("weights_manifest.json")
DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK = 1 << 20
TIMEOUT_S = 60
USER_AGENT = "TrellisDesktop-installer/1 (python-urllib)"


class WeightsError(RuntimeError):
    """A model file is missing or wrong and could not be fixed here; the message says what to do. `missing`: the
    WeightFiles concerned."""

    def __init__(self, message: str, missing=()):
        super().__init__(message)
        self.missing = list(missing)


class _NotRetryable(Exception):
    pass


def load_manifest(path: Path | None = None) -> dict:
    with open(path or MANIFEST_PATH, encoding="utf-8") as f:
        return json.load(f)


def default_repo(manifest: dict | None = None) -> str:
    return (manifest or load_manifest())["pipeline"]["repo"]


def size_text(n: int | None) -> str:
    if n is None:
        return "size unknown"
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.1f} MiB" if n >= 2 ** 20 else f"{n:,} bytes"


@dataclass
class WeightFile:
    label: str                      # for messages: "TRELLIS-image-large ckpts/x.safetensors"
    rel: str                        # its name inside its source (a --weights-from folder is searched for it)
    url: str
    dest: Path
    size: int | None
    sha256: str | None = None
    git_sha1: str | None = None     # small files of another hub repo: the git blob id from the hub's listing
    headers: dict = field(default_factory=dict)   # sent to the first host only (not along redirects)
    only_for: str | None = None     # what needs it, when the app can start without it ("removing photo backgrounds")
    verify: Callable[[Path], str | None] | None = None   # files without a published hash: what is wrong, or None

    def expected(self) -> str:
        return self.sha256 or (f"git {self.git_sha1}" if self.git_sha1 else "")


@dataclass
class WeightsPlan:
    files: list[WeightFile]
    model_dir: Path | None          # the local pipeline folder for TRELLIS_DESKTOP_MODEL (None: not fetched)
    dinov2: Path | None             # for TRELLIS_DINOV2_WEIGHTS
    u2net_dir: Path


# ----------------------------------------------------------------------------------- hashing

def file_digest(path: Path, kind: str = "sha256") -> str:
    """sha256 of the file, or ("git") the git blob id the hub lists for files kept outside LFS."""
    if kind == "git":
        h = hashlib.sha1()
        h.update(b"blob %d\0" % path.stat().st_size)
    else:
        h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK * 4)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


class VerifiedCache:
    """Files already hashed and found correct, by path, size and mtime (models/verified.json)."""

    def __init__(self, path: Path | None, trust: bool = True):
        self.path = path
        self.data: dict = {}
        if path is not None and trust:
            try:
                self.data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.data = {}

    def _key(self, path: Path) -> str:
        return os.path.normcase(os.path.abspath(path))

    def knows(self, path: Path, wf: WeightFile) -> bool:
        entry = self.data.get(self._key(path))
        if not entry:
            return False
        try:
            st = path.stat()
        except OSError:
            return False
        return (entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns
                and entry.get("digest") == wf.expected())

    def record(self, path: Path, wf: WeightFile) -> None:
        st = path.stat()
        self.data[self._key(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "digest": wf.expected()}
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_name(self.path.name + ".tmp")
                tmp.write_text(json.dumps(self.data, indent=1), encoding="utf-8")
                os.replace(tmp, self.path)
            except OSError:
                pass   # only a speed-up: the next start hashes again


def problem(path: Path, wf: WeightFile, cache: VerifiedCache | None = None) -> str | None:
    """None if `path` is the right file; else what is wrong with it, in words."""
    try:
        size = path.stat().st_size
    except OSError:
        return "is missing"
    if wf.size is not None and size != wf.size:
        return f"has {size:,} bytes, but the published file has {wf.size:,} (incomplete or a different file)"
    if cache is not None and cache.knows(path, wf):
        return None
    if wf.sha256:
        got = file_digest(path)
        if got != wf.sha256:
            return f"has sha256 {got}, but the published sha256 is {wf.sha256} (damaged or a different file)"
    elif wf.git_sha1:
        got = file_digest(path, "git")
        if got != wf.git_sha1:
            return f"has git blob id {got}, but the hub lists {wf.git_sha1} (damaged or a different file)"
    if wf.verify is not None:
        why = wf.verify(path)
        if why is not None:
            return why
    if cache is not None:
        cache.record(path, wf)
    return None


# ------------------------------------------------------------------------------------ which files

def hf_url(endpoint: str, repo: str, revision: str, path: str) -> str:
    return f"{endpoint.rstrip('/')}/{repo}/resolve/{urllib.parse.quote(revision, safe='')}/" \
           f"{urllib.parse.quote(path)}"


def hf_headers() -> dict:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def repo_folder(layout: Layout, repo: str, manifest: dict) -> Path:
    """models/TRELLIS-image-large for the default repo, models/<owner>--<name> for another one."""
    name = repo.split("/")[-1] if repo == manifest["pipeline"]["repo"] else repo.replace("/", "--")
    return layout.models / name


def _pipeline_models(pipeline_json: dict) -> tuple[list[str], str | None]:
    args = pipeline_json.get("args", {})
    return list(args.get("models", {}).values()), args.get("image_cond_model")


def _hub_listing(endpoint: str, repo: str, revision: str, opener) -> dict[str, dict]:
    """{path: {"size", "sha256" or "git_sha1"}} from the hub's tree API (every page)."""
    url = (f"{endpoint.rstrip('/')}/api/models/{repo}/tree/{urllib.parse.quote(revision, safe='')}"
           "?recursive=true")
    out: dict[str, dict] = {}
    while url:
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        for k, v in hf_headers().items():
            req.add_unredirected_header(k, v)
        with opener(req, timeout=TIMEOUT_S) as resp:
            items = json.loads(resp.read().decode("utf-8"))
            link = resp.headers.get("Link") or ""
        for item in items:
            if item.get("type") != "file":
                continue
            lfs = item.get("lfs") or {}
            entry = {"size": item.get("size")}
            if lfs.get("oid"):
                entry["sha256"] = lfs["oid"]
                entry["size"] = lfs.get("size", entry["size"])
            elif item.get("oid"):
                entry["git_sha1"] = item["oid"]
            out[item["path"]] = entry
        url = None
        for part in link.split(","):
            if 'rel="next"' in part:
                url = part[part.find("<") + 1:part.find(">")]
    return out


LISTING_NAME = ".trellis-listing.json"


def kept_listing(repo: str, endpoint: str, revision: str, folder: Path, opener,
                 fix: str = "or start with --model FOLDER pointing at a downloaded copy") -> dict:
    """The hub's file listing of `repo`, kept in `folder` so that later starts work offline (the kept one is
    used when the hub cannot be reached)."""
    listing_file = folder / LISTING_NAME
    try:
        listing = _hub_listing(endpoint, repo, revision, opener)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        try:
            return json.loads(listing_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise WeightsError(
                f"Cannot list the files of {repo} on {endpoint} ({error_text(e)}), and it was never downloaded here. "
                f"Check the repo id and the network (or --hf-endpoint / HF_ENDPOINT), {fix}.") from None
    folder.mkdir(parents=True, exist_ok=True)
    listing_file.write_text(json.dumps(listing, indent=1), encoding="utf-8")
    return listing


def _other_repo_files(layout: Layout, repo: str, endpoint: str, folder: Path, opener, log) -> tuple[list, str | None]:
    """Files of a repo that is not in the manifest: its pipeline.json and the checkpoints it names, with the
    sizes and hashes the hub lists. The listing is kept in the folder so that later starts work offline."""
    revision = "main"
    listing = kept_listing(repo, endpoint, revision, folder, opener)
    if "pipeline.json" not in listing:
        raise WeightsError(f"{repo} has no pipeline.json: it is not a TRELLIS pipeline repo.")

    def make(rel: str) -> WeightFile:
        e = listing[rel]
        return WeightFile(f"{repo} {rel}", rel, hf_url(endpoint, repo, revision, rel), folder / rel, e.get("size"),
                          e.get("sha256"), e.get("git_sha1"), hf_headers())

    pipeline = make("pipeline.json")
    cache = VerifiedCache(layout.verified_file)
    if problem(pipeline.dest, pipeline, cache) is not None:
        ensure([pipeline], log=log, cache=cache, opener=opener)
    models, cond = _pipeline_models(json.loads(pipeline.dest.read_text(encoding="utf-8")))
    files = [pipeline]
    for stem in models + ([cond] if cond else []):
        for ext in (".json", ".safetensors"):
            if stem + ext in listing:
                files.append(make(stem + ext))
    return files, cond


def wanted_files(layout: Layout, repo: str | None = None, endpoint: str | None = None, pipeline: bool = True,
                 manifest: dict | None = None, opener=None, log=None) -> WeightsPlan:
    """What the app needs before it starts. `pipeline=False`: only u2net (the user named --model)."""
    manifest = manifest or load_manifest()
    opener = opener or urllib.request.urlopen
    default = manifest["pipeline"]["repo"]
    repo = repo or os.environ.get("TRELLIS_WEIGHTS_REPO") or default
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    files: list[WeightFile] = []
    model_dir = dinov2 = None
    need_dinov2 = False
    if pipeline:
        model_dir = repo_folder(layout, repo, manifest)
        if repo == default:
            rev = manifest["pipeline"]["revision"]
            short = repo.split("/")[-1]
            for rel, e in manifest["pipeline"]["files"].items():
                if e.get("required", True):
                    files.append(WeightFile(f"{short} {rel}", rel, hf_url(endpoint, repo, rev, rel), model_dir / rel,
                                            e["bytes"], e["sha256"], headers=hf_headers()))
            need_dinov2 = True      # pipeline.json: "image_cond_model": "dinov2_vitl14_reg"
        else:
            other, cond = _other_repo_files(layout, repo, endpoint, model_dir, opener, log)
            files += other
            need_dinov2 = cond == "dinov2_vitl14_reg"
    extra = manifest["extra"]
    if need_dinov2:
        d = extra["dinov2"]
        dinov2 = layout.dinov2_dir / d["file"]
        files.append(WeightFile("DINOv2 " + d["file"], d["file"], os.environ.get("TRELLIS_DINOV2_URL") or d["url"],
                                dinov2, d["bytes"], d["sha256"]))
    u = extra["u2net"]
    files.append(WeightFile("u2net " + u["file"], u["file"], os.environ.get("TRELLIS_U2NET_URL") or u["url"],
                            layout.u2net_dir / u["file"], u["bytes"], u["sha256"],
                            only_for="removing photo backgrounds"))
    return WeightsPlan(files, model_dir, dinov2, layout.u2net_dir)


# ---------------------------------------------------------------------------------- downloading

class Progress:
    """One status line per file: rewritten in place on a terminal, every few seconds otherwise."""

    def __init__(self, label: str, total: int | None, stream=None, interval: float | None = None, hook=None):
        self.label, self.total = label, total
        self.hook = hook            # hook(label, done, total): every chunk (e.g. a job's progress in the app)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.5 if self.tty else 10.0)
        self.start = self.last = time.monotonic()
        self.first_byte = None

    def __call__(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.hook is not None:
            self.hook(self.label, done, self.total)
        if self.first_byte is None:
            self.first_byte = (done, now)
        if not force and now - self.last < self.interval:
            return
        self.last = now
        d0, t0 = self.first_byte
        rate = (done - d0) / max(now - t0, 1e-6)
        pct = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        line = f"  {self.label}: {size_text(done)} of {size_text(self.total)}{pct}, {rate / 2 ** 20:.1f} MiB/s"
        if self.tty:
            self.stream.write("\r" + line.ljust(100)[:150])
            if force:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def error_text(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _fetch_into(wf: WeightFile, part: Path, opener, progress) -> None:
    """Download wf.url into `part`, continuing an existing partial file with an HTTP Range request."""
    have = part.stat().st_size if part.exists() else 0
    if wf.size is not None and have > wf.size:
        part.unlink()
        have = 0
    if wf.size is not None and have == wf.size:
        return
    req = urllib.request.Request(wf.url, headers={"User-Agent": USER_AGENT})
    for k, v in wf.headers.items():
        req.add_unredirected_header(k, v)
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = opener(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:           # nothing left to send: the partial file is as long as the file
            return
        raise
    with resp:
        status = getattr(resp, "status", 200)
        mode = "wb"
        if have and status == 206:
            content_range = resp.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {have}-"):
                raise _NotRetryable(f"the server answered a resume request with {content_range!r}")
            mode = "ab"
        elif have:
            have = 0                          # the server ignored the Range header: start again
        if wf.size is None:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit():
                wf.size = have + int(length) if mode == "ab" else int(length)
                if progress is not None:
                    progress.total = wf.size
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, mode) as f:
            done = have
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done)
    if wf.size is not None and part.stat().st_size < wf.size:
        raise http.client.IncompleteRead(b"", wf.size - part.stat().st_size)


class DownloadFailed(Exception):
    def __init__(self, why: str, offline: bool):
        super().__init__(why)
        self.why, self.offline = why, offline


def download(wf: WeightFile, *, opener=None, retries: int = 2, stream=None, sleep=time.sleep,
             cache: VerifiedCache | None = None, hook=None) -> None:
    """Fetch wf to wf.dest through `<dest>.part` (resumed if present), check it, then move it in place."""
    opener = opener or urllib.request.urlopen
    part = wf.dest.with_name(wf.dest.name + ".part")
    wf.dest.parent.mkdir(parents=True, exist_ok=True)
    attempt, fresh_starts = 0, 0
    while True:
        progress = Progress(wf.label, wf.size, stream=stream, hook=hook)
        try:
            _fetch_into(wf, part, opener, progress)
            progress(part.stat().st_size, force=True)
        except urllib.error.HTTPError as e:
            if e.code in (401, 403, 404, 410):
                hint = (" (a private or gated repo needs HF_TOKEN)" if e.code in (401, 403)
                        else " (wrong repo id, revision or mirror?)")
                raise DownloadFailed(f"{error_text(e)} for {wf.url}{hint}", offline=False) from None
            err, offline = e, False
        except _NotRetryable as e:
            part.unlink(missing_ok=True)
            err, offline = e, False
        except ValueError as e:               # not a URL urllib can fetch
            raise DownloadFailed(f"cannot download {wf.url!r}: {e}", offline=False) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            err = e
            offline = isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError)
        else:
            why = problem(part, wf)
            if why is None:
                os.replace(part, wf.dest)
                if cache is not None:
                    cache.record(wf.dest, wf)
                return
            part.unlink(missing_ok=True)
            fresh_starts += 1
            if fresh_starts > 1:
                raise DownloadFailed(f"the file downloaded from {wf.url} {why}", offline=False)
            continue                     # once more from scratch: a damaged transfer or a stale partial file
        attempt += 1
        if attempt > retries:
            raise DownloadFailed(error_text(err), offline=offline)
        wait = min(2 ** attempt, 30)
        print(f"  {wf.label}: {error_text(err)}; trying again in {wait} s (resuming)", file=stream or sys.stderr)
        sleep(wait)


def _find_local(wf: WeightFile, folder: Path) -> Path | None:
    for cand in (folder / wf.rel, folder / Path(wf.rel).name):
        if cand.is_file():
            return cand
    return None


def _copy_in(src: Path, wf: WeightFile) -> None:
    part = wf.dest.with_name(wf.dest.name + ".part")
    wf.dest.parent.mkdir(parents=True, exist_ok=True)
    part.unlink(missing_ok=True)
    try:
        os.link(src, part)                   # same drive: no copy needed
    except OSError:
        shutil.copyfile(src, part)
    os.replace(part, wf.dest)


def ensure(files: list[WeightFile], *, log=None, cache: VerifiedCache | None = None, download_ok: bool = True,
           source_dir: str | os.PathLike | None = None, retries: int = 2, opener=None, sleep=time.sleep,
           stream=None, hook=None, headline: str = "Trellis Desktop cannot start", start_without: str | None = None,
           ) -> None:
    """Every file present and matching its published size and sha256 afterwards, or WeightsError saying
    which files are missing, where each comes from and where to put it (`start_without`: missing_message's)."""
    say = log.say if log is not None else (lambda text: print(text, file=stream or sys.stderr))
    missing: list[tuple[WeightFile, str]] = []
    offline_reason = None
    todo = []
    for wf in files:
        why = problem(wf.dest, wf, cache)
        if why is None:
            continue
        if why != "is missing":
            say(f"{wf.label}: {wf.dest} {why}; getting it again.")
            part = wf.dest.with_name(wf.dest.name + ".part")
            if wf.size is not None and wf.dest.stat().st_size < wf.size and not part.exists():
                os.replace(wf.dest, part)       # probably an interrupted copy: resume it
            else:
                wf.dest.unlink()
        todo.append(wf)
    if todo:
        total = sum(wf.size or 0 for wf in todo)
        try:
            where = f"; they are kept in {os.path.commonpath([str(w.dest.parent) for w in todo])}"
        except ValueError:                     # different drives
            where = ""
        unsized = sum(wf.size is None for wf in todo)
        amount = ("sizes not published" if unsized == len(todo) else
                  size_text(total) + (f", and {unsized} of unpublished size" if unsized else ""))
        say(f"Model files to get: {len(todo)} ({amount}){where}.")
    for wf in todo:
        if source_dir is not None:
            src = _find_local(wf, Path(source_dir))
            if src is not None:
                why = problem(src, wf)
                if why is None:
                    _copy_in(src, wf)
                    if cache is not None:
                        cache.record(wf.dest, wf)
                    say(f"  {wf.label}: taken from {src}")
                    continue
                say(f"  {wf.label}: {src} {why}; not used.")
        if not download_ok:
            missing.append((wf, "downloading is switched off"))
            continue
        if offline_reason is not None:
            missing.append((wf, offline_reason))
            continue
        try:
            download(wf, opener=opener, retries=retries, stream=stream, sleep=sleep, cache=cache, hook=hook)
        except DownloadFailed as e:
            missing.append((wf, e.why))
            if e.offline:
                offline_reason = e.why
        except OSError as e:                  # disk full, permissions
            missing.append((wf, f"cannot write {wf.dest}: {e.strerror or e}"))
    if missing:
        raise WeightsError(missing_message(missing, source_dir, headline, start_without), [wf for wf, _ in missing])


def missing_message(missing: list[tuple[WeightFile, str]], source_dir=None,
                    headline: str = "Trellis Desktop cannot start", start_without: str | None = None) -> str:
    """What is missing and what to do, the quickest fix first: `start_without` (how to start without the files,
    e.g. "./run.sh --skip-weights") when every missing file is one the app can start without; then how to get
    them; then each file, where it comes from and where it goes. One reason shared by all is said once."""
    reasons = {why for _, why in missing}
    shared = reasons.pop() if len(reasons) == 1 else None
    total = sum(wf.size or 0 for wf, _ in missing)
    lines = [f"{headline}: {len(missing)} model file(s) are missing or wrong ({size_text(total)}) and could not be "
             "downloaded" + (f" ({shared})." if shared else ".")]
    optional = [wf for wf, _ in missing if wf.only_for]
    if start_without and len(optional) == len(missing):
        names = ", ".join(Path(wf.rel).name for wf in optional)
        uses = "; ".join(sorted({wf.only_for for wf in optional}))
        lines += [f"Quickest fix: start without {'it' if len(optional) == 1 else 'them'}: {start_without}",
                  f"  ({names} is only for {uses}: a PNG whose transparency marks the object needs none, and for "
                  "other photos untick 'Remove background'.)",
                  "Or get the file(s):"]
    else:
        lines.append("To fix it, either:")
    lines += [
        ("  * check the internet connection (a proxy is taken from HTTPS_PROXY) and start the app again: finished "
         "files are kept and a partial download continues where it stopped;"),
        ("  * use a Hugging Face mirror: --hf-endpoint URL (or set HF_ENDPOINT); DINOv2 and u2net mirrors: "
         "TRELLIS_DINOV2_URL, TRELLIS_U2NET_URL;"),
        ("  * or download the files on another computer, put them in one folder (keeping the names below) and "
         "start with --weights-from FOLDER; each file is checked before it is used (against its published sha256 "
         "where one is published)."),
    ]
    if source_dir is not None:
        lines.append(f"(--weights-from {source_dir} did not hold the files below, or held different ones.)")
    lines.append("The file(s):")
    for wf, why in missing:
        lines += [f"  - {wf.label} ({size_text(wf.size)})" + ("" if shared else f": {why}"),
                  f"      download: {wf.url}",
                  f"      save as:  {wf.dest}"]
    return "\n".join(lines)


def ensure_for_app(layout: Layout, *, repo=None, endpoint=None, pipeline=True, source_dir=None, retries=2,
                   full_check=False, log=None, opener=None, sleep=time.sleep, stream=None,
                   manifest=None, start_without: str | None = None) -> WeightsPlan:
    """wanted_files + ensure, with the verified-file cache of the app folder (`start_without`: missing_message's)."""
    plan = wanted_files(layout, repo=repo, endpoint=endpoint, pipeline=pipeline, manifest=manifest, opener=opener,
                        log=log)
    cache = VerifiedCache(layout.verified_file, trust=not full_check)
    ensure(plan.files, log=log, cache=cache, source_dir=source_dir, retries=retries, opener=opener, sleep=sleep,
           stream=stream, start_without=start_without)
    return plan


# ------------------------------------------------------------------------------ text mode (on first use)

TEXT_MANIFEST_PATH = Path(__file__).with_name("text_weights_manifest.json")


def load_text_manifest(path: Path | None = None) -> dict:
    with open(path or TEXT_MANIFEST_PATH, encoding="utf-8") as f:
        return json.load(f)


def text_repo(size: str, manifest: dict | None = None) -> str:
    repos = (manifest or load_text_manifest())["text_repos"]
    if size not in repos:
        raise ValueError(f"unknown text model size {size!r}; choose from {', '.join(repos)}")
    return repos[size]


def text_approx_bytes(size: str, manifest: dict | None = None) -> int:
    """About how much the first text job of this size downloads (the flows and CLIP), for messages."""
    approx = (manifest or load_text_manifest())["approx_bytes"]
    return int(approx[size]) + int(approx["clip"])


def split_repo_path(value: str):
    parts = value.replace("\\", "/").split("/")
    if len(parts) < 3 or not parts[0] or not parts[1] or parts[0] in (".", ".."):
        return None
    return f"{parts[0]}/{parts[1]}", "/".join(parts[2:])


def text_model_files(models_dir: Path, size: str, *, endpoint: str | None = None, opener=None, log=None,
                     manifest: dict | None = None, base_manifest: dict | None = None,
                     cache: VerifiedCache | None = None, hook=None) -> tuple[Path, list[WeightFile]]:
    """(the text pipeline's folder, every file it needs) in the app's models folder:

        microsoft/TRELLIS-text-<size>   -> models/TRELLIS-text-<size>/   pipeline.json + its two flows
        <owner>/TRELLIS-image-large/... -> models/TRELLIS-image-large/   the decoders (the base install's files,
                                                                         checked against weights_manifest.json)
        openai/clip-vit-large-patch14   -> models/clip-vit-large-patch14/ config, weights, tokenizer

    Sizes and sha256 of the text and CLIP files come from the hub's listing (kept beside them). pipeline.json is
    fetched first (it names the rest)."""
    manifest = manifest or load_text_manifest()
    base_manifest = base_manifest or load_manifest()
    opener = opener or urllib.request.urlopen
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    revision = manifest.get("revision", "main")
    models_dir = Path(models_dir)
    repo = text_repo(size, manifest)
    folder = models_dir / repo.split("/")[-1]
    fix = "or use a downloaded copy with --text-model FOLDER"

    def from_listing(repo_id: str, dest: Path, listing: dict, rel: str) -> WeightFile:
        e = listing[rel]
        return WeightFile(f"{repo_id.split('/')[-1]} {rel}", rel, hf_url(endpoint, repo_id, revision, rel), dest / rel,
                          e.get("size"), e.get("sha256"), e.get("git_sha1"), hf_headers())

    listing = kept_listing(repo, endpoint, revision, folder, opener, fix)
    if "pipeline.json" not in listing:
        raise WeightsError(f"{repo} has no pipeline.json: it is not a TRELLIS pipeline repo.")
    pipeline = from_listing(repo, folder, listing, "pipeline.json")
    if problem(pipeline.dest, pipeline, cache) is not None:
        ensure([pipeline], log=log, cache=cache, opener=opener, hook=hook,
               headline="The text model cannot be used")
    args = json.loads(pipeline.dest.read_text(encoding="utf-8")).get("args", {})
    files = [pipeline]
    image_files = base_manifest["pipeline"]["files"]
    image_repo, image_rev = base_manifest["pipeline"]["repo"], base_manifest["pipeline"]["revision"]
    other_listings: dict[str, dict] = {}
    for value in args.get("models", {}).values():
        split = split_repo_path(value)
        if split is None or value + ".json" in listing:            # a checkpoint of the text repo itself
            for ext in (".json", ".safetensors"):
                if value + ext not in listing:
                    raise WeightsError(f"{repo} lists no {value}{ext}, which its pipeline.json names.")
                files.append(from_listing(repo, folder, listing, value + ext))
            continue
        other, stem = split
        name = other.split("/")[1]
        if name in manifest.get("image_repo_names", ()):
            # The image pipeline's own files (any mirror owner): pinned sizes and sha256 of the base manifest.
            for ext in (".json", ".safetensors"):
                e = image_files.get(stem + ext)
                if e is None:
                    raise WeightsError(f"{value}{ext} (named in {repo}'s pipeline.json) is not a file of "
                                       f"{image_repo} in weights_manifest.json.")
                files.append(WeightFile(f"{name} {stem}{ext}", stem + ext,
                                        hf_url(endpoint, image_repo, image_rev, stem + ext),
                                        models_dir / name / (stem + ext), e["bytes"], e["sha256"],
                                        headers=hf_headers()))
        else:
            if other not in other_listings:
                other_listings[other] = kept_listing(other, endpoint, revision, models_dir / name, opener, fix)
            for ext in (".json", ".safetensors"):
                files.append(from_listing(other, models_dir / name, other_listings[other], stem + ext))
    clip = manifest["clip"]
    if args.get("text_cond_model") != clip["repo"]:
        raise WeightsError(f"{repo}'s pipeline.json names the text encoder {args.get('text_cond_model')!r}, not "
                           f"{clip['repo']}: this app knows only that one.")
    clip_dir = models_dir / clip["folder"]
    clip_listing = kept_listing(clip["repo"], endpoint, revision, clip_dir, opener, fix)
    lacking = [f for f in clip["required"] if f not in clip_listing]
    if lacking:
        raise WeightsError(f"{clip['repo']} lists no {', '.join(lacking)}.")
    files += [from_listing(clip["repo"], clip_dir, clip_listing, rel) for rel in clip["files"] if rel in clip_listing]
    return folder, files


def ensure_text_model(models_dir: Path, size: str, *, endpoint: str | None = None, source_dir=None, retries: int = 2,
                      log=None, opener=None, sleep=time.sleep, stream=None, hook=None, full_check: bool = False,
                      manifest: dict | None = None, base_manifest: dict | None = None) -> Path:
    """The text pipeline folder of `size` in the app's models folder, every file present and checked (downloaded
    on first use, with progress through `hook(label, done, total)`), or WeightsError saying what to do."""
    cache = VerifiedCache(Path(models_dir) / "verified.json", trust=not full_check)
    folder, files = text_model_files(models_dir, size, endpoint=endpoint, opener=opener, log=log, manifest=manifest,
                                     base_manifest=base_manifest, cache=cache, hook=hook)
    ensure(files, log=log, cache=cache, source_dir=source_dir, retries=retries, opener=opener, sleep=sleep,
           stream=stream, hook=hook, headline="The text model cannot be used")
    return folder
