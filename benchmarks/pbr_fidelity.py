"""How much of what the voxels hold a TRELLIS.2 PBR GLB keeps: truth -> O-Voxel -> ``ovoxel_to_glb`` -> GLB, compared
with the truth on the surface.

    python benchmarks/pbr_fidelity.py [--res 512] [--shapes nut goblet torus bunny] [--settings balanced game]
    python benchmarks/pbr_fidelity.py --device cuda --res 512,1024 --out pbr_fidelity_gpu.json
    python benchmarks/pbr_fidelity.py --quick              # 128^3, two shapes, few samples: a minute on a CPU
    python benchmarks/pbr_fidelity.py --point-texels       # the bake without its texel fit (before / after)
    python benchmarks/pbr_fidelity.py --res 1024 --shapes nut --settings balanced --texture 1024 2048

Each shape of ``pbr_truth`` (closed, with known PBR fields) becomes the O-Voxel a perfect decoder would hand over
(``pbr_truth.perfect_ovoxel``; cached under ``.cache/pbr_fidelity``), then per setting:

- **voxels** (the ceiling): points drawn by area on the dense dual-grid mesh, moved to their closest point of the
  true surface, take the voxels' attribute there (trilinear, and nearest) and are compared with the truth there:
  base colour PSNR (dB, values as stored: the decoder's), metallic wrong (share of the surface where metallic is on
  the other side of 0.5), roughness MAE. "dense" reads the voxels at the dense mesh's point instead (what a bake that
  reads the dense mesh can hold at best).
- **glb**: the written GLB read back with trimesh; points drawn by area on its triangles, their colour and
  metallic-roughness looked up by UV with bilinear filtering of the textures; each compared with the truth at its
  closest point of the true surface ("vs_truth"), and with the voxels' trilinear attribute there ("vs_voxels": what
  the bake itself lost). Also the GLB's boundary and non-manifold edges (seams welded by position), texel use, the
  UV method and the seconds of each stage.

Settings: "balanced" and "game" are the app's TRELLIS.2 job options (``desktop.jobs.trellis2_steps.pbr_options`` of
the Balanced preset, and with the Game engine destination); "default" is ``PbrOptions()`` (500 k faces, 2048²).
``--texture`` runs each setting at each given texture side instead of its own (rows keyed "balanced@2048").
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pbr_truth import SHAPES, closest_chunks, make_shape, perfect_ovoxel, truth  # noqa: E402
from provenance import source_commit  # noqa: E402
from trellis.representations.ovoxel import MeshWithVoxel  # noqa: E402

CACHE = ROOT / ".cache" / "pbr_fidelity"
CACHE_VERSION = 1
SETTINGS = ("balanced", "game", "default")


def pbr_settings(name: str):
    """The ``PbrOptions`` of a setting's name (see the module docstring)."""
    from trellis.export import PbrOptions

    if name == "default":
        return PbrOptions()
    from desktop.jobs.trellis2_steps import pbr_options
    from desktop.settings import GenerationSettings, with_destination

    s = GenerationSettings.from_preset("balanced")
    if name == "game":
        s = s.replace(**with_destination({"destination": "game"}))
    elif name != "balanced":
        raise KeyError(f"unknown setting {name!r}; choose from {', '.join(SETTINGS)}")
    return pbr_options(s)


def cached_ovoxel(shape_name: str, res: int, device, use_cache: bool = True):
    """(``MeshWithVoxel`` on ``device``, its facts, the shape) built once per shape and resolution."""
    shape = make_shape(shape_name, device)
    path = CACHE / f"{shape_name}_{res}_v{CACHE_VERSION}.pt"
    if use_cache and path.exists():
        d = torch.load(path)
        mesh = MeshWithVoxel(d["vertices"], d["faces"], d["coords"], res, d["attrs"]).to(device)
        return mesh, d["facts"], shape
    mesh, facts = perfect_ovoxel(shape, res, device)
    if use_cache:
        CACHE.mkdir(parents=True, exist_ok=True)
        torch.save({"vertices": mesh.vertices.cpu(), "faces": mesh.faces.cpu(), "coords": mesh.coords.cpu(),
                    "attrs": mesh.attrs.cpu(), "facts": facts}, path)
    return mesh, facts, shape


# ------------------------------------------------------------------------------------------ measures


def area_samples(vertices: torch.Tensor, faces: torch.Tensor, n: int, seed: int = 0):
    """(face [n], barycentrics [n, 3], points [n, 3]) drawn uniformly by area."""
    g = torch.Generator().manual_seed(seed)
    tri = vertices[faces].double()
    area = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1).norm(dim=-1)
    face = torch.multinomial(area.cpu().float(), n, replacement=True, generator=g).to(vertices.device)
    r = torch.rand(n, 2, generator=g, dtype=torch.float64).to(vertices.device)
    s = r[:, 0].sqrt()
    bary = torch.stack([1 - s, s * (1 - r[:, 1]), s * r[:, 1]], 1)
    points = (tri[face] * bary[:, :, None]).sum(1)
    return face, bary, points.float()


