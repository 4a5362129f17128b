"""StableProjectorz's 3D mode against a live server (uvicorn, the tiny random-weight pipeline on the CPU),
request by request: a Python port, written here, of what its open-source client does (Assets/_gm/Features/
3D Generate/: Gen3D_MGR, Gen3D_API, Gen3D_InputPanelBuilder_UI, Gen3D_InputElement_UI). It pings, reads
the supported operations and the panel, builds its inputs with that app's layout parser, sends their values
as Newtonsoft writes them (a C# float 12 as 12.0), polls /status every second, downloads the GLB, and
cancels with an empty form POST to /interrupt. Then the request shapes other clients send."""
import json
import os
import re
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest

from desktop.api import ServerDefaults, create_app
from desktop.jobs import JobRunner
from desktop.settings import MAX_SEED, RULES, GenerationSettings, number_range
from images import rgba_blob
from test_api import FAST, TIMEOUT, LiveServer, b64, load_glb

INPUT_KINDS = {"header", "slider", "toggle", "button", "int_horizontal", "int_vertical", "str_input", "text_prompt",
               "single_multi_img_input", "dropdown"}
LAYOUT_KINDS = {"vgroup", "hgroup", "go", "space"}
STATUSES = ("PROCESSING", "PREVIEW_READY", "COMPLETE", "FAILED")
OPERATION = "make_meshes_and_tex"
# Settings the panel has no control for, which /generate takes under their own names: a small bake with no hole
# filling, so that a generation is seconds of CPU (what is checked is the requests and answers, not the texture).
SMALL_BAKE = dict(fill_holes=False, bake_views=4, bake_resolution=64)


# ------------------------------------------------------------------------------------------ the layout parser

@dataclass
class Portion:
    kind: str
    props: dict = field(default_factory=dict)
    indent: int = -1
    children: list = field(default_factory=list)


def parse_line(line: str) -> Portion:
    """One line: its type, then key=value properties; a value in (...) keeps spaces, ':' and inner
    parentheses; outside them a space or ':' ends a property."""
    head, _, rest = line.partition(" ")
    portion = Portion(head.lower())
    if not rest:
        return portion
    depth, name, value, naming = 0, "", "", True
    for ch in rest + " ":
        if ch == "(":
            depth += 1
            if depth == 1:
                continue
        elif ch == ")":
            depth -= 1
            if depth == 0:
                portion.props[name], name, value, naming = value, "", "", True
                continue
        if depth == 0 and ch in " :":
            if name:
                portion.props[name], name, value, naming = value, "", "", True
            continue
        if depth == 0 and ch == "=":
            naming = False
            continue
        if naming:
            name += ch
        else:
            value += ch
    return portion


def parse_layout(text: str) -> Portion:
    """The element tree: a line's parent is the nearest line above it that is indented less; a lone
    top-level vgroup is the root itself."""
    root, stack = Portion("vgroup"), []
    stack.append(root)
    for raw in text.split("\n"):
        line = raw.rstrip()
        if not line.strip():
            continue
        portion = parse_line(line.strip())
        portion.indent = len(line) - len(line.lstrip())
        while len(stack) > 1 and stack[-1].indent >= portion.indent:
            stack.pop()
        stack[-1].children.append(portion)
        stack.append(portion)
    if len(root.children) == 1 and root.children[0].kind == "vgroup":
        return root.children[0]
    return root


