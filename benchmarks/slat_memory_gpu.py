"""Peak memory of the full-size SLat flow (stage 2) above its weights, lean mode off / on (issue 14 §4).

    python benchmarks/slat_memory_gpu.py [--voxels 20000 35000] [--precision fp16] [--table]
    python benchmarks/slat_memory_gpu.py --device cpu --blocks 2 --voxels 30000 --table   # CPU, slow

Random weights (shapes, not values, decide memory), the 64^3 thick-shell structure of networks_gpu.py, batch 1
(the low-VRAM preset runs the CFG passes one at a time), t = 700, a 1374-token condition. For each structure
it runs the forward with `lean` off (the resident path) and on (what the pipeline switches on when it offloads,
MemoryPolicy.offload == "model") and prints the peak allocated memory above what was allocated before the call
(weights and inputs; each call gets a fresh structure, so the maps cached per structure are built inside it, as
in a stage's first step), and the relative RMS difference of the two outputs (0 when identical; at most fp16
rounding where the GPU picks another GEMM tiling for a row chunk).

On CUDA the peak is torch.cuda.max_memory_allocated after a warm-up call of each mode (workspaces that stay
allocated are then part of the baseline). On the CPU it is the peak of the bytes of live tensor storages made
by ATen operators inside the call (a dispatch-mode tracker; allocations inside a kernel that no operator sees
are not counted). The CPU numbers are not the GPU's: there the convolution's PyTorch twin gathers fp32
neighbour blocks (up to 256 MiB) and attention upcasts to fp32, where the GPU runs the Triton conv and flash
attention on fp16 tensors. --table adds each top-level module's peak (both devices).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from networks_gpu import shell_structure  # noqa: E402
import trellis.models as models  # noqa: E402
from trellis.modules.sparse import SparseTensor  # noqa: E402

MIB = 2 ** 20
CONFIG = Path(__file__).resolve().parents[1] / "tests" / "data" / "state_dict" / "slat_flow_model.json"


class LiveStorages(TorchDispatchMode):
    """Bytes of the tensor storages that ATen operators create while it is active, and their running peak.

    A storage is counted when an operator first returns it (outputs that share an input's storage, views and
    in-place results, are not new) and uncounted when it is freed (a weakref finalizer on the storage)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, size: int) -> None:
        self.live -= size
        self._seen.discard(key)

    def reset_peak(self) -> None:
        self.peak = self.live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in tree_flatten((args, kwargs))[0]
                  if isinstance(a, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if key in inputs or key in self._seen or size == 0:
                continue
            self._seen.add(key)
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key, size)
        return out