def scores(pred: torch.Tensor, want: torch.Tensor) -> dict:
    """Base colour PSNR (dB), metallic wrong share (%), roughness MAE of [N, >=5] attributes against the truth's."""
    mse = float(((pred[:, :3].double() - want[:, :3].double()) ** 2).mean())
    wrong = ((pred[:, 3] > 0.5) != (want[:, 3] > 0.5)).double().mean()
    return {"psnr": round(10 * math.log10(1.0 / max(mse, 1e-12)), 2), "metal_wrong_pct": round(100 * float(wrong), 3),
            "rough_mae": round(float((pred[:, 4] - want[:, 4]).abs().double().mean()), 4)}


def dense_used(mesh: MeshWithVoxel):
    """The dual-grid mesh without its unused vertices (vertices, faces)."""
    used, inv = torch.unique(mesh.faces.reshape(-1), return_inverse=True)
    return mesh.vertices[used], inv.reshape(-1, 3)


def voxel_ceiling(mesh: MeshWithVoxel, shape, n: int) -> dict:
    """What the voxels hold (see the module docstring)."""
    v, f = dense_used(mesh)
    _, _, points = area_samples(v, f, n, seed=1)
    q, _ = closest_chunks(shape, points)
    want = truth(q).to(q.device)
    return {"trilinear": scores(mesh.query_attrs(q), want),
            "nearest": scores(mesh.query_attrs(q, mode="nearest"), want),
            "dense": scores(mesh.query_attrs(points), want),
            "offset_mean": float((q - points).norm(dim=-1).mean() * mesh.res)}


def bilinear(image: np.ndarray, uv: torch.Tensor) -> torch.Tensor:
    """[N, C] float texels of ``image`` [H, W, C] uint8 (row 0 = top) at ``uv`` [N, 2] (v up), bilinear with texel
    centres at (i + 0.5) / size, edges clamped."""
    img = torch.as_tensor(np.array(image), device=uv.device).float() / 255.0
    if img.ndim == 2:
        img = img[..., None]
    h, w = img.shape[:2]
    x = uv[:, 0].double() * w - 0.5
    y = (1 - uv[:, 1].double()) * h - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0)[:, None].float(), (y - y0)[:, None].float()
    x0, y0 = x0.long(), y0.long()

    def at(yy, xx):
        return img[yy.clamp(0, h - 1), xx.clamp(0, w - 1)]
    return ((at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx) * (1 - fy)
            + (at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx) * fy)


def read_glb(path):
    """(vertices [V,3] z up, faces [F,3], uvs [V,2] v up, base colour image, metallic-roughness image) of a GLB with
    one PBR mesh, through trimesh."""
    import trimesh

    scene = trimesh.load(str(path), process=False)
    geoms = list(scene.geometry.items()) if hasattr(scene, "geometry") else [("mesh", scene)]
    if len(geoms) != 1:
        raise ValueError(f"expected one mesh in {path}, found {len(geoms)}")
    name, m = geoms[0]
    v = np.asarray(m.vertices, np.float64)
    if hasattr(scene, "graph"):
        node = next(n for n in scene.graph.nodes_geometry if scene.graph[n][1] == name)
        mat = scene.graph[node][0]
        v = v @ mat[:3, :3].T + mat[:3, 3]
    v = np.stack([v[:, 0], -v[:, 2], v[:, 1]], 1)                    # glTF y up -> z up
    mat = m.visual.material
    return (v, np.asarray(m.faces, np.int64), np.asarray(m.visual.uv, np.float64),
            np.asarray(mat.baseColorTexture.convert("RGB")), np.asarray(mat.metallicRoughnessTexture.convert("RGB")))


def glb_attributes(base: np.ndarray, mr: np.ndarray, uv: torch.Tensor) -> torch.Tensor:
    """[N, 5] base colour, metallic, roughness of textures at ``uv`` (glTF: G roughness, B metallic)."""
    rgb = bilinear(base, uv)
    m = bilinear(mr, uv)
    return torch.cat([rgb, m[:, 2:3], m[:, 1:2]], 1)


def edge_counts(vertices: np.ndarray, faces: np.ndarray) -> dict:
    """Boundary and non-manifold edges of a mesh whose seams are welded by position."""
    _, weld = np.unique(np.round(np.asarray(vertices, np.float64), 7), axis=0, return_inverse=True)
    f = weld.reshape(-1)[faces]
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
    e = e[e[:, 0] != e[:, 1]]
    _, count = np.unique(e[:, 0] * (len(vertices) + 1) + e[:, 1], return_counts=True)
    return {"boundary_edges": int((count == 1).sum()), "nonmanifold_edges": int((count > 2).sum())}


def glb_fidelity(path, mesh: MeshWithVoxel, shape, n: int) -> dict:
    """The GLB at ``path`` against the truth and the voxels (see the module docstring)."""
    return surface_fidelity(*read_glb(path), mesh, shape, n)


