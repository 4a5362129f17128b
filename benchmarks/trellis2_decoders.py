"""TRELLIS.2's SC-VAE decoders at full size on a GPU with random weights: seconds and peak memory per stage.

    python benchmarks/trellis2_decoders.py [--voxels 8000] [--lr-voxels 4000] [--structure shell|surface]
        [--repeats 3] [--out FILE.json]

Shapes, not values, decide time and memory, so random weights are enough. ``shell``: a thick shell whose children
the random shape decoder chooses (about half of each voxel's); ``surface``: the voxels three nested sphere surfaces
cross (~23 000 latent voxels), both decoders keeping the children the surfaces cross (``guide_subs``), so each
voxel has a surface's ~16 of 27 neighbours at every level. Stages, fp16 torso as shipped:

* ``upsample``: the cascade's up-sampling (4 C2S levels, coordinates only) of a ~``--lr-voxels`` latent on
  the 32^3 grid (the 512 model's) -> fine voxels on 512^3;
* ``shape``: the shape decoder (``return_subs``) on a ~``--voxels`` latent on 64^3 -> fine voxels on 1024^3;
* ``texture``: the texture decoder following that subdivision;
* ``mesh``: the flexible-dual-grid mesh of the shape output (``to_meshes``).

Each stage runs with the sparse-conv fast path (Triton / NVRTC) and with its PyTorch twin
(``TRELLIS_FAST_PATHS=off``) on fresh tensors (neighbour maps rebuilt inside the timing). Peak memory is
the allocator's peak above what was allocated before the stage (the weights and the stage's inputs).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trellis.models as models  # noqa: E402
from trellis import fastpaths  # noqa: E402
from trellis.modules.sparse import SparseTensor  # noqa: E402

MANIFESTS = Path(__file__).resolve().parents[1] / "tests" / "data" / "state_dict_trellis2"


def build(stem: str):
    config = json.loads(json.loads((MANIFESTS / f"{stem}.json").read_text())["ckpt_json_text"])
    torch.manual_seed(0)
    with torch.device("cuda"):
        return models.from_config(config).eval()


def latent_shell(target: int, res: int, seed: int = 0) -> SparseTensor:
    """About ``target`` voxels of a thick sphere shell on a res^3 latent grid, 32 random channels."""
    r = torch.arange(res, device="cuda", dtype=torch.float32) + 0.5 - res / 2
    d = torch.sqrt(r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2)
    radius, lo, hi = res * 0.38, 0.0, res / 4
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if int((torch.abs(d - radius) < mid).sum()) < target else (lo, mid)
    xyz = (torch.abs(d - radius) < hi).nonzero().int()
    g = torch.Generator(device="cuda").manual_seed(seed)
    coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.int32, device="cuda"), xyz], 1)
    return SparseTensor(torch.randn(len(xyz), 32, device="cuda", generator=g), coords)


# The surface structure's spheres (radii as shares of the grid), nested: about 23 000 latent voxels on 64^3.
SURFACE_RADII = (0.38, 0.28, 0.18)


def surface_distance(coords: torch.Tensor, res: int) -> torch.Tensor:
    """Distance in voxels from each voxel's centre on a res^3 grid to the nearest sphere of SURFACE_RADII."""
    p = (coords[:, 1:].float() + 0.5) / res - 0.5
    r = p.norm(dim=1)
    return torch.stack([(r - q).abs() for q in SURFACE_RADII]).amin(0) * res


def surface_latent(res: int = 64, seed: int = 0) -> SparseTensor:
    """The voxels a thin surface crosses (centre within half a diagonal of it) on res^3, 32 random channels."""
    a = torch.arange(res, device="cuda")
    xyz = torch.stack(torch.meshgrid(a, a, a, indexing="ij"), -1).reshape(-1, 3).int()
    coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.int32, device="cuda"), xyz], 1)
    coords = coords[surface_distance(coords, res) < 0.87]
    g = torch.Generator(device="cuda").manual_seed(seed)
    return SparseTensor(torch.randn(len(coords), 32, device="cuda", generator=g), coords)


def surface_guides(latent: SparseTensor, res: int = 64, levels: int = 4) -> list:
    """Subdivision logits per C2S level keeping the children the surface crosses, as a trained shape decoder keeps
    a surface's (about 16 of 27 neighbours a voxel, where a random half of the children keeps fewer together)."""
    offsets = torch.tensor([[k & 1, (k >> 1) & 1, (k >> 2) & 1] for k in range(8)], device="cuda", dtype=torch.int32)
    coords, subs = latent.coords, []
    for _ in range(levels):
        children = torch.cat([coords[:, None, :1].expand(-1, 8, 1), coords[:, None, 1:] * 2 + offsets], 2)
        keep = (surface_distance(children.reshape(-1, 4), 2 * res) < 0.87).view(-1, 8)
        subs.append(SparseTensor(torch.where(keep, 1.0, -1.0).half(), coords))
        coords, res = children.reshape(-1, 4)[keep.reshape(-1)], 2 * res
    return subs


