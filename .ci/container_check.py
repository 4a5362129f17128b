"""The REST side of .ci/container.sh: what a client of the containerised server sees, one phase per call.

    serve   URL TOKEN STATE    health with and without the token, one job to its GLB (checked), a second job left
                               running; the two job ids go to STATE (JSON)
    stopped OUTPUTS STATE      after SIGTERM: the running job's folder on the volume is complete or interrupted
    again   URL TOKEN STATE    after a new start: both earlier jobs are listed and the first one's GLB is served

Standard library plus PIL, numpy and trimesh (the app's venv). Exit 1 with the reason on any failure.
"""
import io
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

RUN_TIMEOUT_S = 600


def fail(message: str) -> None:
    print(f"container check failed: {message}", file=sys.stderr)
    sys.exit(1)


def call(url: str, token: str | None = None, data: bytes | None = None, content_type: str | None = None,
         timeout: float = 30.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_healthy(base: str, token: str, timeout_s: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            status, body = call(f"{base}/v1/health", token)
            if status == 200:
                return json.loads(body)
            last = f"HTTP {status}: {body[:200]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(1)
    fail(f"{base}/v1/health did not answer 200 within {timeout_s:.0f} s (last: {last})")


def blob_png() -> bytes:
    """An RGBA disc with real transparency, so no background removal (no u2net download) is needed."""
    import numpy as np
    from PIL import Image

    size = 96
    yy, xx = np.mgrid[:size, :size]
    a = np.zeros((size, size, 4), np.uint8)
    a[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2] = (200, 80, 40, 255)
    buf = io.BytesIO()
    Image.fromarray(a, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


# A light export (the mesh clean-up's visibility pass takes a minute on a CPU); the job stopped by SIGTERM keeps the
# preset's export, so that it is surely still running when the signal comes.
LIGHT = {"fill_holes": "false", "texture_size": "256", "bake_views": "8", "bake_resolution": "256"}


def submit(base: str, token: str, seed: int, light: bool = True) -> str:
    boundary = uuid.uuid4().hex
    fields = {"preset": "fast", "formats": "glb", "seed": str(seed), **(LIGHT if light else {})}
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in
             fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="blob.png"\r\n'
                 "Content-Type: image/png\r\n\r\n".encode() + blob_png() + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    status, answer = call(f"{base}/v1/jobs", token, body, f"multipart/form-data; boundary={boundary}")
    if status != 202:
        fail(f"POST /v1/jobs answered {status}: {answer[:300]!r}")
    return json.loads(answer)["id"]


def job(base: str, token: str, job_id: str) -> dict:
    status, body = call(f"{base}/v1/jobs/{job_id}", token)
    if status != 200:
        fail(f"GET /v1/jobs/{job_id} answered {status}: {body[:300]!r}")
    return json.loads(body)


def wait_state(base: str, token: str, job_id: str, states: tuple) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        info = job(base, token, job_id)
        if info["state"] in states:
            return info
        if info["state"] in ("failed", "cancelled"):
            fail(f"job {job_id} ended {info['state']}: {info.get('error_kind')}: {info.get('error')}")
        time.sleep(0.3)
    fail(f"job {job_id} did not reach {'/'.join(states)} within {RUN_TIMEOUT_S} s")


def check_glb(base: str, token: str, job_id: str) -> int:
    import trimesh

    status, glb = call(f"{base}/v1/jobs/{job_id}/files/model.glb", token, timeout=120)
    if status != 200:
        fail(f"GET model.glb of {job_id} answered {status}")
    if glb[:4] != b"glTF" or int.from_bytes(glb[8:12], "little") != len(glb):
        fail(f"model.glb of {job_id} is not a binary glTF of its declared length ({len(glb)} bytes)")
    scene = trimesh.load(io.BytesIO(glb), file_type="glb", force="scene")
    faces = sum(len(g.faces) for g in scene.geometry.values() if hasattr(g, "faces"))
    if faces == 0:
        fail(f"model.glb of {job_id} holds no triangles")
    return faces


def serve(base: str, token: str, state_file: str) -> None:
    health = wait_healthy(base, token)
    if not health.get("auth_required"):
        fail(f"/v1/health says no token is required: {health}")
    status, _ = call(f"{base}/v1/health")
    if status != 401:
        fail(f"/v1/health without the token answered {status}, not 401")
    started = time.monotonic()
    first = submit(base, token, seed=1)
    wait_state(base, token, first, ("done",))
    faces = check_glb(base, token, first)
    print(f"job {first}: done in {time.monotonic() - started:.1f} s; model.glb loads ({faces} triangles)")
    second = submit(base, token, seed=2, light=False)
    wait_state(base, token, second, ("running", "done"))
    Path(state_file).write_text(json.dumps({"done": first, "stopped": second}))
    print(f"job {second}: running; the server is stopped now")


def stopped(outputs: str, state_file: str) -> None:
    ids = json.loads(Path(state_file).read_text())
    for name, job_id in ids.items():
        folders = [p for p in Path(outputs).iterdir() if p.is_dir() and p.name.endswith("-" + job_id[:8])]
        if len(folders) != 1:
            fail(f"job {job_id}: expected one folder *-{job_id[:8]} in the outputs volume, found {folders}")
        folder = folders[0]
        partial = [p.name for p in folder.iterdir() if ".partial-" in p.name]
        if partial:
            fail(f"{folder} keeps partial files after the stop: {partial}")
        error = folder / "error.json"
        if (folder / "timings.json").exists() and (folder / "model.glb").exists() and not error.exists():
            print(f"job {job_id} ({name}): complete on the volume ({folder.name})")
        elif error.exists() and json.loads(error.read_text()).get("state") == "interrupted":
            print(f"job {job_id} ({name}): marked interrupted on the volume ({folder.name})")
        else:
            fail(f"{folder} is neither complete nor marked interrupted: {sorted(p.name for p in folder.iterdir())}")


def again(base: str, token: str, state_file: str) -> None:
    ids = json.loads(Path(state_file).read_text())
    wait_healthy(base, token)
    status, body = call(f"{base}/v1/jobs", token)
    listed = {j["id"]: j for j in json.loads(body)["jobs"]} if status == 200 else {}
    missing = [i for i in ids.values() if i not in listed]
    if missing:
        fail(f"GET /v1/jobs after the restart lacks {missing} (answered {status})")
    if listed[ids["done"]]["state"] != "done":
        fail(f"the finished job is listed as {listed[ids['done']]['state']} after the restart")
    faces = check_glb(base, token, ids["done"])
    kept = listed[ids["stopped"]]
    print(f"after the restart: both jobs listed (the stopped one: {kept['state']}"
          f"{', ' + kept['error_kind'] if kept.get('error_kind') else ''}); model.glb served again ({faces} triangles)")


if __name__ == "__main__":
    phase, *rest = sys.argv[1:]
    {"serve": serve, "stopped": stopped, "again": again}[phase](*rest)
