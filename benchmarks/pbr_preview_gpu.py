"""Timing of TRELLIS.2's lit preview video (``trellis.export.pbr.video``): the turntable of a baked PBR mesh, rendered
frame by frame by our rasteriser and PBR shading, then encoded as the app's preview.mp4 is.

    python benchmarks/pbr_preview_gpu.py [--faces 500000] [--texture 2048] [--frames 120] [--resolution 512]
    python benchmarks/pbr_preview_gpu.py --device cpu --frames 60 --resolution 384      # the app's CPU preview

The mesh: a UV sphere of about ``--faces`` faces (a decimated TRELLIS.2 bake is of that size at the balanced
preset), half polished metal, half rough plastic, with a normal map and ``--texture``² maps. Reported: the surface's
set-up (normals, tangents, textures to the device), ms per frame of the render (after one warm-up frame; with
``--ssaa`` the app's choice when not given: 2 on a GPU, 1 on a CPU) and the H.264 encode of all frames.
Prints one markdown table row; ``--out`` writes it as JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trellis.export.tangents import vertex_tangents  # noqa: E402
from trellis.renderers.pbr_view import pbr_surface  # noqa: E402
from trellis.export.pbr.video import render_pbr_frames  # noqa: E402
from trellis.utils.render_utils import save_video, video_cameras  # noqa: E402


def sphere(faces: int):
    """(vertices, faces, uvs, normals) of a latitude-longitude sphere of radius 0.4 with about `faces` faces (its
    seam column duplicated so that the UVs wrap)."""
    lon = max(8, int(math.sqrt(faces)))
    lat = max(4, faces // (2 * lon))
    th = np.linspace(0, math.pi, lat + 1)
    ph = np.linspace(0, 2 * math.pi, lon + 1)
    t, p = np.meshgrid(th, ph, indexing="ij")
    n = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)
    uv = np.stack([p / (2 * math.pi), 1 - t / math.pi], -1).reshape(-1, 2)
    i, j = np.meshgrid(np.arange(lat), np.arange(lon), indexing="ij")
    a = (i * (lon + 1) + j).ravel()
    b, c, d = a + lon + 1, a + lon + 2, a + 1
    f = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return 0.4 * n, f, uv, n


def maps(size: int):
    base = np.zeros((size, size, 3), np.uint8)
    mr = np.zeros((size, size, 3), np.uint8)
    base[:, :size // 2], mr[:, :size // 2] = (230, 180, 60), (0, 60, 255)
    base[:, size // 2:], mr[:, size // 2:] = (60, 90, 200), (0, 200, 0)
    nm = np.full((size, size, 3), (128, 128, 255), np.uint8)
    nm[(np.arange(size) // 16) % 2 == 0] = (128, 200, 230)
    return base, mr, nm


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=500_000)
    ap.add_argument("--texture", type=int, default=2048)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--ssaa", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    ssaa = args.ssaa or (1 if device.type == "cpu" else 2)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    v, f, uv, n = sphere(args.faces)
    base, mr, nm = maps(args.texture)
    t = time.perf_counter()
    surface = pbr_surface(v, f, uv, n, base, mr, normal_map=nm, tangents=vertex_tangents(v, f, uv, n), device=device,
                          render_size=args.resolution * ssaa)
    sync()
    setup = time.perf_counter() - t
    ext, intr = video_cameras(args.frames)
    ext, intr = ext.to(device), intr.to(device)
    render_pbr_frames(surface, ext[:1], intr[:1], args.resolution, ssaa=ssaa)          # warm-up
    sync()
    t = time.perf_counter()
    frames = render_pbr_frames(surface, ext, intr, args.resolution, ssaa=ssaa)
    sync()
    render = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        save_video(frames, Path(tmp) / "preview.mp4", fps=24)
        encode = time.perf_counter() - t
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    row = {"device": name, "faces": int(len(f)), "texture": args.texture, "frames": args.frames,
           "resolution": args.resolution, "ssaa": ssaa, "setup_s": round(setup, 3),
           "ms_per_frame": round(render / args.frames * 1e3, 2), "render_s": round(render, 3),
           "encode_s": round(encode, 3), "total_s": round(setup + render + encode, 3)}
    print("| device | faces | texture | frames | px | ssaa | set-up s | ms/frame | render s | encode s | total s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("| " + " | ".join(str(row[k]) for k in ("device", "faces", "texture", "frames", "resolution", "ssaa",
                                                 "setup_s", "ms_per_frame", "render_s", "encode_s", "total_s")) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(row, indent=2))
    return row


if __name__ == "__main__":
    main()
