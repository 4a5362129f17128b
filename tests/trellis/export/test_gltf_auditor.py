"""Our GLBs through the Khronos 3D Commerce asset auditor: no inverted UV triangle, no overlapping UVs.

The auditor: the official ``@khronosgroup/gltf-asset-auditor`` npm package (Khronos, Apache-2.0) pinned in
tests/js/package-lock.json (its image library ``canvas`` replaced there by the prebuilt ``@napi-rs/canvas``,
which needs no compiler or download from GitHub), installed by ``npm ci --prefix tests/js``: ``./run.sh
test`` and so CI do this when npm is on PATH (installer/launch.py ``ensure_test_tools``). tests/js/audit.js
runs its checks with tests/js/audit_profile.json (the Khronos recommended limits). These tests skip only
where Node.js itself is missing; with node present and the package not installed they fail and say how to
install it.

The files: one from the app's command line on the tiny random-weight pipeline (its noisy mesh takes the
xatlas path of ``unwrap_uv``), and two from ``to_glb`` on a synthetic asset through our own UV layouts. Only
the UV checks are asserted; the others mostly judge the random model (its near-black or saturated texture
fails the PBR colour range) and are printed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from trellis.utils.postprocessing_utils import to_glb

from tests.helpers.asset import make_gaussians, make_mesh
from tests.helpers.cli import desktop, job_folders
from tests.helpers.repo import ROOT_DIR as ROOT

pytestmark = pytest.mark.slow

from tests.helpers.repo import JS_DIR
# the app's small CPU settings for a quick job, at the smallest texture the profile accepts
TINY_JOB = ["--steps", "2", "--texture-size", "512", "--seed", "1", "--set", "fill_holes=false",
            "--set", "bake_views=4", "--set", "bake_resolution=64"]


def audit(path) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the Khronos asset auditor runs on it")
    if not (JS_DIR / "node_modules" / "@khronosgroup" / "gltf-asset-auditor").is_dir():
        pytest.fail("the Khronos asset auditor is not installed: run `npm ci --prefix tests/js` "
                    "(./run.sh test does this when npm is on PATH)")
    res = subprocess.run([node, str(JS_DIR / "audit.js"), str(path)], capture_output=True, text=True,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    report["by_name"] = {item["name"]: item for item in report["items"]}
    return report


@pytest.fixture(scope="module")
def glbs(tiny_pipeline_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("auditor")
    proc = desktop("generate", os.path.join(ROOT, "assets", "examples", "chair.png"), "-o", folder / "app",
                   "--model", tiny_pipeline_dir, "--formats", "glb", "--device", "cpu", "--quiet", *TINY_JOB,
                   timeout=600)
    assert proc.returncode == 0, proc.stderr
    (job,) = job_folders(folder / "app")
    timings = json.loads(Path(job, "timings.json").read_text())
    out = {"app": (Path(job, "model.glb"), timings["export_bake_stages"]["uv_method"])}
    torch.manual_seed(0)
    v, f = make_mesh(2)
    gaussians = make_gaussians(v, f, n=2000, sigma=0.03)
    for method in ("geometric", "charts"):
        mesh = to_glb(gaussians, (v, f), simplify=0.0, fill_holes=False, texture_size=512, verbose=False,
                      nviews=2, render_resolution=32, cg_iterations=0, uv_method=method)
        path = folder / f"{method}.glb"
        mesh.export(path)                                 # as the app writes it (desktop/jobs/folder.py)
        out[method] = (path, mesh.export_info["uv_method"])
    return out


@pytest.mark.parametrize("source, method", [("app", "xatlas"), ("geometric", "geometric"), ("charts", "charts")])
def test_auditor_finds_no_inverted_or_overlapping_uvs(glbs, source, method):
    path, used = glbs[source]
    assert used == method, f"{source}: the UV layout was {used}, this case is there for {method}"
    report = audit(path)
    failed = {name: item["message"] for name, item in report["by_name"].items() if item["tested"] and not item["pass"]}
    print(f"\nauditor {report['auditor']} on {source} ({method}): {report['counts']}; other checks failed: {failed}")
    assert report["counts"]["triangles"] >= 300
    assert report["counts"]["invertedUvTriangles"] == 0
    assert report["by_name"]["Inverted UVs"] == {"name": "Inverted UVs", "tested": True, "pass": True, "message": "0"}
    assert report["counts"]["overlappingUvs"] == 0
    assert report["by_name"]["Overlapping UVs"]["tested"] and report["by_name"]["Overlapping UVs"]["pass"]
    assert report["by_name"]["UVs in 0 to 1 Range"]["pass"]
    assert report["by_name"]["glTF Validator"]["pass"]
