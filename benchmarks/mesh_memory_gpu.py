"""Peak GPU memory of the full-size SLat mesh decoder and FlexiCubes (issue 14 §4), module by module.

    python benchmarks/mesh_memory_gpu.py [--voxels 20000] [--structure shell|scattered] [--plain]
    python benchmarks/mesh_memory_gpu.py --structure shell|scattered --time 5 [--blocks auto|small|one]   # seconds
    python benchmarks/mesh_memory_gpu.py --device cpu --voxels 3000 --structure scattered   # CPU, slow

Random weights, fp16 torso (fp32 on the CPU). The structure at 64^3 (~20 k voxels -> ~1.3 M at 256^3) is
the thick shell of networks_gpu.py (default: a smooth field, ~1.3 M faces), or with --structure scattered
the same number of voxels picked at random over the whole grid (~8 % occupancy, fixed seed; a noisy field
with many surface cubes, ~5x the faces: FlexiCubes' worst case). Prints the memory allocated (GiB) before /
peak / after each module call (forward pre/post hooks, peak reset at each pre-hook, so a row's peak is the
peak inside that call), then the head and FlexiCubes, and the whole decode's peak. Then it runs the plain
computation (subdivided tensor built, one fp32 cast of the torso output, as before issue 14 §4) and checks
that features and mesh are the same; --plain prints the table for the plain computation instead.

On CUDA the memory is torch.cuda.memory_allocated / max_memory_allocated; on the CPU it is the bytes of the
live tensor storages made inside the measured call (the dispatch-mode tracker of slat_memory_gpu.py, so
everything is relative to the start of the call, and allocations inside a kernel are not seen).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from networks_gpu import build, shell_structure  # noqa: E402
from slat_memory_gpu import Meter, ModulePeaks  # noqa: E402
from trellis.modules.sparse import SparseTensor, subdivide  # noqa: E402
from trellis.representations.mesh import extract_mesh  # noqa: E402

GIB = 2 ** 30


def scattered_structure(target: int, res: int = 64, device="cuda") -> SparseTensor:
    """`target` voxels picked at random over the res^3 grid (fixed seed): ~8 % occupancy for 20 000 at 64^3."""
    g = torch.Generator().manual_seed(0)
    keys = torch.randperm(res ** 3, generator=g)[:target].sort().values
    xyz = torch.stack((keys // (res * res), keys // res % res, keys % res), 1).int()
    coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.int32), xyz], 1).to(device)
    return SparseTensor(torch.randn(len(xyz), 8, generator=g).to(device), coords)


def plain_decode(m, x):
    """The decoder as it was before issue 14 §4: subdivided tensor built, Sequential layers, one fp32 cast."""
    h = m.trunk(x)
    for block in m.upsample:
        skip = block.skip_connection(h).feats.repeat_interleave(8, dim=0)
        h = block.out_layers(block.sub(block.act_layers(h)))
        h = h.replace(h.feats + skip)
    return m.out_layer(h.type(x.dtype))


def run(m, x, plain: bool, table: bool):
    meter = Meter(x.feats.device)
    peaks = ModulePeaks(meter)
    if table:
        peaks.watch(m, lambda name: name.startswith("upsample.") and name.count(".") <= 2 or name == "out_layer")
    with meter, torch.no_grad():
        start = peaks.open("decode")
        feats = plain_decode(m, x) if plain else m.decode_features(x)
        decode_peak = peaks.close()[2]
        before_fc = meter.live()
        s = feats.layout[0]
        mesh = extract_mesh(feats.coords[s, 1:], feats.feats[s], m.mesh_resolution, use_color=m.use_color)
        fc_peak = meter.peak()
        after_fc = meter.live()
    peaks.remove()
    if table:
        print(f"{'module':34s} {'before':>7s} {'peak':>7s} {'after':>7s}   (GiB allocated)")
        for n, b, p, a in peaks.rows:
            print(f"{n:34s} {b / GIB:7.3f} {p / GIB:7.3f} {a / GIB:7.3f}")
        print(f"{'decode (trunk+upsample+head)':34s} {start / GIB:7.3f} {decode_peak / GIB:7.3f} {before_fc / GIB:7.3f}")
        print(f"{'FlexiCubes (extract_mesh)':34s} {before_fc / GIB:7.3f} {fc_peak / GIB:7.3f} {after_fc / GIB:7.3f}")
        print(f"whole mesh decode peak: {max(decode_peak, fc_peak) / GIB:.3f} GiB")
    return feats, mesh


def time_only(m, fresh, runs: int, dev) -> int:
    """Seconds of decode_features and of extract_mesh (synchronised), a warm-up then ``runs`` runs."""
    import statistics
    import time

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    rows = []
    for i in range(runs + 1):
        with torch.no_grad():
            sync()
            t0 = time.perf_counter()
            feats = m.decode_features(fresh())
            sync()
            t1 = time.perf_counter()
            s = feats.layout[0]
            mesh = extract_mesh(feats.coords[s, 1:], feats.feats[s], m.mesh_resolution, use_color=m.use_color)
            sync()
            t2 = time.perf_counter()
        if i:
            rows.append((t1 - t0, t2 - t1))
        faces = mesh.faces.shape[0]
        del feats, mesh
    dec, fc = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
    print(f"decoder {dec:.4f} s, FlexiCubes {fc:.4f} s, total {dec + fc:.4f} s (median of {runs}; {faces} faces); "
          f"runs: {[(round(a, 4), round(b, 4)) for a, b in rows]}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--voxels", type=int, default=20000)
    ap.add_argument("--structure", choices=["shell", "scattered"], default="shell",
                    help="thick shell (smooth field) or the same number of voxels scattered at random (noisy field)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--plain", action="store_true", help="print the table of the plain computation")
    ap.add_argument("--time", type=int, default=0, metavar="N",
                    help="only time it: N runs after a warm-up, seconds of the decoder and of FlexiCubes (median)")
    ap.add_argument("--blocks", choices=["auto", "small", "one"], default="auto",
                    help="FlexiCubes' blocks: by free memory (the library's), the smallest (CUBE_BLOCK / FACE_BLOCK, "
                         "what the CPU uses), or one block for the whole mesh")
    args = ap.parse_args()
    import trellis.representations.mesh.flexicubes as fc
    if args.blocks == "small":
        fc._block_sizes = lambda device: (fc.CUBE_BLOCK, fc.FACE_BLOCK)
    elif args.blocks == "one":
        fc._block_sizes = lambda device: (1 << 40, 1 << 40)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    m = build("slat_decoder_mesh", dev)
    if cuda:
        m.set_torso_dtype(torch.float16)
    structure = (shell_structure if args.structure == "shell" else scattered_structure)(args.voxels, device=dev)
    print(f"{torch.cuda.get_device_name(dev) if cuda else 'cpu'}; {args.structure}: {len(structure.coords)} "
          f"voxels at 64^3")
    fresh = lambda: SparseTensor(structure.feats, structure.coords)  # noqa: E731  (maps built inside)
    if args.time:
        return time_only(m, fresh, args.time, dev)
    if cuda:
        run(m, fresh(), args.plain, False)                           # warm-up (kernels, tables)
        torch.cuda.empty_cache()
    feats, mesh = run(m, fresh(), args.plain, True)
    print(f"voxels at {m.mesh_resolution}^3: {feats.feats.shape[0]}; mesh: {mesh.vertices.shape[0]} vertices, "
          f"{mesh.faces.shape[0]} faces")
    feats = (feats.feats, mesh.vertices, mesh.faces)
    del mesh
    if cuda:
        torch.cuda.empty_cache()
    other, omesh = run(m, fresh(), not args.plain, False)
    print(f"{'plain' if not args.plain else 'new'} computation: features identical: "
          f"{torch.equal(feats[0], other.feats)} (max abs diff {(feats[0] - other.feats).abs().max().item():.3g}); "
          f"faces identical: {torch.equal(feats[2], omesh.faces)}; vertices max abs diff "
          f"{(feats[1] - omesh.vertices).abs().max().item():.3g} ({omesh.vertices.shape[0]} vertices, "
          f"{omesh.faces.shape[0]} faces)")
    # FlexiCubes' float sums are atomic adds on CUDA: the same features give vertices equal to rounding
    # (on the CPU they are bit for bit equal).
    s = other.layout[0]
    again = extract_mesh(other.coords[s, 1:], other.feats[s], m.mesh_resolution, use_color=m.use_color)
    print(f"same features extracted again: faces identical: {torch.equal(again.faces, omesh.faces)}; vertices max "
          f"abs diff {(again.vertices - omesh.vertices).abs().max().item():.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