def cs_float(text):
    """C#'s float.TryParse (invariant culture): a float32, or None."""
    if text is None or not re.fullmatch(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", text):
        return None
    return np.float32(float(text))


def cs_int(text):
    """C#'s int.TryParse: an Int32, or None (no decimal point, no exponent)."""
    if text is None or not re.fullmatch(r"\s*[+-]?\d+\s*", text) or not -2 ** 31 <= int(text) < 2 ** 31:
        return None
    return int(text)


def cs_bool(text):
    return {"true": True, "false": False}.get((text or "").strip().lower())


def unbracket(value: str) -> str:
    return value[1:-1] if value.startswith("(") and value.endswith(")") else value


@dataclass
class PanelInput:
    """One spawned input: what it shows and what it sends (GetValueData)."""
    kind: str
    code_name: str
    label: str
    value: object = None
    lo: object = None
    hi: object = None
    as_seed: bool = False
    min_needed: dict = field(default_factory=dict)

    def set(self, value) -> None:
        """The user types or drags a value: sliders clamp to their range as a float32, ints as given."""
        if self.kind == "slider":
            self.value = np.float32(min(max(float(value), float(self.lo)), float(self.hi)))
        else:
            self.value = value

    def ready(self, operation: str) -> bool:
        """isReady_ForGenerate: enough images or characters (only these inputs can have a minimum)."""
        need = self.min_needed.get(operation)
        return need is None or len(self.value) >= need


def min_needed(text) -> dict:
    """content_min_num_needed: "operation:N, ..." pairs, or a bare N for make_meshes_and_tex."""
    if text is None or ":" not in text:
        return {OPERATION: cs_int(text)} if cs_int(text) is not None else {}
    pairs = [p.split(":") for p in text.split(",")]
    return {p[0].strip(): cs_int(p[1]) for p in pairs if len(p) == 2 and cs_int(p[1]) is not None}


def spawn(portion: Portion, inputs: list, unknown: list) -> None:
    """Spawn_Element: layout elements hold their children; every other known type is an input (headers and
    buttons too: they send null); an unknown type spawns nothing, not even its children."""
    p, kind = portion.props, portion.kind
    if kind not in INPUT_KINDS | LAYOUT_KINDS:
        unknown.append(kind)
        return
    if kind in INPUT_KINDS:
        defaults = {"slider": "unnamed_slider", "toggle": "unnamed_toggle", "int_horizontal": "unnamed_int",
                    "int_vertical": "unnamed_int", "str_input": "unnamed_str", "text_prompt": "unnamed_prompt",
                    "single_multi_img_input": "unnamed_str", "dropdown": "unnamed_dropdown", "header": "",
                    "button": "unnamed_button"}
        code = p.get("code_name", defaults[kind])
        item = PanelInput(kind, code if kind == "button" else unbracket(code), unbracket(p.get("visible_name", "")))
        if kind == "slider":
            lo, hi, default = (cs_float(p.get(k, d)) for k, d in (("min", "0"), ("max", "1"), ("default", "0.5")))
            assert None not in (lo, hi, default), f"StableProjectorz cannot read this slider's numbers: {p}"
            item.lo, item.hi = lo, hi
            item.set(default)
        elif kind in ("int_horizontal", "int_vertical"):
            lo, hi, default = (cs_int(p.get(k, d)) for k, d in (("min", "0"), ("max", "100"), ("default", "0")))
            assert None not in (lo, hi, default), f"StableProjectorz cannot read this field's integers: {p}"
            item.lo, item.hi, item.value = lo, hi, default
            item.as_seed = kind == "int_horizontal" and bool(cs_bool(p.get("as_seed", "false")))
        elif kind == "toggle":
            item.value = bool(cs_bool(p.get("default", "false")))
        elif kind == "dropdown":
            item.value = cs_int(p.get("default", "0")) or 0
        elif kind in ("text_prompt", "str_input"):
            item.value = unbracket(p.get("default", ""))
        elif kind == "single_multi_img_input":
            item.value = []
        if kind in ("text_prompt", "str_input", "single_multi_img_input"):
            item.min_needed = min_needed(p.get("content_min_num_needed"))
        inputs.append(item)
    for child in portion.children:
        spawn(child, inputs, unknown)


def gather(inputs: list) -> dict:
    """gather_all_ui_inputs + generate_what: a C# Dictionary, whose Add refuses a code name seen before."""
    values = {}
    for item in inputs:
        assert item.code_name not in values, f"duplicate code name {item.code_name!r}: StableProjectorz would throw"
        values[item.code_name] = item.value if item.kind not in ("header", "button") else None
    values["generate_what"] = OPERATION
    return values


def newtonsoft(values: dict) -> str:
    """JsonConvert.SerializeObject: compact; a C# float in its shortest round-trip form, always with a point."""
    def one(v):
        if isinstance(v, np.float32):
            text = str(v)
            return text if any(c in text for c in ".eE") else text + ".0"
        return json.dumps(v, ensure_ascii=False)
    return "{" + ",".join(f"{json.dumps(k)}:{one(v)}" for k, v in values.items()) + "}"


# ------------------------------------------------------------------------------------------ the requests

def send_request(base: str, path: str, body: bytes, content_type: str) -> socket.socket:
    """A POST written to its connection in full (the answer is read later with read_answer)."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=TIMEOUT * 3)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nConnection: close\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def read_answer(sock: socket.socket) -> tuple:
    """(status code, body) of the answer on a connection the server closes after it."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


class Gen3D:
    """Gen3D_API: a generation is a POST /generate left open while /status is polled every second, from
    right after the POST was sent; the first status other than PROCESSING (from either) ends the wait, and
    no parsed answer then means failure."""

    def __init__(self, base: str, poll_s: float = 1.0):
        self.base, self.poll_s = base, poll_s
        self.cancelled = threading.Event()
        self.polls: list = []
        self.http = None                                       # (status code, parsed body) of the POST

    def generate(self, values: dict) -> dict:
        state = {"status": "PROCESSING", "response": None}
        answered = threading.Event()
        sock = send_request(self.base, "/generate", newtonsoft(values).encode(), "application/json")

        def submit():
            try:
                code, body = read_answer(sock)
                try:
                    self.http = (code, json.loads(body))
                except ValueError:
                    self.http = (code, body)
                response = self.http[1] if code < 400 else None
                if not isinstance(response, dict) or response.get("status") not in STATUSES:
                    response = None
                state.update(response=response, status=response["status"] if response else "FAILED")
            finally:
                answered.set()
        thread = threading.Thread(target=submit, daemon=True)
        thread.start()
        with httpx.Client(base_url=self.base, timeout=30) as c:
            while state["status"] == "PROCESSING" and not self.cancelled.is_set():
                st = c.get("/status").json()
                self.polls.append((st["status"], st["progress"], st["message"]))
                assert isinstance(st["progress"], int) and isinstance(st["busy"], bool)
                if st["status"].upper() in STATUSES:
                    state["status"] = st["status"].upper()
                if state["status"] != "PROCESSING":
                    break
                answered.wait(self.poll_s)
            if self.cancelled.is_set():
                return {"cancelled": True, "thread": thread}
            # The answer went out before the status changed: it is read within a frame or so.
            answered.wait(1.0)
            if state["response"] is None:
                return {"error": "No response from generation request"}
            if state["status"] == "FAILED":
                return {"error": f"Generation failed: {state['response']['message']}"}
            model = c.get("/download/model")
            assert model.status_code == 200, model.text
            return {"response": state["response"], "model": model.content}

    def cancel(self) -> httpx.Response:
        """CancelGeneration: stop waiting, then POST /interrupt with an empty form body."""
        self.cancelled.set()
        return httpx.post(self.base + "/interrupt", content=b"", timeout=30,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})


