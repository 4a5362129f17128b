# SPDX-License-Identifier: GPL-3.0-or-later
"""Trellis Desktop's REST API (/v1) from Blender: requests, multipart bodies, messages for every way a request can
fail, and one job (submit, poll, download) run in a background thread. Standard library only and no bpy, so it runs,
and is tested, in any Python.

The API (desktop/api in the Trellis Desktop folder): `POST /v1/jobs` takes a multipart form (files `images` and
`mesh`, text fields `prompt`, `preset`, `formats`, `target_faces`, `texture_size`, `keep_mesh`, `model_family`,
`pipeline_type`, `topology`, ...) and answers 202 with the job; `GET /v1/jobs/{id}` reports `state` (queued,
running, done, failed, cancelled), `progress` (fraction, percent, label, step, total, eta_s), `error` and `files`; `POST /v1/jobs/{id}/cancel` cancels it;
`GET /v1/presets` lists the presets and `GET /v1/health` the model families (`family_info`: each one's id, words,
pipeline types and whether it is installed there). With a token the server wants `Authorization: Bearer TOKEN` on
every request.
"""
import errno
import http.client
import ipaddress
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

DEFAULT_PORT = 7960                       # desktop/api/server.py's DEFAULT_PORT
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
ENDED = ("done", "failed", "cancelled")
# The model families the panel offers until the server is asked (GET /v1/health's family_info, read with the
# presets, then replaces them with the server's own list), in the server's words. A family not installed there is
# still offered: the server refuses its job with how to install it.
KNOWN_FAMILIES = (
    {"id": "trellis", "words": "TRELLIS v1", "about": "TRELLIS-image-large: a textured mesh", "pipeline_types": []},
    {"id": "trellis2", "words": "TRELLIS.2", "about": "TRELLIS.2-4B: a sharper mesh with PBR materials (metal, "
     "roughness)", "pipeline_types": ["512", "1024", "1024_cascade", "1536_cascade"]},
)
# What each pipeline type the panel may offer costs, in a word (a type the server adds is offered without one).
PIPELINE_WORDS = {"512": "the fastest", "1024": "1024 in one pass", "1024_cascade": "512 refined to 1024: the "
                  "reference's default", "1536_cascade": "the finest, slowest, most GPU memory"}
# The panel's Topology choice -> the job's `topology` setting. Quads come back as the OBJ (glTF holds only
# triangles), whose MTL and the images it names are fetched beside it.
TOPOLOGY_WORDS = {"TRIANGLES": "triangles", "QUADS": "quads"}
START_SERVER = ("Start it in the Trellis Desktop folder: .venv/bin/python -m desktop api (Windows: "
                ".venv\\Scripts\\python -m desktop api). Install the app first with ./run.sh (Linux, macOS) or "
                "run.bat (Windows); those start the app's web page, the API server is started by that command")


class ApiProblem(Exception):
    """A request that did not work, with the message to show. kind: down, unreachable, auth, refused, invalid,
    not_api, server, failed, cancelled, protocol."""

    def __init__(self, message: str, kind: str = "server", status=None):
        super().__init__(message)
        self.message, self.kind, self.status = message, kind, status


def normalize_url(url: str) -> str:
    """'127.0.0.1:7960/' -> 'http://127.0.0.1:7960' (ApiProblem when it is no http(s) URL)."""
    text = (url or "").strip().rstrip("/")
    if text and "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiProblem(f"the server URL {url!r} is not an http address like {DEFAULT_URL}", "invalid")
    return text


def is_loopback_url(url: str) -> bool:
    """Whether `url` names this computer (no internet access is involved)."""
    host = urllib.parse.urlsplit(normalize_url(url)).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def detail_text(detail) -> str:
    """The API's error `detail` (a message, or FastAPI's list of problems) as one line."""
    if isinstance(detail, list):
        return "; ".join(f"{p.get('loc', ['?'])[-1]}: {p.get('msg', '')}" if isinstance(p, dict) else str(p)
                         for p in detail)
    return str(detail)


