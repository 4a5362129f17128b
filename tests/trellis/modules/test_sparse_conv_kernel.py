"""The sparse conv's fast path without a GPU: its place in the dispatcher, the order submanifold_conv3d tries
the paths in, and (where Triton is installed) the Triton kernel itself run by Triton's CPU interpreter
against the PyTorch twin. The same pair on a GPU: tests/gpu/test_sparse_conv_gpu.py.

The interpreter check runs in a child process because ``TRITON_INTERPRET=1`` must be set before the
kernel is defined; it is also this file's ``__main__`` (``TRITON_INTERPRET=1 python -m
tests.trellis.modules.test_sparse_conv_kernel`` from the repository's root, with a Python that has Triton). Tolerance there: the kernel accumulates
in fp32 like the twin's CPU path and rounds once to the feature dtype, so the two differ by the order of
the sums (fp32: max |diff| <= 1e-5 * max |out|) plus at most a couple of units in the last place of the
output dtype (fp16/bf16: max |diff| <= 2 eps * max |out|; the interpreter truncates fp32 -> bf16 where
compiled kernels round to nearest); both are checked against a float64 dense conv too.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from trellis import fastpaths
from trellis.modules.sparse import SparseTensor
from trellis.modules.sparse import conv as sparse_conv
from trellis.modules.sparse.conv import neighbour_map, submanifold_conv3d, submanifold_conv3d_torch

from tests.helpers.repo import ROOT


def structure(n_dense: int, n_isolated: int, c_in: int, seed: int, batch: int = 1) -> SparseTensor:
    """Per batch item: ``n_dense`` sites packed in a small box (most of their 27 neighbours present) and
    ``n_isolated`` sites 3 apart on a far lattice (no neighbour but themselves), rows shuffled."""
    gen = torch.Generator().manual_seed(seed)
    items = []
    for b in range(batch):
        side = max(2, round((2 * n_dense) ** (1 / 3)))
        box = torch.randperm(side ** 3, generator=gen)[:n_dense]
        dense = torch.stack([box // side ** 2, box // side % side, box % side], 1)
        lattice = torch.randperm(512, generator=gen)[:n_isolated]
        far = 40 + 3 * torch.stack([lattice // 64, lattice // 8 % 8, lattice % 8], 1)
        xyz = torch.cat([dense, far])[torch.randperm(n_dense + n_isolated, generator=gen)]
        items.append(torch.cat([torch.full((len(xyz), 1), b), xyz], 1))
    coords = torch.cat(items).int()
    return SparseTensor(torch.randn(len(coords), c_in, generator=gen), coords)


def weights(c_in: int, c_out: int, k: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(c_out, k, k, k, c_in, generator=gen) / (c_in * k ** 3) ** 0.5
    return w, torch.randn(c_out, generator=gen) * 0.1


# ------------------------------------------------------------------------------------- no Triton needed

def test_the_kernels_are_registered_with_their_twin():
    kernels = fastpaths.KERNELS["sparse_conv3d"]
    assert [(k.backend, k.module, k.function) for k in kernels] == [
        ("triton", "trellis_triton.sparse_conv", "submanifold_conv3d"),
        ("nvrtc", "trellis_nvrtc.sparse_conv", "submanifold_conv3d")]
    x = structure(40, 3, 8, 0)
    w, b = weights(8, 4, 3, 1)
    for kernel in kernels:
        mod, fn = kernel.twin.rsplit(".", 1)
        assert getattr(__import__(mod, fromlist=[fn]), fn) is submanifold_conv3d_torch
        fast = getattr(fastpaths._import_kernel_module(kernel.module), kernel.function)
        assert fast(x, w, b) is NotImplemented                  # CPU tensors (and no Triton here, maybe)
        assert fast(x.replace(x.feats.double()), w.double(), b.double()) is NotImplemented
        assert fast(x.replace(x.feats.half()), w.half(), b.half()) is NotImplemented
    assert fastpaths.path_of("sparse_conv3d", "cpu") == "pytorch"
    assert "CUDA" in fastpaths.reason_off("sparse_conv3d", "cpu")


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("backend", [None, "auto", "torch", "spconv"])
def test_submanifold_conv3d_on_the_cpu_is_the_twin(fast, backend):
    x = structure(120, 5, 12, 2, batch=2)
    w, b = weights(12, 7, 3, 3)
    fastpaths.set_enabled(fast)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")                  # (spconv is never asked about CPU tensors)
            got = submanifold_conv3d(x, w, b, backend=backend)
    finally:
        fastpaths.set_enabled(None)
    assert torch.equal(got, submanifold_conv3d_torch(x, w, b))
    w1, b1 = weights(12, 7, 1, 4)                          # kernel size 1: the reference's quirk, every path
    assert torch.equal(submanifold_conv3d(x, w1, b1, backend=backend), sparse_conv.conv1x1_quirk(x.feats, w1, b1))


@pytest.mark.parametrize("k", [3, 5])
def test_the_grid_and_the_search_neighbour_maps_agree(k, monkeypatch):
    gen = torch.Generator().manual_seed(k)
    xyz = torch.cat([torch.randint(0, 12, (400, 3), generator=gen),                 # dense, at 0
                     torch.randint(1016, 1024, (150, 3), generator=gen)])           # at the far edge
    coords = torch.unique(torch.cat([torch.randint(0, 2, (len(xyz), 1), generator=gen), xyz], 1), dim=0)
    coords = coords[torch.randperm(len(coords), generator=gen)]
    coords = coords[torch.argsort(coords[:, 0], stable=True)].int()              # batch items contiguous
    offsets = sparse_conv.kernel_offsets(k)
    search = sparse_conv._neighbour_map_search(coords.long(), offsets)
    assert (search == len(coords)).any() and (search < len(coords)).sum(1).min() >= 1
    assert sparse_conv._neighbour_map_grid(coords.long(), offsets.tolist(), k // 2) is None   # box too big
    far = coords[:, 1:].amax(1) > 1000
    assert sparse_conv._neighbour_map_grid(coords[~far].long(), offsets.tolist(), k // 2, budget=1) is None
    monkeypatch.setattr(sparse_conv, "_GRID_GATHER", 7 * len(offsets))       # the grid's gathers run by runs of rows
    for part in (coords[~far], coords[far]):                                   # small boxes: the grid
        expect = sparse_conv._neighbour_map_search(part.long(), offsets)
        got = sparse_conv._neighbour_map_grid(part.long(), offsets.tolist(), k // 2)
        assert got is not None and got.dtype == torch.int32 and torch.equal(got, expect)
        assert torch.equal(neighbour_map(SparseTensor(torch.zeros(len(part), 1), part), k), expect)
    monkeypatch.setattr(sparse_conv, "_GRID_BUDGET", 1)                      # neighbour_map's search path
    part = coords[~far]
    assert torch.equal(neighbour_map(SparseTensor(torch.zeros(len(part), 1), part), k),
                       sparse_conv._neighbour_map_search(part.long(), offsets))


@pytest.fixture
def paths(monkeypatch):
    """Pretends the Triton kernel and spconv are usable on the CPU; records which path ran."""
    ran = []
    kernel = fastpaths.KERNELS["sparse_conv3d"][0]
    module = fastpaths._import_kernel_module(kernel.module)
    answer = {"kernel": "out"}

    def fake_kernel(x, weight, bias):
        ran.append("triton")
        return NotImplemented if answer["kernel"] is NotImplemented else torch.zeros(1)

    def fake_spconv(x, weight, bias):
        ran.append("spconv")
        return torch.ones(1)

    def fake_twin(x, weight, bias):
        ran.append("twin")
        return torch.full((1,), 2.0)

    monkeypatch.setattr(module, kernel.function, fake_kernel)
    monkeypatch.setattr(fastpaths, "_backend_reason", lambda backend, device: None)
    monkeypatch.setattr(fastpaths, "_disabled", {})
    monkeypatch.setattr(fastpaths, "_override", None)
    monkeypatch.delenv(fastpaths.ENV_VAR, raising=False)
    monkeypatch.setattr(sparse_conv, "spconv_usable", lambda x: True)
    monkeypatch.setattr(sparse_conv, "submanifold_conv3d_spconv", fake_spconv)
    monkeypatch.setattr(sparse_conv, "submanifold_conv3d_torch", fake_twin)
    return ran, answer


def test_the_order_kernel_then_spconv_then_twin(paths, monkeypatch):
    ran, answer = paths
    x = structure(20, 0, 4, 5)
    w, b = weights(4, 4, 3, 6)
    assert submanifold_conv3d(x, w, b, backend="auto").item() == 0 and ran == ["triton"]
    answer["kernel"] = NotImplemented                     # the kernel declines: spconv, as before it existed
    ran.clear()
    assert submanifold_conv3d(x, w, b, backend="auto").item() == 1 and ran == ["triton", "spconv"]
    ran.clear()                                           # SPARSE_BACKEND=torch never takes spconv
    assert submanifold_conv3d(x, w, b, backend="torch").item() == 2 and ran == ["triton", "twin"]
    ran.clear()                                           # SPARSE_BACKEND=spconv asks for spconv first
    assert submanifold_conv3d(x, w, b, backend="spconv").item() == 1 and ran == ["spconv"]
    answer["kernel"] = "out"
    ran.clear()
    monkeypatch.setenv(fastpaths.ENV_VAR, "off")          # fast paths off: no kernel; spconv stays for auto
    assert submanifold_conv3d(x, w, b, backend="auto").item() == 1 and ran == ["spconv"]
    ran.clear()
    assert submanifold_conv3d(x, w, b, backend="torch").item() == 2 and ran == ["twin"]
    monkeypatch.setattr(sparse_conv, "spconv_usable", lambda x: False)
    ran.clear()
    assert submanifold_conv3d(x, w, b, backend="auto").item() == 2 and ran == ["twin"]


def test_a_failing_kernel_is_switched_off_and_the_next_path_redoes_the_call(paths, monkeypatch):
    ran, _ = paths
    kernel = fastpaths.KERNELS["sparse_conv3d"][0]

    def broken(x, weight, bias):
        ran.append("triton")
        raise RuntimeError("PTX assembler not found")
    monkeypatch.setattr(fastpaths._import_kernel_module(kernel.module), kernel.function, broken)
    x = structure(20, 0, 4, 7)
    w, b = weights(4, 4, 3, 8)
    with pytest.warns(RuntimeWarning, match="sparse_conv3d"):
        assert submanifold_conv3d(x, w, b, backend="torch").item() == 2
    assert ran == ["triton", "twin"] and "sparse_conv3d:triton" in fastpaths._disabled
    ran.clear()
    assert submanifold_conv3d(x, w, b, backend="torch").item() == 2 and ran == ["twin"]


# --------------------------------------------------------------------- the kernel in Triton's interpreter

def dense_reference(x: SparseTensor, weight, bias):
    """float64 dense conv3d read back at the sites (independent of the neighbour map)."""
    import torch.nn.functional as F
    k = weight.shape[1]
    lo = x.coords[:, 1:].min(0).values
    ext = (x.coords[:, 1:] - lo).max(0).values + 1
    out = torch.empty(len(x.coords), weight.shape[0], dtype=torch.float64)
    for s in x.layout:
        grid = torch.zeros(1, x.feats.shape[1], *ext.tolist(), dtype=torch.float64)
        c = (x.coords[s, 1:] - lo).long()
        grid[0, :, c[:, 0], c[:, 1], c[:, 2]] = x.feats[s].double().T
        b = None if bias is None else bias.double()
        y = F.conv3d(grid, weight.double().permute(0, 4, 1, 2, 3), b, padding=k // 2)
        out[s] = y[0, :, c[:, 0], c[:, 1], c[:, 2]].T
    return out


# (name, n_dense, n_isolated, batch, C_in, C_out, k, feature dtype, weight dtype, bias, blocks)
CASES = [
    ("96->96 fp16, N not a multiple of the block", 230, 27, 1, 96, 96, 3, "float16", "float16", True, None),
    ("40->192 bf16, C_in not a multiple of BLOCK_K", 90, 10, 1, 40, 192, 3, "bfloat16", "bfloat16", True, None),
    ("24->40 fp32 no bias, two batch items", 50, 8, 2, 24, 40, 3, "float32", "float32", False, None),
    ("64->16 fp16 kernel 5", 140, 10, 1, 64, 16, 5, "float16", "float16", True, None),
    ("96->96 fp16 small tiles", 280, 20, 1, 96, 96, 3, "float16", "float16", True,
     dict(BLOCK_N=32, BLOCK_CO=32, BLOCK_K=16, num_warps=4, num_stages=2)),
    ("48->20 fp16 features, fp32 weight and bias", 100, 0, 1, 48, 20, 3, "float16", "float32", True, None),
    ("one isolated site", 0, 1, 1, 16, 16, 3, "float32", "float32", True, None),
    ("only isolated sites", 0, 70, 1, 32, 24, 3, "float16", "float16", True, None),
]


def interpreter_check() -> list[dict]:
    """Runs CASES through trellis_triton.sparse_conv.implicit_gemm on CPU tensors (TRITON_INTERPRET=1)."""
    assert os.environ.get("TRITON_INTERPRET") == "1"
    # the package found as the dispatcher finds it: installed, else from extensions/
    kernel_module = fastpaths._import_kernel_module("trellis_triton.sparse_conv")
    results = []
    for i, (name, nd, ni, batch, c_in, c_out, k, fdt, wdt, has_bias, blocks) in enumerate(CASES):
        x = structure(nd, ni, c_in, 10 + i, batch)
        x = x.replace(x.feats.to(getattr(torch, fdt)))
        w, b = weights(c_in, c_out, k, 20 + i)
        w, b = w.to(getattr(torch, wdt)), (b.to(getattr(torch, wdt)) if has_bias else None)
        nbr = neighbour_map(x, k)
        got = kernel_module.implicit_gemm(x.feats, nbr, w, b, blocks=blocks)
        twin = submanifold_conv3d_torch(x, w, b)
        # the twin sees the weight in the features' dtype; so does the float64 reference
        ref = dense_reference(x, w.to(x.dtype), None if b is None else b.to(x.dtype))
        scale = float(ref.abs().max())
        eps = torch.finfo(x.dtype).eps
        tol = 1e-5 if x.dtype == torch.float32 else 2 * eps
        row = {"case": name, "N": len(x.coords), "C_in": c_in, "C_out": c_out, "k": k, "dtype": fdt,
               "blocks": blocks or kernel_module.pick_blocks(len(x.coords), c_in, c_out, x.dtype, x.device),
               "no_neighbour_rows": int((nbr != len(x.coords)).sum(1).le(1).sum()),
               "max_abs_out": scale,
               "kernel_vs_twin": float((got.double() - twin.double()).abs().max()) / scale,
               "kernel_vs_fp64": float((got.double() - ref).abs().max()) / scale,
               "twin_vs_fp64": float((twin.double() - ref).abs().max()) / scale,
               "tolerance": tol, "dtype_out": str(got.dtype).replace("torch.", "")}
        row["ok"] = (got.dtype == x.dtype and got.shape == twin.shape and row["kernel_vs_twin"] <= tol
                     and row["kernel_vs_fp64"] <= tol + row["twin_vs_fp64"] + eps)
        results.append(row)
    w, b = weights(8, 8, 3, 99)
    out = kernel_module.implicit_gemm(torch.zeros(0, 8), torch.zeros(0, 27, dtype=torch.int32), w, b)
    results.append({"case": "N = 0", "ok": out.shape == (0, 8)})
    return results


def test_the_triton_kernel_in_the_interpreter_equals_the_twin():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "tests.trellis.modules.test_sparse_conv_kernel"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = [r for r in results if not r["ok"]]
    assert not bad, bad


if __name__ == "__main__":
    rows = interpreter_check()
    for r in rows:
        print({k: (f"{v:.2e}" if isinstance(v, float) else v) for k, v in r.items()}, file=sys.stderr)
    print(json.dumps(rows))
    sys.exit(0 if all(r["ok"] for r in rows) else 1)