def connect(base: str) -> tuple:
    """What the client does before its Generate button works: ping, then its two polls."""
    ping = httpx.get(base + "/ping", timeout=30)
    assert ping.status_code == 200 and ping.json()["status"] == "running"
    operations = httpx.get(base + "/info/supported_operations", timeout=30).json()
    assert operations == [OPERATION]
    panel = httpx.get(base + "/download/spz-ui-layout/generation-3d-panel", timeout=30)
    assert panel.status_code == 200 and panel.headers["content-type"].startswith("text/plain")
    inputs, unknown = [], []
    spawn(parse_layout(panel.text), inputs, unknown)
    assert unknown == [], f"lines StableProjectorz cannot place: {unknown}"
    gather(inputs)                                          # every code name once: the client could send it
    return {i.code_name: i for i in inputs}, panel.text


def check_glb(data: bytes) -> None:
    """glTF 2.0 binary: header, a JSON chunk first, and a mesh trimesh can load."""
    magic, version, length = struct.unpack_from("<4sII", data)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    size, kind = struct.unpack_from("<I4s", data, 12)
    assert kind == b"JSON" and json.loads(data[20:20 + size])["asset"]["version"] == "2.0"
    load_glb(data)


# ------------------------------------------------------------------------------------------ servers

@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    return b64(open(rgba_blob(tmp_path_factory.mktemp("img") / "blob.png"), "rb").read())


def serve(runner):
    return LiveServer(create_app(runner, defaults=ServerDefaults(preset="fast")))


@pytest.fixture(scope="module")
def server(tiny_pipeline_dir, tmp_path_factory):
    runner = JobRunner(tiny_pipeline_dir, tmp_path_factory.mktemp("spz_out"), device="cpu")
    live = serve(runner)
    yield live
    live.close()
    runner.shutdown(cancel=True, wait=True, timeout=30)


