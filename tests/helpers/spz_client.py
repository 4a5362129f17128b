"""StableProjectorz's 3D mode against a server, request by request: a Python port, written here, of what its
open-source client does (Assets/_gm/Features/3D Generate/: Gen3D_MGR, Gen3D_API, Gen3D_InputPanelBuilder_UI,
Gen3D_InputElement_UI). It pings, reads the supported operations and the panel, builds its inputs with that app's
layout parser, sends their values as Newtonsoft writes them (a C# float 12 as 12.0), polls /status every second,
downloads the GLB, and cancels with an empty form POST to /interrupt (tests/desktop/api/test_spz_client.py and
test_spz_trellis2.py drive it)."""
import json
import re
import socket
import struct
import threading
from dataclasses import dataclass, field

import httpx
import numpy as np

from tests.helpers.rest import TIMEOUT, load_glb

INPUT_KINDS = {"header", "slider", "toggle", "button", "int_horizontal", "int_vertical", "str_input", "text_prompt",
               "single_multi_img_input", "dropdown"}
LAYOUT_KINDS = {"vgroup", "hgroup", "go", "space"}
STATUSES = ("PROCESSING", "PREVIEW_READY", "COMPLETE", "FAILED")
OPERATION = "make_meshes_and_tex"


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
