"""The export's output, pinned byte for byte: ``to_glb`` / ``to_obj`` on a small seeded asset, on the CPU, for
each deterministic UV method and once through the whole clean-up chain, against hashes taken from the code
as it was before the export moved to ``trellis/export/``. A refactoring of the export must leave these
hashes as they are; a change that means to alter the output updates them and says why in its note. The bytes
also depend on the pinned torch, trimesh and Pillow: an upgrade that moves them is re-pinned the same way. And on
the CPU's vector unit (the texture's float sums round differently in AVX2 and AVX-512 kernels: the same code gives
the same geometry and another PNG), so two rows of hashes are kept, one per family of float kernels. MKL picks its
kernels by the CPU's vendor as well as its vector unit (an AMD EPYC with AVX-512 gives the AVX2 row), so the row is
not predicted from torch's CPU capability: a result must equal one known row's hash, and a new family fails with its
hashes, to be pinned beside the others.
"""
from __future__ import annotations

import hashlib

import pytest
import torch

from tests.helpers.asset import make_gaussians, make_mesh
from trellis.utils.postprocessing_utils import to_glb, to_obj

pytest.importorskip("trimesh")

# kernel family -> (uv_method, simplify, fill_holes) -> sha256 of the GLB's bytes (first 16 hex digits).
GLB_SHA256 = {
    "AVX2": {
        ("geometric", 0.0, False): "7554987cbb09ece0",
        ("charts", 0.0, False): "9bf88af5e45080b5",
        ("xatlas", 0.0, False): "52a3e2e240cb9b9e",
        ("geometric", 0.5, True): "1a920c9844e04b05",
    },
    "AVX512": {
        ("geometric", 0.0, False): "7d3824e72dc8d7cd",
        ("charts", 0.0, False): "609faa21aa10dbf4",
        ("xatlas", 0.0, False): "d785f29b47d68e74",
        ("geometric", 0.5, True): "13890f4bce8e3205",
    },
}
# The OBJ, its material and its texture written by to_obj with the geometric charts (the same OBJ and MTL on
# every CPU).
OBJ_SHA256 = {
    "AVX2": {"model.obj": "c06900a881721c7e", "model.mtl": "312aac49eca897d0", "model.png": "668f14a4ea8afc5d"},
    "AVX512": {"model.obj": "c06900a881721c7e", "model.mtl": "312aac49eca897d0", "model.png": "cb47cae2e6a1274c"},
}

SMALL = dict(texture_size=128, verbose=False, nviews=8, render_resolution=128, device="cpu")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def assert_pinned(table: dict, got, key=None):
    """`got` equals the hash (or hashes) of one row of `table` at `key` (the whole row when None); else it fails
    with this CPU's values, to pin from a run of the unchanged export."""
    rows = {family: (row if key is None else row[key]) for family, row in table.items()}
    assert got in rows.values(), (f"matches no pinned row ({', '.join(rows)}); this CPU "
                                  f"({torch.backends.cpu.get_cpu_capability()}) gives {got}")


@pytest.fixture(scope="module")
def asset():
    v, f = make_mesh(3)                          # a bumpy icosphere, 1 280 faces
    return v, f, make_gaussians(v, f, n=4000)


@pytest.mark.parametrize("method,simplify,fill_holes", list(GLB_SHA256["AVX2"]))
def test_to_glb_bytes_are_unchanged(asset, method, simplify, fill_holes):
    if method == "xatlas":
        pytest.importorskip("xatlas")
    v, f, gaussians = asset
    mesh = to_glb(gaussians, (v, f), simplify=simplify, fill_holes=fill_holes, uv_method=method, **SMALL)
    assert mesh.export_info["uv_method"] == method
    # the geometric layout's steps reach the export's info (timings.json's uv_phases), no other method's
    phases = mesh.export_info.get("uv_phases")
    assert (method == "geometric") == (phases is not None)
    assert phases is None or min(phases[k] for k in ("segment", "flatten", "pack", "overlap")) > 0
    got = sha(mesh.export(file_type="glb"))
    assert_pinned(GLB_SHA256, got, (method, simplify, fill_holes))


def test_to_obj_bytes_are_unchanged(asset, tmp_path):
    v, f, gaussians = asset
    to_obj(gaussians, (v, f), tmp_path / "model.obj", simplify=0.0, fill_holes=False, uv_method="geometric",
           **SMALL)
    got = {name: sha((tmp_path / name).read_bytes()) for name in OBJ_SHA256["AVX2"]}
    assert_pinned(OBJ_SHA256, got)
