"""Full-size TRELLIS networks on a GPU with random weights: forward time, peak memory, fast-path agreement.

    python benchmarks/networks_gpu.py [--voxels 20000] [--repeats 3] [--out results.json]

Shapes, not values, decide time and memory, so random weights are enough. Stage 2 gets a fixed
structure of about 20 000 voxels at 64^3 (a thick sphere shell) so runs are comparable. For each
network and precision (the shipped fp16 torso, and fp32 everywhere) it reports the median forward
time and the peak allocated memory (total and above the weights). It then checks that the fast
paths (FlashAttention varlen through torch, SDPA kernels, spconv when installed) give the same
outputs as the plain PyTorch paths.
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
from trellis.modules.attention import set_backend  # noqa: E402
from trellis.modules.sparse import SparseTensor  # noqa: E402

MANIFESTS = Path(__file__).resolve().parents[1] / "tests" / "data" / "state_dict"
KEYS = ["sparse_structure_flow_model", "sparse_structure_decoder", "slat_flow_model", "slat_decoder_gs",
        "slat_decoder_rf", "slat_decoder_mesh"]


def shell_structure(target: int, res: int = 64, device="cuda") -> SparseTensor:
    """A thick spherical shell with about `target` voxels (deterministic)."""
    r = torch.arange(res, device=device, dtype=torch.float32) + 0.5 - res / 2
    d = torch.sqrt(r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2)
    radius, lo, hi = res * 0.38, 0.0, res / 4
    for _ in range(40):                      # bisect the half-thickness to hit the voxel target
        mid = (lo + hi) / 2
        if int((torch.abs(d - radius) < mid).sum()) < target:
            lo = mid
        else:
            hi = mid
    xyz = (torch.abs(d - radius) < hi).nonzero().int()
    coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.int32, device=device), xyz], 1)
    g = torch.Generator(device=device).manual_seed(0)
    return SparseTensor(torch.randn(len(xyz), 8, device=device, generator=g), coords)


def shell_pair(target: int, channels: int, drop: int = 0, device="cuda") -> SparseTensor:
    """The SLat flow's batched CFG input on the shell of ``shell_structure(target)`` less its first ``drop`` voxels:
    the structure twice along the batch, as the sampler repeats it (``_Repeated``), random features."""
    from trellis.pipelines.samplers.flow_euler import _Repeated

    coords = shell_structure(target, device=device).coords[drop:]
    g = torch.Generator(device=device).manual_seed(0)
    return _Repeated(2)(SparseTensor(torch.randn(coords.shape[0], channels, device=device, generator=g), coords))


def build(key: str, device) -> torch.nn.Module:
    config = json.loads(json.loads((MANIFESTS / f"{key}.json").read_text())["ckpt_json_text"])
    torch.manual_seed(0)
    with torch.device(device):
        model = models.from_config(config)
    return model.eval()


def inputs(key: str, structure: SparseTensor, device):
    g = torch.Generator(device=device).manual_seed(1)
    cond = torch.randn(1, 1374, 1024, device=device, generator=g)
    t = torch.tensor([700.0], device=device)
    if key == "sparse_structure_flow_model":
        return (torch.randn(1, 8, 16, 16, 16, device=device, generator=g), t, cond)
    if key == "sparse_structure_decoder":
        return (torch.randn(1, 8, 16, 16, 16, device=device, generator=g),)
    if key == "slat_flow_model":
        return (structure, t, cond)
    return (structure,)


def flat_output(key: str, out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.float()
    if isinstance(out, SparseTensor):
        return out.feats.float()
    rep = out[0]
    if key == "slat_decoder_gs":
        return torch.cat([rep._xyz, rep._scaling, rep._rotation, rep._opacity, rep._features_dc[:, 0]], 1).float()
    if key == "slat_decoder_rf":
        return torch.cat([rep.trivec.flatten(1), rep.density, rep.features_dc.flatten(1)], 1).float()
    return rep.vertices.float()


def timed(fn, repeats: int):
    fn()                                              # warm-up (kernel selection, caches)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times, out = [], None
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated()
    return sorted(times)[len(times) // 2], peak, peak - base, out


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp(min=1e-30))


def compare_backends(kind: str, fast: str, plain: str, run) -> float:
    """Relative RMS difference of `run()` with backend `fast` against backend `plain` (then back to auto)."""
    set_backend(kind, fast)
    a = run()
    set_backend(kind, plain)
    b = run()
    set_backend(kind, "auto")
    return rel_rms(a, b)


def fresh_structure(s: SparseTensor) -> SparseTensor:
    return SparseTensor(s.feats, s.coords)            # new cache: maps are rebuilt inside the timing


@torch.no_grad()
def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--voxels", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="networks_gpu.json")
    ap.add_argument("--commit", default=None, help="commit id to record (default: provenance.source_commit())")
    args = ap.parse_args()
    dev = torch.device("cuda")
    structure = shell_structure(args.voxels)
    commit = args.commit
    if commit is None:
        from provenance import source_commit

        commit = source_commit()
    from trellis.modules.sparse.conv import _spconv
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "python": platform.python_version(),
            "commit": commit, "date": time.strftime("%Y-%m-%d"), "voxels_64": len(structure.coords),
            "spconv": _spconv() is not None, "rows": [], "agreement": {}}
    print(json.dumps({k: v for k, v in info.items() if k not in ("rows", "agreement")}), flush=True)

    for key in KEYS:
        model = build(key, dev)
        weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        for precision in ("fp16", "fp32"):
            model.set_torso_dtype(torch.float16 if precision == "fp16" else torch.float32)
            weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
            for conv in (["torch", "spconv"] if info["spconv"] and key in ("slat_flow_model", "slat_decoder_mesh")
                         else ["auto"]):
                set_backend("sparse_conv", conv)

                def run():
                    x = inputs(key, fresh_structure(structure), dev)
                    return model(*x)
                sec, peak, act, out = timed(run, args.repeats)
                row = {"model": key, "precision": precision, "conv": conv, "seconds": round(sec, 4),
                       "peak_alloc_GiB": round(peak / 2 ** 30, 3), "above_weights_GiB": round(act / 2 ** 30, 3),
                       "weights_GiB": round(weights / 2 ** 30, 3), "finite": bool(torch.isfinite(flat_output(key, out)).all())}
                if key == "slat_decoder_mesh":
                    s2, p2, a2, feats = timed(lambda: model.decode_features(fresh_structure(structure)), args.repeats)
                    row["network_seconds"] = round(s2, 4)
                    row["mesh_voxels_256"] = int(feats.feats.shape[0])
                    row["vertices"], row["faces"] = int(out[0].vertices.shape[0]), int(out[0].faces.shape[0])
                info["rows"].append(row)
                print(json.dumps(row), flush=True)
            set_backend("sparse_conv", "auto")

        # fast paths vs the plain PyTorch paths, on the shipped fp16 torso
        model.set_torso_dtype(torch.float16)
        x = inputs(key, fresh_structure(structure), dev)
        if key in ("slat_flow_model", "slat_decoder_gs", "slat_decoder_rf", "slat_decoder_mesh"):
            fwd = (lambda: model.decode_features(fresh_structure(structure))) if key == "slat_decoder_mesh" \
                else (lambda: model(*inputs(key, fresh_structure(structure), dev)))
            info["agreement"][f"{key}: torch_varlen vs padded sdpa (fp16)"] = compare_backends(
                "varlen", "torch_varlen", "sdpa", lambda: flat_output(key, fwd()))
            if info["spconv"] and key in ("slat_flow_model", "slat_decoder_mesh"):
                info["agreement"][f"{key}: spconv vs torch conv (fp16)"] = compare_backends(
                    "sparse_conv", "spconv", "torch", lambda: flat_output(key, fwd()))
        if key == "sparse_structure_flow_model":
            set_backend("dense", "auto")
            fast = model(*x)
            set_backend("dense", "naive")
            plain = model(*x)
            set_backend("dense", "auto")
            info["agreement"][f"{key}: SDPA kernels vs naive fp32 attention (fp16)"] = rel_rms(fast.float(), plain.float())
        # fp16 torso vs fp32 everywhere (the reference's own fp16 noise level, spec §3.6)
        if key != "slat_decoder_mesh":
            half = flat_output(key, model(*inputs(key, fresh_structure(structure), dev)))
            model.set_torso_dtype(torch.float32)
            full = flat_output(key, model(*inputs(key, fresh_structure(structure), dev)))
            info["agreement"][f"{key}: fp16 torso vs fp32"] = rel_rms(half, full)
        model = None                                   # free the weights before the next network
        torch.cuda.empty_cache()
        print(json.dumps({k: v for k, v in info["agreement"].items() if k.startswith(key)}), flush=True)

    Path(args.out).write_text(json.dumps(info, indent=1))
    print(markdown(info))
    return 0


def markdown(info: dict) -> str:
    lines = [f"Device {info['device']}, torch {info['torch']}, commit {info['commit']}, {info['date']}, "
             f"stage-2 structure {info['voxels_64']} voxels at 64^3, spconv installed: {info['spconv']}", "",
             "| network | precision | sparse conv | forward s | peak alloc GiB | above weights GiB | weights GiB | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in info["rows"]:
        notes = ""
        if "network_seconds" in r:
            notes = (f"network {r['network_seconds']} s + FlexiCubes; {r['mesh_voxels_256']} voxels at 256^3 -> "
                     f"{r['vertices']} vertices, {r['faces']} faces")
        lines.append(f"| {r['model']} | {r['precision']} | {r['conv']} | {r['seconds']} | {r['peak_alloc_GiB']} | "
                     f"{r['above_weights_GiB']} | {r['weights_GiB']} | {notes} |")
    lines += ["", "| check | relative RMS difference |", "|---|---|"]
    lines += [f"| {k} | {v:.2e} |" for k, v in info["agreement"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
