"""Image -> textured GLB end to end at full size on a GPU, per preset, and the low-VRAM proof.

    python benchmarks/e2e_gpu.py [--presets low-vram,balanced,fast,high] [--out e2e_gpu.json] [--svg e2e_gpu.svg] [--md FILE]
    python benchmarks/e2e_gpu.py --limits 6,4,3.5,3,2.5      # the proof: one fresh process per budget
    python benchmarks/e2e_gpu.py --limit-gib 4 --presets auto  # one run under a 4 GiB cap

Random full-size weights (shapes decide time and memory); the demo's sampler settings (12 + 12 steps,
CFG 7.5 / 3.0) with stage 2 fed the fixed ~20 000-voxel structure (random weights give an arbitrary
stage-1 result), then the Gaussian + mesh decoders and ``to_glb`` at default quality (simplify 0.95,
texture 1024, hole filling with the reference's 1000 views, fast bake). Each preset runs once to warm up
and once timed. Per stage: seconds and peak allocated / reserved memory; plus the end-to-end total.

Presets are the app's (desktop/settings.py: steps, guidance, texture size, bake views, precision,
offload), resolved as the app does: "low-vram" = fp16, models offloaded to pinned host memory and back,
sequential CFG below 6 GiB free; the others leave precision/offload to ``pick_preset`` (fp16 resident with
batched CFG on a big GPU); "auto" = "balanced" (so it follows a ``--limit-gib`` cap).

``--limit-gib X`` calls ``trellis.pipelines.memory.set_memory_limit`` (torch's per-process memory
fraction, X GiB / total) before anything is allocated: an allocation past the cap raises OutOfMemoryError like a card of that size would.
``--limits`` runs one subprocess per value and reports which completed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

GiB = 2 ** 30


def stage_row(name, seconds, peak_alloc, peak_res):
    return {"stage": name, "seconds": round(seconds, 3), "peak_allocated_GiB": round(peak_alloc / GiB, 3),
            "peak_reserved_GiB": round(peak_res / GiB, 3)}


def measured(name, fn, rows):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    rows.append(stage_row(name, time.perf_counter() - t0, torch.cuda.max_memory_allocated(),
                          torch.cuda.max_memory_reserved()))
    return out


def preset_settings(preset: str) -> dict:
    """The app's preset (desktop/settings.py) as pipeline + to_glb arguments; "auto" = balanced with the
    memory policy left to pick_preset."""
    from desktop.settings import GenerationSettings

    st = GenerationSettings.from_preset("balanced" if preset == "auto" else preset)
    return {"precision": st.precision, "offload": st.offload, "ss_steps": st.ss_steps, "slat_steps": st.slat_steps,
            "ss_cfg": st.ss_cfg, "slat_cfg": st.slat_cfg, "simplify": st.simplify, "fill_holes": st.fill_holes,
            "texture_size": st.texture_size, "bake_mode": st.bake_mode, "nviews": st.bake_views,
            "render_resolution": st.bake_resolution}


SAVE_MESH = None      # --save-mesh


def one_run(pipe, image, coords, preset):
    from trellis.pipelines.memory import StageTracker, pick_preset
    from trellis.utils import postprocessing_utils

    cfg = preset_settings(preset)
    pol = pick_preset(torch.device("cuda"))
    precision = pol.precision if cfg["precision"] == "auto" else cfg["precision"]
    offload = pol.offload if cfg["offload"] == "auto" else cfg["offload"]
    # batched CFG unless offloading on a small budget (as the app's auto policy does)
    cfg_batch = pol.cfg_batch if offload == pol.offload else offload == "none"
    pipe.set_memory_policy(precision=precision, offload=offload, cfg_batch=cfg_batch, cuda_graphs=False)
    resolved = {"precision": precision, "offload": offload, "cfg_batch": cfg_batch,
                **{k: v for k, v in cfg.items() if k not in ("precision", "offload")}}
    ss = {"steps": cfg["ss_steps"], "cfg_strength": cfg["ss_cfg"], "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}
    slat = {"steps": cfg["slat_steps"], "cfg_strength": cfg["slat_cfg"], "cfg_interval": [0.5, 1.0],
            "rescale_t": 3.0}
    from pipeline_gpu import sample_and_decode

    tracker = StageTracker(pipe.device)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    latent, out = sample_and_decode(pipe, image, coords, ss, slat, ("gaussian", "mesh"), tracker)
    rows = [stage_row(s["stage"], s["seconds"], s["peak_allocated_bytes"] or 0, s["peak_reserved_bytes"] or 0)
            for s in tracker.as_dicts()]
    del latent
    torch.cuda.empty_cache()
    if SAVE_MESH:                       # the decoder's mesh, e.g. for benchmarks/decimation.py --mesh
        import numpy as np

        np.savez(SAVE_MESH, vertices=out["mesh"][0].vertices.cpu().numpy(), faces=out["mesh"][0].faces.cpu().numpy())
    glb = measured("to_glb", lambda: postprocessing_utils.to_glb(
        out["gaussian"][0], out["mesh"][0], simplify=cfg["simplify"], fill_holes=cfg["fill_holes"],
        texture_size=cfg["texture_size"], bake_mode=cfg["bake_mode"], nviews=cfg["nviews"],
        render_resolution=cfg["render_resolution"], verbose=False), rows)
    torch.cuda.synchronize()
    total = time.perf_counter() - t0
    return {"preset": preset, "resolved": resolved, "total_seconds": round(total, 3), "stages": rows,
            "to_glb_stages": glb.export_info["seconds"], "glb_faces": glb.export_info["faces"],
            "cleanup_steps": glb.export_info.get("cleanup", {}).get("seconds"),
            "peak_allocated_GiB": max(r["peak_allocated_GiB"] for r in rows),
            "peak_reserved_GiB": max(r["peak_reserved_GiB"] for r in rows)}


def run_presets(args) -> dict:
    if args.limit_gib:
        from trellis.pipelines.memory import free_device_memory, set_memory_limit

        set_memory_limit("cuda", int(args.limit_gib * GiB))
        print(f"cap {args.limit_gib} GiB: free_device_memory sees {free_device_memory(torch.device('cuda')) / GiB:.2f} GiB",
              flush=True)
    from networks_gpu import shell_structure
    from pipeline_gpu import build_pipeline

    pipe = build_pipeline().to("cpu")
    pipe.set_memory_policy(precision="fp16", offload="model", cfg_batch=False, cuda_graphs=False)
    pipe = pipe.to("cuda")
    coords = shell_structure(args.voxels).coords
    image = torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "commit": args.commit,
            "date": time.strftime("%Y-%m-%d"), "voxels": int(coords.shape[0]), "limit_gib": args.limit_gib,
            "runs": {}}
    for preset in args.presets.split(","):
        one_run(pipe, image, coords, preset)            # warm-up
        torch.cuda.empty_cache()
        info["runs"][preset] = one_run(pipe, image, coords, preset)
        print(json.dumps({preset: info["runs"][preset]}), flush=True)
    return info


def proof(args) -> dict:
    results = []
    for limit in [float(x) for x in args.limits.split(",")]:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--limit-gib", str(limit), "--presets", "auto",
                               "--voxels", str(args.voxels), "--out", f"/tmp/e2e_limit_{limit}.json"],
                              capture_output=True, text=True)
        ok = proc.returncode == 0
        row = {"limit_gib": limit, "completed": ok, "wall_seconds": round(time.perf_counter() - t0, 1)}
        if ok:
            run = json.loads(Path(f"/tmp/e2e_limit_{limit}.json").read_text())["runs"]["auto"]
            row.update(resolved=run["resolved"], total_seconds=run["total_seconds"],
                       peak_allocated_GiB=run["peak_allocated_GiB"], peak_reserved_GiB=run["peak_reserved_GiB"])
        else:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            row["error"] = " | ".join(tail)[-400:]
        results.append(row)
        print(json.dumps(row), flush=True)
    done = [r["limit_gib"] for r in results if r["completed"]]
    return {"limits": results, "smallest_completed_gib": min(done) if done else None}


def svg(info: dict) -> str:
    """Two grouped bar charts (seconds, peak allocated GiB) per stage per preset, as plain SVG."""
    runs = info["runs"]
    names = list(runs)
    stages = [r["stage"] for r in runs[names[0]]["stages"]]
    colours = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759"]
    w, h, left, top, gap = 760, 230, 60, 30, 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{2 * h + gap + 40}" '
           'font-family="sans-serif" font-size="11">']
    for panel, (key, label) in enumerate([("seconds", "seconds"), ("peak_allocated_GiB", "peak allocated GiB")]):
        y0 = top + panel * (h + gap)
        vmax = max(max(r[key] for r in runs[n]["stages"]) for n in names) or 1
        out.append(f'<text x="{left}" y="{y0 - 8}" font-weight="bold">{label} per stage</text>')
        out.append(f'<line x1="{left}" y1="{y0 + h - 30}" x2="{w - 10}" y2="{y0 + h - 30}" stroke="#444"/>')
        slot = (w - left - 20) / len(stages)
        bar = slot * 0.8 / len(names)
        for i, st in enumerate(stages):
            x = left + i * slot
            out.append(f'<text x="{x + slot * 0.4:.1f}" y="{y0 + h - 15}" text-anchor="middle">{st}</text>')
            for j, n in enumerate(names):
                val = runs[n]["stages"][i][key]
                bh = (h - 50) * val / vmax
                bx = x + j * bar
                out.append(f'<rect x="{bx:.1f}" y="{y0 + h - 30 - bh:.1f}" width="{bar - 1:.1f}" height="{bh:.1f}" '
                           f'fill="{colours[j % len(colours)]}"><title>{n} {st}: {val}</title></rect>')
                out.append(f'<text x="{bx + bar / 2:.1f}" y="{y0 + h - 33 - bh:.1f}" text-anchor="middle" '
                           f'font-size="8">{val:.2f}</text>')
    for j, n in enumerate(names):
        out.append(f'<rect x="{left + j * 160}" y="{2 * h + gap + 15}" width="10" height="10" '
                   f'fill="{colours[j % len(colours)]}"/><text x="{left + j * 160 + 14}" y="{2 * h + gap + 24}">{n}</text>')
    out.append("</svg>")
    return "\n".join(out)


def markdown(info: dict) -> str:
    """The markdown table of docs/benchmarks/ (presets side by side, or the capped-memory proof)."""
    if "limits" in info:
        lines = ["| cap | completed | image → GLB s | peak alloc / reserved GiB |", "|---|---|---|---|"]
        for r in info["limits"]:
            if r["completed"]:
                lines.append(f"| {r['limit_gib']:g} GiB | yes | {r['total_seconds']:.2f} | "
                             f"{r['peak_allocated_GiB']:.2f} / {r['peak_reserved_GiB']:.2f} |")
            else:
                lines.append(f"| {r['limit_gib']:g} GiB | no | — | — |")
        return "\n".join(lines + ["", f"smallest cap that completed: {info['smallest_completed_gib']} GiB"])
    runs = info["runs"]
    names = list(runs)
    lines = [f"{info['device']}, torch {info['torch']}, commit {info['commit']}, {info['date']}, "
             f"stage 2 on {info['voxels']} voxels" + (f", cap {info['limit_gib']} GiB" if info["limit_gib"] else ""),
             "", "| stage | " + " | ".join(f"{n}: s | peak alloc / reserved GiB" for n in names) + " |",
             "|---|" + "---|---|" * len(names)]
    for i, row in enumerate(runs[names[0]]["stages"]):
        lines.append(f"| {row['stage']} | " + " | ".join(
            f"{runs[n]['stages'][i]['seconds']:.3f} | {runs[n]['stages'][i]['peak_allocated_GiB']:.2f} / "
            f"{runs[n]['stages'][i]['peak_reserved_GiB']:.2f}" for n in names) + " |")
    lines.append("| — of which " + " / ".join(runs[names[0]]["to_glb_stages"]) + " | " + " | ".join(
        " / ".join(f"{v:.2f}" for v in runs[n]["to_glb_stages"].values()) + " | " for n in names) + "|")
    lines.append("| **image → GLB** | " + " | ".join(
        f"**{runs[n]['total_seconds']:.2f}** | **{runs[n]['peak_allocated_GiB']:.2f}** / {runs[n]['peak_reserved_GiB']:.2f}"
        for n in names) + " |")
    lines += ["", "settings: " + "; ".join(f"{n}: " + ", ".join(f"{k} {v}" for k, v in runs[n]["resolved"].items())
                                          for n in names)]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="low-vram,balanced,fast,high")
    ap.add_argument("--voxels", type=int, default=20000)
    ap.add_argument("--limit-gib", type=float, default=None)
    ap.add_argument("--limits", default=None, help="comma-separated GiB caps: one fresh process each")
    ap.add_argument("--out", default="e2e_gpu.json")
    ap.add_argument("--svg", default=None)
    ap.add_argument("--md", default=None, help="also write the markdown table here")
    ap.add_argument("--commit", default=None, help="commit id to record (default: provenance.source_commit())")
    ap.add_argument("--save-mesh", default=None, help="write the (last) decoder mesh here (.npz)")
    ap.add_argument("--save-uv-input", default=None, metavar="FILE",
                    help="write the mesh the (last) to_glb gave the UV unwrap here (.npz: vertices, faces)")
    args = ap.parse_args()
    if args.commit is None:
        from provenance import source_commit

        args.commit = source_commit()
    global SAVE_MESH
    SAVE_MESH = args.save_mesh
    if args.save_uv_input:
        from export_realistic_gpu import _UV_INPUT, _record_uv_input

        _record_uv_input()
    from trellis import fastpaths

    path = fastpaths.describe("cuda")
    print("renderers:", path, flush=True)
    info = proof(args) if args.limits else run_presets(args)
    info["fast_paths"] = path          # "fast paths on (Triton kernels)" or why not (TRELLIS_FAST_PATHS=off)
    Path(args.out).write_text(json.dumps(info, indent=1))
    if args.save_uv_input and _UV_INPUT:
        import numpy as np

        np.savez(args.save_uv_input, vertices=_UV_INPUT[-1][0], faces=_UV_INPUT[-1][1])
    table = markdown(info)
    print(table)
    if args.md:
        Path(args.md).write_text(table + "\n")
    if args.svg and "runs" in info:
        Path(args.svg).write_text(svg(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