def fresh(x: SparseTensor) -> SparseTensor:
    return SparseTensor(x.feats, x.coords)


def timed(fn, repeats: int):
    """(median seconds, peak bytes above the memory allocated before, last output)."""
    out = fn()                                          # warm-up (kernel selection, caches)
    del out
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times, out = [], None
    for _ in range(repeats):
        out = None
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], torch.cuda.max_memory_allocated() - base, out


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp(min=1e-30))


@torch.no_grad()
def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--voxels", type=int, default=8000, help="latent voxels on 64^3 for the decoders")
    ap.add_argument("--lr-voxels", type=int, default=4000, help="latent voxels on 32^3 for the cascade upsample")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--structure", choices=("shell", "surface"), default="shell",
                    help="shell: a thick shell, the shape decoder's random weights choose the children (about half); "
                         "surface: three nested sphere surfaces, both decoders keep the children a surface crosses")
    ap.add_argument("--whole-share", type=float, default=None,
                    help="SparseResBlockC2S3d.WHOLE_MEMORY_SHARE for this run (0: chunked by CHUNK_ELEMENTS alone, "
                         "as before the blocks ran whole where the GPU has room)")
    ap.add_argument("--out", default="trellis2_decoders.json")
    ap.add_argument("--commit", default=None, help="commit id to record (default: provenance.source_commit())")
    args = ap.parse_args()
    commit = args.commit
    if commit is None:
        from provenance import source_commit

        commit = source_commit()
    if args.whole_share is not None:
        from trellis.models.trellis2.sc_vae_blocks import SparseResBlockC2S3d

        SparseResBlockC2S3d.WHOLE_MEMORY_SHARE = args.whole_share
    shape, tex = build("shape_dec_next_dc_f16c32_fp16"), build("tex_dec_next_dc_f16c32_fp16")
    shape.set_resolution(1024)
    lr = latent_shell(args.lr_voxels, 32, seed=1)
    if args.structure == "surface":
        hr, tex_latent = surface_latent(), surface_latent(seed=2)
        guides = surface_guides(hr)
    else:
        hr, tex_latent, guides = latent_shell(args.voxels, 64), latent_shell(args.voxels, 64, seed=2), None
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "python": platform.python_version(),
            "commit": commit, "date": time.strftime("%Y-%m-%d"), "structure": args.structure,
            "whole_share": args.whole_share,
            "latent_voxels_64": len(hr.coords),
            "latent_voxels_32": len(lr.coords), "conv_path": fastpaths.path_of("sparse_conv3d", "cuda"), "rows": [], "agreement": {}}
    print(json.dumps({k: v for k, v in info.items() if k not in ("rows", "agreement")}), flush=True)
    outs = {}
    for fast in (True, False):
        fastpaths.set_enabled(None if fast else False)
        try:
            path = fastpaths.path_of("sparse_conv3d", "cuda")
            sec, peak, fine = timed(lambda: shape.upsample(fresh(lr), times=4), args.repeats)
            rows = [("upsample", sec, peak, {"fine_voxels_512": int(fine.shape[0])})]
            own = None if guides is None else lambda: [fresh(g) for g in guides]
            sec, peak, (out, subs) = timed(lambda: shape(fresh(hr), guide_subs=own and own(), return_subs=True),
                                           args.repeats)
            rows.append(("shape", sec, peak, {"fine_voxels_1024": int(out.coords.shape[0])}))
            sec, peak, t_out = timed(lambda: tex(fresh(tex_latent), guide_subs=subs), args.repeats)
            rows.append(("texture", sec, peak, {}))
            sec, peak, meshes = timed(lambda: shape.to_meshes(out), args.repeats)
            rows.append(("mesh", sec, peak, {"vertices": int(meshes[0].vertices.shape[0]),
                                             "faces": int(meshes[0].faces.shape[0])}))
            outs[fast] = (out, subs, t_out)
        finally:
            fastpaths.set_enabled(None)
        for stage, sec, peak, extra in rows:
            row = {"stage": stage, "conv": path, "seconds": round(sec, 4), "peak_above_GiB": round(peak / 2 ** 30, 3),
                   **extra}
            info["rows"].append(row)
            print(json.dumps(row), flush=True)
    (on, _, tex_on), (off, _, tex_off) = outs[True], outs[False]
    info["agreement"]["shape: same fine voxels"] = bool(torch.equal(on.coords, off.coords))
    if torch.equal(on.coords, off.coords):
        info["agreement"]["shape: fast vs twin rel RMS"] = rel_rms(on.feats, off.feats)
        info["agreement"]["texture: fast vs twin rel RMS"] = rel_rms(tex_on.feats, tex_off.feats)
    print(json.dumps(info["agreement"]), flush=True)
    Path(args.out).write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
