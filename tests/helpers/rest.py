"""Talking to the REST API in tests: tiny job settings, request bodies, polling a job, reading a GLB answer."""
import base64
import io
import time

TIMEOUT = 120
# Tiny, fast jobs: 2 + 2 steps, an 8-frame 64² preview, a 64² texture baked from 4 views.
FAST = dict(seed=1, ss_steps=2, slat_steps=2, video_frames=8, video_resolution=64, fill_holes=False,
            texture_size=64, bake_views=4, bake_resolution=64)
# The same for the StableProjectorz endpoints, with their names where they have one.
SPZ_FAST = dict(seed=1, ss_sampling_steps=2, slat_sampling_steps=2, preview_frames=8, preview_resolution=64,
                fill_holes=False, texture_size=64, bake_views=4, bake_resolution=64)


def b64(data: bytes, prefix: bool = False) -> str:
    text = base64.b64encode(data).decode()
    return "data:image/png;base64," + text if prefix else text


def form(**values):
    """httpx form data: lists become repeated fields, everything else text."""
    return {k: [str(x).lower() if isinstance(x, bool) else str(x) for x in v] if isinstance(v, (list, tuple))
            else (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in values.items()}


def wait_job(client, job_id, timeout=TIMEOUT) -> dict:
    """The job's /v1/jobs answer once it is done, failed or cancelled (fails after `timeout` seconds)."""
    deadline = time.time() + timeout
    while True:
        info = client.get(f"/v1/jobs/{job_id}").json()
        if info["state"] in ("done", "failed", "cancelled"):
            return info
        assert time.time() < deadline, info
        time.sleep(0.05)


def load_glb(data: bytes):
    """The GLB's mesh, read by trimesh; it has faces."""
    import trimesh

    mesh = trimesh.load(io.BytesIO(data), file_type="glb", force="mesh")
    assert len(mesh.faces) > 0
    return mesh