def surface_fidelity(v, f, uv, base, mr, mesh: MeshWithVoxel, shape, n: int) -> dict:
    """``glb_fidelity`` of ``read_glb``'s arrays."""
    dev = mesh.device
    vt = torch.as_tensor(v, dtype=torch.float32, device=dev)
    ft = torch.as_tensor(f, device=dev)
    face, bary, points = area_samples(vt, ft, n, seed=2)
    uvs = (torch.as_tensor(uv, device=dev)[ft[face]] * bary[:, :, None]).sum(1)
    got = glb_attributes(base, mr, uvs)
    q, _ = closest_chunks(shape, points)
    want = truth(q).to(dev)
    out = {"vs_truth": scores(got, want), "vs_voxels": scores(got, mesh.query_attrs(q)),
           "offset_mean": float((q - points).norm(dim=-1).mean() * mesh.res),
           "faces": int(len(f)), "texture": int(base.shape[0])}
    out.update(edge_counts(v, f))
    return out


# ------------------------------------------------------------------------------------------ the run


def run_one(shape_name: str, res: int, settings: list, device, samples: int, use_cache: bool = True,
            keep_dir=None, textures=None) -> dict:
    from trellis.export.pbr import ovoxel_to_glb

    t0 = time.perf_counter()
    mesh, facts, shape = cached_ovoxel(shape_name, res, device, use_cache)
    v, f = dense_used(mesh)
    row = {"shape": shape_name, "res": res, "voxels": facts["voxels"], "dense_faces": int(f.shape[0]),
           "voxelise_s": facts["seconds"], "dense": edge_counts(v.cpu().numpy(), f.cpu().numpy()),
           "voxels_hold": voxel_ceiling(mesh, shape, samples), "settings": {}}
    print(f"{shape_name} {res}^3: {facts['voxels']} voxels, {row['dense_faces']} faces, voxels hold "
          f"{row['voxels_hold']['trilinear']} ({time.perf_counter() - t0:.1f} s)", flush=True)
    runs = [(name, None) for name in settings] if not textures else [(n, t) for n in settings for t in textures]
    for name, size in runs:
        options = pbr_settings(name)
        if size:
            options = dataclasses.replace(options, texture_size=int(size))
            name = f"{name}@{size}"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(keep_dir or tmp) / f"{shape_name}_{res}_{name}.glb"
            t1 = time.perf_counter()
            textured = ovoxel_to_glb(mesh, path, options)
            export_s = time.perf_counter() - t1
            info = textured.info
            glb_bytes = path.stat().st_size
            got = glb_fidelity(path, mesh, shape, samples)
        got.update(export_s=round(export_s, 2), glb_bytes=glb_bytes,
                   texel_use=round(info.get("covered_share", float("nan")), 4),
                   uv_method=info.get("uv_method"), seconds={**info.get("prepare_seconds", {}), **info["seconds"]},
                   target_faces=options.face_target(int(f.shape[0])), texture_size=options.texture_size,
                   normal_map=options.normal_map, texel_fit=info.get("texel_fit"))
        row["settings"][name] = got
        print(f"  {name}: {got['faces']} faces, {got['texture']}², texel use {got['texel_use']:.3f} "
              f"({got['uv_method']}), vs truth {got['vs_truth']}, vs voxels {got['vs_voxels']}, boundary "
              f"{got['boundary_edges']}, non-manifold {got['nonmanifold_edges']}, {export_s:.1f} s, "
              f"{glb_bytes / 1e6:.1f} MB, stages {got['seconds']}", flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--res", default="512", help="grid resolutions, comma separated (powers of two)")
    ap.add_argument("--shapes", nargs="+", default=["nut", "goblet", "torus", "bunny"], choices=SHAPES)
    ap.add_argument("--settings", nargs="+", default=["balanced", "game"], choices=SETTINGS)
    ap.add_argument("--samples", type=int, default=200_000, help="surface samples per measure")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-cache", action="store_true", help="voxelise again (no .cache/pbr_fidelity)")
    ap.add_argument("--keep", default=None, help="folder to keep the GLBs in")
    ap.add_argument("--quick", action="store_true", help="128^3, nut and goblet, 50 k samples")
    ap.add_argument("--point-texels", action="store_true",
                    help="the bake without its texel fit (point-sampled texels: the bake before the fit)")
    ap.add_argument("--texture", nargs="+", type=int, default=None,
                    help="texture sides to run each setting at instead of its own (e.g. 1024 2048)")
    ap.add_argument("--out", default=None, help="JSON file of the rows")
    a = ap.parse_args(argv)
    if a.quick:
        a.res, a.shapes, a.samples = "128", ["nut", "goblet"], 50_000
    device = torch.device(a.device)
    if a.point_texels:
        import functools

        from trellis.export.pbr import bake as bake_module, export as export_module
        export_module.bake_pbr_textures = functools.partial(bake_module.bake_pbr_textures, fit_texels=False)
    rows = []
    for res in [int(r) for r in str(a.res).split(",")]:
        for shape in a.shapes:
            rows.append(run_one(shape, res, a.settings, device, a.samples, not a.no_cache, a.keep, a.texture))
    record = {"commit": source_commit(), "device": str(device), "texel_fit": not a.point_texels,
              "torch_threads": torch.get_num_threads(),
              "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
