"""TRELLIS.2's SC-VAE decoders at full size (random weights, fp16 torso) with the sparse-conv fast paths on and
off (tests/gpu: skipped without CUDA), once per kernel backend.

The shape decoder predicts its own subdivision, and a logit near zero may flip between two conv paths; so the
twin's run follows the kernel run's subdivision (``guide_subs``) and both decode the same fine voxels; an
unguided twin run must keep the fine voxel count within 1 %. Tolerance as for the v1 mesh decoder
(tests/gpu/test_sparse_conv_gpu.py): head features within relative RMS 2e-3.
"""
import json
from pathlib import Path

import pytest
import torch

from trellis import fastpaths
from trellis.core import backends
from trellis.modules.sparse import SparseTensor

DEV = "cuda"
MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "state_dict_trellis2"


def build(stem: str):
    import trellis.models as models

    config = json.loads(json.loads((MANIFESTS / f"{stem}.json").read_text())["ckpt_json_text"])
    torch.manual_seed(0)
    with torch.device(DEV):
        return models.from_config(config).eval()


def latent_shell(target: int, res: int, channels: int = 32, seed: int = 0) -> SparseTensor:
    """About ``target`` voxels of a thick sphere shell on a res^3 latent grid, random features."""
    r = torch.arange(res, device=DEV, dtype=torch.float32) + 0.5 - res / 2
    d = torch.sqrt(r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2)
    radius, lo, hi = res * 0.38, 0.0, res / 4
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if int((torch.abs(d - radius) < mid).sum()) < target else (lo, mid)
    xyz = (torch.abs(d - radius) < hi).nonzero().int()
    g = torch.Generator(device=DEV).manual_seed(seed)
    coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.int32, device=DEV), xyz], 1)
    return SparseTensor(torch.randn(len(xyz), channels, device=DEV, generator=g), coords)


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt()).item()


def run(fast: bool, fn, *args, **kwargs):
    fastpaths.set_enabled(False if not fast else None)      # None: the backend named by the fixture
    try:
        return fn(*args, **kwargs)
    finally:
        fastpaths.set_enabled(None)


@pytest.fixture(scope="module")
def decoders():
    shape, tex = build("shape_dec_next_dc_f16c32_fp16"), build("tex_dec_next_dc_f16c32_fp16")
    yield shape, tex
    del shape, tex
    torch.cuda.empty_cache()


@torch.no_grad()
def test_sc_vae_decoders_with_fast_paths_on_and_off(decoders, backend):
    assert fastpaths.path_of("sparse_conv3d", DEV) == backend
    shape, tex = decoders
    x = latent_shell(1500, 32)
    t = latent_shell(1500, 32, seed=1)
    before = backends.get("sparse_conv")
    backends.set_backend("sparse_conv", "torch")            # compare the kernel with the twin, not spconv
    try:
        on, subs = run(True, shape, SparseTensor(x.feats, x.coords), return_subs=True)
        off = run(False, shape, SparseTensor(x.feats, x.coords), guide_subs=subs)
        free = run(False, shape.upsample, SparseTensor(x.feats, x.coords))
        tex_on = run(True, tex, SparseTensor(t.feats, t.coords), guide_subs=subs)
        tex_off = run(False, tex, SparseTensor(t.feats, t.coords), guide_subs=subs)
    finally:
        backends.set_backend("sparse_conv", before)
    assert f"sparse_conv3d:{backend}" not in fastpaths._disabled
    n = on.coords.shape[0]
    assert n > 50_000 and torch.isfinite(on.feats).all() and torch.isfinite(tex_on.feats).all()
    assert torch.equal(off.coords, on.coords) and torch.equal(tex_on.coords, on.coords)
    assert rel_rms(on.feats, off.feats) <= 2e-3
    assert rel_rms(tex_on.feats, tex_off.feats) <= 2e-3
    assert abs(free.shape[0] - n) <= 0.01 * n, (free.shape[0], n)
    mesh, = shape.to_meshes(on)
    assert mesh.vertices.shape[0] == n and mesh.faces.shape[0] > 0