def encode_multipart(fields: dict, files: list) -> tuple:
    """(body, content type) of a multipart/form-data request: `fields` {name: text}, `files` [(name, file name,
    bytes, content type)]."""
    boundary = "trellis-" + uuid.uuid4().hex
    chunks = []
    for name, value in fields.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        chunks.append(str(value).encode("utf-8") + b"\r\n")
    for name, filename, data, ctype in files:
        safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe}"\r\n'
                      f"Content-Type: {ctype}\r\n\r\n".encode("utf-8"))
        chunks.append(bytes(data) + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def parse_fields(text: str) -> dict:
    """'seed=1 ss_steps=20, formats=glb' -> {'seed': '1', ...}: more settings of POST /v1/jobs (the server checks
    them). ApiProblem for a piece without '='."""
    out = {}
    for piece in (text or "").replace(",", " ").replace(";", " ").split():
        name, sep, value = piece.partition("=")
        if not sep or not name.strip():
            raise ApiProblem(f"more settings: write NAME=VALUE pairs (e.g. seed=42 ss_steps=20), not {piece!r}",
                             "invalid")
        out[name.strip()] = value.strip()
    return out


def choice_id(family: dict) -> str:
    """The panel's choice of a family (Blender's enum identifier): its API id in capitals ("TRELLIS2")."""
    return str(family["id"]).upper()


def chosen_family(model: str, families=None):
    """The family (as family_info describes it) of the panel's choice `model`; None for "SERVER" (its own)."""
    return next((f for f in families or KNOWN_FAMILIES if choice_id(f) == model), None)


def pipeline_types(model: str, families=None) -> list:
    """The pipeline types a job of the panel's choice takes: its family's (none: one path); for the server's own
    model, every family's (the server's rule answers one its family does not use)."""
    family = chosen_family(model, families)
    every = [t for f in families or KNOWN_FAMILIES for t in f.get("pipeline_types") or ()]
    return list(family.get("pipeline_types") or ()) if family is not None else list(dict.fromkeys(every))


def model_fields(model: str, pipeline_type: str, families=None) -> dict:
    """The form fields of the panel's model choice ("SERVER": the server's own) and pipeline type ("SERVER": the
    preset's), for the server's `families` (family_info; None: KNOWN_FAMILIES); a family with one path is sent
    no pipeline type."""
    fields = {}
    family = chosen_family(model, families)
    if family is not None:
        fields["model_family"] = family["id"]
    if pipeline_type in pipeline_types(model, families):
        fields["pipeline_type"] = pipeline_type
    return fields


def topology_fields(choice: str) -> dict:
    """The form fields of the panel's Topology choice: none for triangles (the server's default), the setting and
    the OBJ for quads."""
    if choice not in TOPOLOGY_WORDS:
        raise ApiProblem(f"unknown topology {choice!r} (one of {', '.join(TOPOLOGY_WORDS)})", "invalid")
    return {"topology": "quads", "formats": "obj"} if choice == "QUADS" else {}


def image_type(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    return {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
            ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff"}.get(ext, "application/octet-stream")


def progress_text(job: dict) -> str:
    """A job's state in one line: 'queued (2 ahead)', '45% Sampling the structure 3/12, 20 s left', ..."""
    state, p = job.get("state", "?"), job.get("progress") or {}
    if state == "queued":
        ahead = job.get("queue_position")
        return "queued" + (f" ({ahead} ahead)" if ahead else "")
    if state in ("failed", "cancelled"):
        return f"{state}: {job.get('error') or ''}".rstrip(": ")
    text = f"{p.get('percent', 0)}% {p.get('label') or p.get('stage', '')}".strip()
    if p.get("total"):
        text += f" {p.get('step', 0)}/{p['total']}"
    if p.get("eta_s") is not None and p["eta_s"] >= 1 and state == "running":
        text += f", {int(p['eta_s'] + 0.5)} s left"
    return text


class Client:
    """Requests to one server (`url`, with `token` when the server wants one)."""

    def __init__(self, url: str, token: str = "", timeout: float = 30.0):
        self.url, self.token, self.timeout = normalize_url(url), (token or "").strip(), timeout
        # A proxy from the environment must not see requests to this computer (nor answer them for the server).
        handlers = [urllib.request.ProxyHandler({})] if is_loopback_url(self.url) else []
        self.opener = urllib.request.build_opener(*handlers)

    def request(self, method: str, path: str, body: bytes = None, ctype: str = None, timeout: float = None) -> bytes:
        """The answer's body; ApiProblem with the message to show when the request fails."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if ctype:
            headers["Content-Type"] = ctype
        req = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
        try:
            with self.opener.open(req, timeout=timeout or self.timeout) as answer:
                return answer.read()
        except urllib.error.HTTPError as err:
            raise self.http_problem(err.code, err.read(), path) from None
        except urllib.error.URLError as err:
            raise self.connection_problem(err.reason) from None
        except (ConnectionError, socket.timeout, http.client.HTTPException, OSError) as err:
            raise self.connection_problem(err) from None

    def json(self, method: str, path: str, **kw):
        data = self.request(method, path, **kw)
        try:
            return json.loads(data)
        except ValueError:
            raise ApiProblem(f"{self.url} answered {method} {path} with something that is not JSON: it is not "
                             f"Trellis Desktop's API server (its default address is {DEFAULT_URL})",
                             "not_api") from None

    def connection_problem(self, reason) -> ApiProblem:
        if isinstance(reason, ConnectionRefusedError) or getattr(reason, "errno", None) == errno.ECONNREFUSED:
            return ApiProblem(f"Trellis Desktop's API server is not running at {self.url} (connection refused). "
                              + START_SERVER, "down")
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return ApiProblem(f"{self.url} did not answer within {self.timeout:g} s: is it Trellis Desktop's API "
                              "server, and is it still running?", "unreachable")
        if isinstance(reason, socket.gaierror):
            return ApiProblem(f"cannot find the computer of {self.url}: check the server URL", "unreachable")
        return ApiProblem(f"cannot reach {self.url}: {getattr(reason, 'strerror', None) or reason}", "unreachable")

    def http_problem(self, status: int, data: bytes, path: str) -> ApiProblem:
        try:
            detail, ours = detail_text(json.loads(data).get("detail", "")), True
        except (ValueError, AttributeError):
            detail, ours = data[:200].decode("utf-8", "replace").strip(), False
        if status == 401:
            if not self.token:
                return ApiProblem("the server wants a token: enter the one it was started with (its --token, or "
                                  "TRELLIS_DESKTOP_API_TOKEN) in the Token field", "auth", status)
            return ApiProblem("the server refused the token (401): enter the one it was started with (its --token, "
                              "or TRELLIS_DESKTOP_API_TOKEN)", "auth", status)
        if status == 403:
            return ApiProblem(f"the server refused the request (403): {detail}. Check the token", "auth", status)
        if status == 400 and "host" in detail.lower():
            return ApiProblem(f"the server only answers requests to this computer's own name without a token: use "
                              f"{DEFAULT_URL}, or start the server with --token and enter it here ({detail})",
                              "refused", status)
        if status in (404, 405) and (not ours or detail in ("Not Found", "Method Not Allowed")):
            return ApiProblem(f"{self.url} has no {path} ({status}): it is not Trellis Desktop's API server, or an "
                              f"older one (its default address is {DEFAULT_URL}; the app's web page, port 7860, is "
                              "another server)", "not_api", status)
        if status == 422:
            return ApiProblem(f"the server refused the job's settings or inputs: {detail}", "invalid", status)
        return ApiProblem(f"the server answered {status}: {detail}", "server", status)

    # ------------------------------------------------------------------------------------------- endpoints

    def presets(self) -> dict:
        """GET /v1/presets: {'default': name, 'presets': {name: settings}}."""
        return self.json("GET", "/v1/presets")

    def health(self) -> dict:
        """GET /v1/health: the server's model, its families (`families`, `family_info`) and queue."""
        return self.json("GET", "/v1/health")

    def choices(self) -> dict:
        """What the panel offers from this server: the presets (as `presets` gives them) and `family_info`, the
        model families (None from a server that does not list them: the panel keeps KNOWN_FAMILIES)."""
        found = self.presets()
        info = self.health().get("family_info")
        ok = isinstance(info, list) and all(isinstance(f, dict) and "id" in f for f in info) and info
        return {**found, "family_info": info if ok else None}

    def submit(self, fields: dict, files: list) -> dict:
        body, ctype = encode_multipart(fields, files)
        return self.json("POST", "/v1/jobs", body=body, ctype=ctype, timeout=max(self.timeout, 120))

    def job(self, job_id: str) -> dict:
        return self.json("GET", f"/v1/jobs/{urllib.parse.quote(job_id)}")

    def cancel(self, job_id: str) -> None:
        """POST /v1/jobs/{id}/cancel; a job that has already ended (409) is left as it is."""
        try:
            self.request("POST", f"/v1/jobs/{urllib.parse.quote(job_id)}/cancel")
        except ApiProblem as err:
            if err.status != 409:
                raise

    def download(self, url_path: str, dest: str) -> str:
        data = self.request("GET", url_path, timeout=max(self.timeout, 300))
        with open(dest, "wb") as f:
            f.write(data)
        return dest


def glb_file(job: dict):
    """The job's GLB entry of `files` (model.glb), or None."""
    files = job.get("files") or []
    return next((f for f in files if f.get("kind") == "glb"), None) or \
        next((f for f in files if f.get("name") == "model.glb"), None)


def obj_file(job: dict):
    """The job's OBJ entry of `files` (model.obj), or None."""
    return next((f for f in job.get("files") or [] if f.get("kind") == "obj"), None)


def mtl_names(text: str) -> list:
    """The files an MTL names (map_Kd, map_Pr, norm, ... : the last word of each such line)."""
    names = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and (words[0].lower().startswith("map_") or words[0].lower() in ("bump", "norm", "disp")):
            names.append(os.path.basename(words[-1]))
    return names


class Task:
    """One job run in a daemon thread: submit `fields` + `files`, poll until it ends, download its result (the GLB;
    for quads the OBJ with its MTL and images) into a temporary folder. The main thread reads snapshot() (never
    blocks on the network) and calls cleanup() when it
    has used the file. cancel() asks the server to stop the job."""

    def __init__(self, client: Client, fields: dict, files: list, label: str, poll_s: float = 0.5,
                 temp_root: str = None):
        self.client, self.fields, self.files, self.label, self.poll_s = client, fields, files, label, poll_s
        self.temp_root = temp_root
        self.lock = threading.Lock()
        self.state, self.message, self.fraction, self.job_id = "submitting", "sending the job", 0.0, None
        self.error_kind, self.result_path, self.folder = None, None, None
        self.cancel_requested = False
        self.thread = threading.Thread(target=self.run, name=f"trellis-job-{label}", daemon=True)

    def start(self) -> "Task":
        self.thread.start()
        return self

    def cancel(self) -> None:
        with self.lock:
            self.cancel_requested = True
            if self.job_id is None and self.state == "submitting":
                self.message = "cancelling as soon as the server has the job"

    def snapshot(self) -> dict:
        with self.lock:
            return {"state": self.state, "message": self.message, "fraction": self.fraction, "job_id": self.job_id,
                    "error_kind": self.error_kind, "result_path": self.result_path, "label": self.label,
                    "finished": self.state in ENDED and not self.thread.is_alive()}

    def set(self, **values) -> None:
        with self.lock:
            for k, v in values.items():
                setattr(self, k, v)

    def run(self) -> None:
        try:
            self.set(**self.follow())
        except ApiProblem as err:
            self.set(state="failed", message=err.message, error_kind=err.kind)
        except Exception as err:                    # the thread must always end in a state the panel can show
            self.set(state="failed", message=f"unexpected error: {type(err).__name__}: {err}", error_kind="internal")

    def follow(self) -> dict:
        job = self.client.submit(self.fields, self.files)
        self.set(job_id=job["id"], state=job["state"], message=progress_text(job))
        cancel_sent = False
        while job["state"] not in ENDED:
            if self.cancel_requested and not cancel_sent:
                self.client.cancel(job["id"])
                cancel_sent = True
            time.sleep(self.poll_s)
            job = self.client.job(job["id"])
            fraction = float((job.get("progress") or {}).get("fraction") or 0.0)
            self.set(state=job["state"] if job["state"] not in ENDED else "finishing", fraction=fraction,
                     message=("cancelling: " if cancel_sent and job["state"] not in ENDED else "")
                     + progress_text(job))
        if job["state"] == "cancelled":
            why = job.get("error") or ""
            return {"state": "cancelled", "error_kind": "cancelled",
                    "message": f"job {job['id']} was cancelled" + (f": {why}" if why not in ("", "cancelled") else "")}
        if job["state"] == "failed":
            kind = job.get("error_kind") or "failed"
            return {"state": "failed", "error_kind": kind,
                    "message": f"the job failed ({kind}): {job.get('error') or 'no reason given'}"}
        if self.fields.get("topology") == "quads" and obj_file(job) is not None:
            return self.download_obj(job)
        entry = glb_file(job)
        if entry is None:
            return {"state": "failed", "error_kind": "protocol",
                    "message": f"job {job['id']} ended without a GLB (its files: "
                               f"{', '.join(f.get('name', '?') for f in job.get('files') or []) or 'none'})"}
        self.set(state="downloading", message=f"downloading {entry['name']} ({entry.get('size_bytes', 0) // 1024} KB)")
        folder = tempfile.mkdtemp(prefix="trellis_blender_", dir=self.temp_root)
        self.set(folder=folder)
        path = self.client.download(entry["url"], os.path.join(folder, "model.glb"))
        return {"state": "done", "fraction": 1.0, "result_path": path, "message": "downloaded, adding it to the scene"}

    def download_obj(self, job: dict) -> dict:
        """The OBJ, its MTL and the images the MTL names, under their own names in one folder (the OBJ names its
        MTL, the MTL its images, by file name)."""
        entries = {f.get("name"): f for f in job.get("files") or []}
        entry = obj_file(job)
        self.set(state="downloading", message=f"downloading {entry['name']} ({entry.get('size_bytes', 0) // 1024} KB)")
        folder = tempfile.mkdtemp(prefix="trellis_blender_", dir=self.temp_root)
        self.set(folder=folder)
        path = self.client.download(entry["url"], os.path.join(folder, os.path.basename(entry["name"])))
        for mtl in [f for f in entries.values() if f.get("kind") == "mtl"]:
            mtl_path = self.client.download(mtl["url"], os.path.join(folder, os.path.basename(mtl["name"])))
            with open(mtl_path, encoding="utf-8", errors="replace") as f:
                wanted = mtl_names(f.read())
            for name in dict.fromkeys(wanted):
                if name in entries:
                    self.client.download(entries[name]["url"], os.path.join(folder, name))
        return {"state": "done", "fraction": 1.0, "result_path": path, "message": "downloaded, adding it to the scene"}

    def cleanup(self) -> None:
        """Remove the downloaded file's folder (after the result is in the scene, or when it is not wanted)."""
        with self.lock:
            folder, self.folder, self.result_path = self.folder, None, None
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


class Call:
    """A short request (presets, say) in a daemon thread: `result` or `error` (an ApiProblem) once `done`."""

    def __init__(self, fn, *args):
        self.result, self.error, self.done = None, None, False
        self.thread = threading.Thread(target=self.run, args=(fn, *args), name="trellis-call", daemon=True)
        self.thread.start()

    def run(self, fn, *args) -> None:
        try:
            self.result = fn(*args)
        except ApiProblem as err:
            self.error = err
        except Exception as err:                    # shown to the user rather than lost in a thread
            self.error = ApiProblem(f"unexpected error: {type(err).__name__}: {err}", "internal")
        self.done = True