def test_stable_projectorz_generates_and_cancels(server, image):
    inputs, text = connect(server.url)
    fast = GenerationSettings.from_preset("fast")
    assert [i.kind for i in inputs.values() if i.kind not in ("header", "button")] == [
        "single_multi_img_input", "slider", "slider", "int_horizontal", "int_horizontal", "slider", "int_horizontal",
        "int_horizontal"]
    assert inputs["single_multi_img_input"].min_needed == {OPERATION: 1} and "prompt" not in inputs
    for code, ours, default in [("ss_strength", "ss_cfg", fast.ss_cfg), ("slat_strength", "slat_cfg", fast.slat_cfg),
                                ("mesh_simplify", "simplify", fast.simplify)]:
        item = inputs[code]
        assert item.kind == "slider" and (item.lo, item.hi) == tuple(map(np.float32, number_range(ours))), code
        assert item.value == np.float32(default), code
    for code, default in [("ss_steps", fast.ss_steps), ("slat_steps", fast.slat_steps),
                          ("texture_size", fast.texture_size)]:
        item = inputs[code]
        assert (item.lo, item.hi, item.value) == (*number_range(code), default) and not item.as_seed, code
    seed = inputs["seed"]
    assert (seed.lo, seed.hi, seed.value, seed.as_seed) == (-1, MAX_SEED, -1, True)
    assert "\\n" in inputs["ss_strength"].label                     # a two-line label under the dial
    assert text == httpx.get(server.url + "/download/spz-ui-layout/generation-3d-panel").text    # unchanged

    # Generate is disabled until an image is in the slot; then the panel's values, a few turned down.
    assert not all(i.ready(OPERATION) for i in inputs.values())
    inputs["single_multi_img_input"].set([image])
    assert all(i.ready(OPERATION) for i in inputs.values())
    for code, value in [("ss_steps", 2), ("slat_steps", 2), ("texture_size", 64), ("seed", 5)]:
        inputs[code].set(value)
    inputs["slat_strength"].set(3.5)
    values = gather(inputs.values())
    body = newtonsoft(values)
    assert '"ss_strength":7.5,' in body and '"slat_strength":3.5,' in body and '"ss_steps":2,' in body
    assert '"title":null' in body and body.endswith('"generate_what":"make_meshes_and_tex"}')
    client = Gen3D(server.url)
    result = client.generate({**values, **SMALL_BAKE})
    assert "error" not in result, (result, client.polls, client.http)
    assert result["response"]["status"] == "COMPLETE" and result["response"]["model_url"] == "/download/model"
    check_glb(result["model"])
    assert client.polls and all(s in STATUSES for s, _, _ in client.polls)
    job = httpx.get(f"{server.url}/v1/jobs/{result['response']['job_id']}").json()
    s = job["settings"]
    assert (s["ss_steps"], s["slat_steps"], s["texture_size"], job["seed"], s["slat_cfg"]) == (2, 2, 64, 5, 3.5)
    assert (s["preset"], s["formats"], s["simplify"]) == ("fast", ["glb"], fast.simplify)

    # A long one (a data: URL this time, as other clients send it), cancelled the way the client does.
    inputs["single_multi_img_input"].set(["data:image/png;base64," + image])
    inputs["ss_steps"].set(RULES["ss_steps"][2])
    long = Gen3D(server.url, poll_s=0.2)
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(long.generate(gather(inputs.values()))))
    runner.start()
    deadline = time.time() + 60
    while not any(m.startswith("Sampling structure") for _, _, m in long.polls):
        assert time.time() < deadline and runner.is_alive(), (long.polls, outcome)
        time.sleep(0.05)
    stop = long.cancel()
    assert stop.status_code == 200 and stop.json() == {"status": "interrupt_requested"}
    runner.join(TIMEOUT)
    assert outcome.get("cancelled")
    outcome["thread"].join(TIMEOUT)
    assert long.http[0] == 499 and long.http[1]["error_kind"] == "cancelled", long.http
    status = httpx.get(server.url + "/status").json()
    assert status["status"] == "FAILED" and "cancel" in status["message"].lower() and not status["busy"]
    idle = long.cancel()
    assert idle.json() == {"status": "no_generation_in_progress"}
    check_glb(httpx.get(server.url + "/download/model").content)      # the last model is still there


def test_status_stays_processing_until_the_answer_is_out(server, image):
    """The client ends its wait at the first status other than PROCESSING and then needs the generation's
    answer: by then that answer must already be on its connection."""
    body = json.dumps({"single_multi_img_input": [image], "ss_steps": 2, "slat_steps": 2, "texture_size": 64,
                       "seed": 1, "generate_what": OPERATION, **SMALL_BAKE}).encode()
    sock = send_request(server.url, "/generate", body, "application/json")
    seen = []
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            deadline = time.time() + TIMEOUT
            while True:
                st = c.get("/status").json()["status"]
                seen.append(st)
                if st != "PROCESSING":
                    break
                assert time.time() < deadline, seen
                time.sleep(0.01)
        assert select.select([sock], [], [], 0)[0], f"/status said {st} before the answer was sent"
        code, answer = read_answer(sock)
    finally:
        sock.close()
    assert code == 200 and st == "COMPLETE" and json.loads(answer)["status"] == "COMPLETE"
    assert seen[0] == "PROCESSING"