class Meter:
    """live() / peak() / reset_peak() of the device's allocated memory (CUDA) or of LiveStorages (CPU)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.tracker = None if self.cuda else LiveStorages()

    def __enter__(self):
        if self.tracker is not None:
            self.tracker.__enter__()
        return self

    def __exit__(self, *exc):
        if self.tracker is not None:
            self.tracker.__exit__(*exc)

    def live(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.memory_allocated()
        return self.tracker.live

    def peak(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return self.tracker.peak

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.tracker.reset_peak()


class ModulePeaks:
    """Memory rows of nested calls on a Meter: open(name) / close() around a span, or watch() a model's modules
    with forward hooks. The peak since the last reset goes to every open call, so a row's peak covers its callees;
    `rows` holds (name, live before, peak inside, live after) of each watched call, in the order they end."""

    def __init__(self, meter: Meter):
        self.meter, self.rows, self.stack, self.handles = meter, [], [], []

    def fold(self) -> None:
        p = self.meter.peak()
        for e in self.stack:
            e[2] = max(e[2], p)
        self.meter.reset_peak()

    def open(self, name: str) -> int:
        self.fold()
        self.stack.append([name, self.meter.live(), 0])
        return self.stack[-1][1]

    def close(self) -> tuple:
        self.fold()
        name, before, peak = self.stack.pop()
        for e in self.stack:
            e[2] = max(e[2], peak)
        return name, before, peak, self.meter.live()

    def watch(self, model: torch.nn.Module, wanted) -> None:
        """A row for each call of the modules whose qualified name passes `wanted`."""
        def pre(name):
            def hook(mod, args):          # a pre-hook's return value would replace the arguments: None here
                self.open(name)
            return hook

        def post(mod, args, out):
            self.rows.append(self.close())
        for name, mod in model.named_modules():
            if wanted(name):
                self.handles += [mod.register_forward_pre_hook(pre(name)), mod.register_forward_hook(post)]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def build_flow(device: torch.device, precision: str, blocks: int | None) -> torch.nn.Module:
    config = json.loads(json.loads(CONFIG.read_text())["ckpt_json_text"])
    if blocks is not None:
        config["args"]["num_blocks"] = blocks
    with models.skipped_init(), torch.device(device):
        model = models.from_config(config)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():            # N(0, 0.02): finite, moderate activations
            p.copy_(torch.randn(p.shape, generator=g, device=device) * 0.02)
    model.set_torso_dtype({"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision])
    return model.eval()


def measure(model, x, t, cond, lean: bool, table: bool, device: torch.device):
    """(output feats on the CPU in fp32, peak above the start, [(module, before, peak, after)] above the start)."""
    model.lean = lean
    with Meter(device) as meter:
        peaks = ModulePeaks(meter)
        if table:
            peaks.watch(model, lambda name: name.count(".") == 1 or name in ("input_layer", "out_layer"))
        try:
            start = peaks.open("forward")
            with torch.no_grad():
                out = model(x, t, cond).feats.float().cpu()
            total = peaks.close()[2]
        finally:
            peaks.remove()
    rows = [(n, b - start, p - start, a - start) for n, b, p, a in peaks.rows]
    return out, total - start, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voxels", type=int, nargs="+", default=[20000, 35000])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="fp16", choices=["fp16", "bf16", "fp32"])
    ap.add_argument("--blocks", type=int, default=None, help="transformer blocks (default: the checkpoint's 24)")
    ap.add_argument("--table", action="store_true", help="each top-level module's peak")
    args = ap.parse_args()
    device = torch.device(args.device)

    t0 = time.time()
    model = build_flow(device, args.precision, args.blocks)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    print(f"SLat flow: {args.precision} torso, {len(model.blocks)} blocks, weights {weights / MIB:.0f} MiB, "
          f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
          f"built in {time.time() - t0:.1f} s")
    from trellis.modules.sparse.spatial import downsample

    for target in args.voxels:
        x = shell_structure(target, device=device)
        tokens = downsample(x).feats.shape[0]
        g = torch.Generator(device=device).manual_seed(1)
        cond = torch.randn(1, 1374, 1024, device=device, generator=g)
        t = torch.tensor([700.0], device=device)
        results = {}
        for lean in (False, True):
            # Each call gets a fresh structure (an empty cache of maps), as the first step of a stage does.
            if device.type == "cuda":                       # warm-up: kernels, workspaces
                model.lean = lean
                with torch.no_grad():
                    model(SparseTensor(x.feats, x.coords), t, cond)
            t1 = time.time()
            results[lean] = measure(model, SparseTensor(x.feats, x.coords), t, cond, lean, args.table, device)
            results[lean] += (time.time() - t1,)
        (ref, peak_off, rows_off, s_off), (out, peak_on, rows_on, s_on) = results[False], results[True]
        rel = float((out - ref).square().mean().sqrt() / ref.square().mean().sqrt().clamp_min(1e-30))
        print(f"\n{x.feats.shape[0]} voxels, {tokens} tokens: peak above weights and inputs "
              f"lean off {peak_off / MIB:.1f} MiB, lean on {peak_on / MIB:.1f} MiB "
              f"({(peak_on - peak_off) / MIB:+.1f} MiB); outputs identical: {torch.equal(out, ref)}, "
              f"rel RMS {rel:.2e}; forward {s_off:.2f} s / {s_on:.2f} s")
        if args.table:
            print(f"  {'module':18s} {'off: before':>12s} {'peak':>8s} {'after':>8s}   "
                  f"{'on: before':>11s} {'peak':>8s} {'after':>8s}  (MiB)")
            for (n, b, p, a), (_, b2, p2, a2) in zip(rows_off, rows_on):
                print(f"  {n:18s} {b / MIB:12.1f} {p / MIB:8.1f} {a / MIB:8.1f}   "
                      f"{b2 / MIB:11.1f} {p2 / MIB:8.1f} {a2 / MIB:8.1f}")


if __name__ == "__main__":
    main()