@pytest.mark.slow
def test_text_prompt_only_with_a_text_model(tiny_text_models_dir, tmp_path):
    runner = JobRunner(os.path.join(tiny_text_models_dir, "TRELLIS-image-large"), tmp_path / "out", device="cpu",
                       text_model=os.path.join(tiny_text_models_dir, "TRELLIS-text-tiny"))
    live = serve(runner)
    try:
        inputs, _ = connect(live.url)
        prompt = inputs["prompt"]
        assert prompt.kind == "text_prompt" and prompt.value == "" and prompt.min_needed == {}
        assert inputs["single_multi_img_input"].min_needed == {}       # a prompt alone may start it
        prompt.set("a small red chair")
        for code, value in [("ss_steps", 2), ("slat_steps", 2), ("texture_size", 64)]:
            inputs[code].set(value)
        client = Gen3D(live.url, poll_s=0.5)
        result = client.generate({**gather(inputs.values()), **SMALL_BAKE})
        assert "error" not in result, (result, client.polls, client.http)
        check_glb(result["model"])
        job = httpx.get(f"{live.url}/v1/jobs/{result['response']['job_id']}").json()
        assert job["kind"] == "text" and job["prompt"] == "a small red chair"
    finally:
        live.close()
        runner.shutdown(cancel=True, wait=True, timeout=30)


# ------------------------------------------------------------------------------------------ what clients send

def test_request_shapes(server, image):
    """Whole floats on StableProjectorz's endpoints only; generate_what, images and prompt checked; formats
    as one comma-separated string in /v1's JSON too. Each accepted value is proven by the next check failing
    (an image that is no image), so no job runs here."""
    not_image = b64(b"GIF89a but not really an image")
    c = httpx.Client(base_url=server.url, timeout=30)

    def post(path, **body):
        return c.post(path, json=body)
    r = post("/generate", single_multi_img_input=[not_image], ss_steps=12.0, texture_size=512.0, seed=-1.0)
    assert r.status_code == 422 and "not an image file" in r.text, r.text            # the numbers passed
    r = post("/generate", single_multi_img_input=[image], ss_steps=12.5, slat_steps=2)
    assert r.status_code == 422 and r.json()["detail"] == [{
        "loc": ["body", "ss_steps"], "type": "int_from_float",
        "msg": "ss_steps takes a whole number, got 12.5 (12 or 12.0 are accepted, 12.5 is not)"}], r.text
    r = post("/generate_no_preview", image_base64=not_image, ss_sampling_steps=3.0, texture_size=64.0)
    assert r.status_code == 422 and "not an image file" in r.text, r.text
    r = post("/generate_no_preview", image_base64=image, ss_sampling_steps=3.25)
    assert r.status_code == 422 and "ss_sampling_steps takes a whole number" in r.text, r.text
    r = post("/generate", single_multi_img_input=[image], ss_steps=float("1e300"))
    assert r.status_code == 422 and "ss_steps" in r.text, r.text                          # whole, but out of range
    r = post("/v1/jobs", images=[image], ss_steps=12.0)
    assert r.status_code == 422 and "valid integer" in r.text, r.text                     # /v1 stays strict

    for what in ("retexture", "make_mesh", ""):
        r = post("/generate", single_multi_img_input=[image], generate_what=what)
        assert r.status_code == 422 and "make_meshes_and_tex" in r.text and "supported_operations" in r.text, r.text
    r = post("/generate", single_multi_img_input=[image], prompt="a chair")
    assert r.status_code == 422 and "not both" in r.text, r.text
    r = post("/generate", single_multi_img_input=[], prompt="  ")
    assert r.status_code == 422 and "no image" in r.text, r.text
    r = post("/generate", single_multi_img_input=["data:image/png;base64," + not_image])
    assert r.status_code == 422 and "not an image file" in r.text, r.text              # the prefix was read

    r = post("/v1/jobs", images=[not_image], formats="glb, ply")
    assert r.status_code == 422 and "not an image file" in r.text, r.text
    for formats, words in [("glb,nope", "formats"), ("", "choose at least one"), (" , ", "choose at least one")]:
        r = post("/v1/jobs", images=[image], formats=formats)
        assert r.status_code == 422 and words in r.text, (formats, r.text)
    assert post("/v1/jobs/nope/export", formats="glb,ply").status_code == 404          # read, then no such job
    assert post("/v1/jobs/nope/export", formats="glb,fbx").status_code == 422
    r = post("/v1/jobs", images=[image], formats="glb,ply", **{k: v for k, v in FAST.items() if k != "seed"})
    assert r.status_code == 202 and r.json()["settings"]["formats"] == ["glb", "ply"], r.text
    assert c.post(f"/v1/jobs/{r.json()['id']}/cancel").status_code in (200, 409)
    c.close()
