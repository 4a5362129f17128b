"""Destinations (settings_table.DESTINATION_LIST) end to end on the tiny pipeline, through the export command: one
`generate` job, then its result exported again for the web, a game engine and a 3D printer. Each file is read back by
a real reader (trimesh, the Khronos validator, Google's Draco decoder, usd-core); export.json lists each of the
destination's limits with its verdict, and the command says each one missed (and fails for it with --strict)."""
import json
import os

import pytest
import trimesh

from tests.helpers.cli import SMALL, desktop, job_folders
from tests.helpers.gltf import draco_decode, validate_gltf
from tests.helpers.images import rgba_blob


@pytest.fixture(scope="module")
def made(tiny_pipeline_dir, tmp_path_factory):
    """One generate job (GLB) and its folder."""
    tmp = tmp_path_factory.mktemp("destinations")
    out = tmp / "made"
    proc = desktop("generate", rgba_blob(tmp / "a.png"), "-o", out, "--model", tiny_pipeline_dir,
                   "--formats", "glb", "--seed", "5", "--quiet", *SMALL)
    assert proc.returncode == 0, proc.stderr
    (folder,) = job_folders(out)
    return {"folder": folder, "tmp": tmp, "model": tiny_pipeline_dir}


def export(made, name, *options, strict: bool = False):
    """The folder of an export of the made job with `options`, and its export.json; with `strict`, also the
    command's exit status and the lines it said about the limits (--strict: 3 when one is missed)."""
    out = made["tmp"] / name
    proc = desktop("export", made["folder"], "-o", out, "--model", made["model"], "--quiet", *options,
                   *(["--strict"] if strict else []), timeout=300)
    assert proc.returncode in ((0, 3) if strict else (0,)), proc.stderr
    (folder,) = job_folders(out)
    report = json.load(open(os.path.join(folder, "export.json")))
    if not strict:
        return folder, report
    said = [line.split(": ", 1)[1] for line in proc.stderr.splitlines() if ": " in line]
    return folder, report, proc.returncode, [x for x in said if x.startswith("limit missed: ") or " limits " in x]


def said_missed(report) -> list:
    """What the command says of a report's limits missed (--quiet: nothing when all are met)."""
    limits = report["limits"]
    if limits["met"]:
        return []
    return [f"{report['destination']} limits NOT met: {len(limits['reasons'])} of {len(limits['checks'])} missed",
            *(f"limit missed: {text}" for text in limits["reasons"])]


def test_print_gives_one_watertight_body_in_millimetres_and_says_each_limit(made):
    folder, report, status, lines = export(made, "print", "--destination", "print", "--height", "0.05",
                                           strict=True)
    checks = {c["limit"]: c for c in report["limits"]["checks"]}
    assert list(checks) == ["watertight", "outward", "shells", "flat_base", "max_surface_removed", "faces_within"]
    # one closed body wound outward, whatever the random-weight blob (a scatter of small pieces) is
    assert report["watertight"] and report["outward"] and report["shells"] == 1 and report["texture"] is None
    assert all(checks[k]["met"] for k in ("watertight", "outward", "shells"))
    removed = report["print_repair"]["area_dropped_share"]
    assert checks["max_surface_removed"]["met"] == (removed <= 0.05) and f"{removed:.1%}" in \
        checks["max_surface_removed"]["text"]
    # each missed limit is said on a line of its own, and --strict fails the command for it
    assert lines == said_missed(report) and status == (0 if report["limits"]["met"] else 3), (status, lines)
    assert set(report["files"]) == {"stl", "3mf"}
    for name in ("model.stl", "model.3mf"):
        mesh = trimesh.load(os.path.join(folder, name), force="mesh")
        assert mesh.is_watertight and mesh.is_winding_consistent and mesh.is_volume and mesh.volume > 0, name
        assert mesh.body_count == 1 and len(mesh.split(only_watertight=False)) == 1, name
        lo, hi = mesh.bounds
        # 3MF names its unit (trimesh reads it into mm), STL is plain numbers: mm either way, z up, base at 0
        assert hi[2] - lo[2] == pytest.approx(50.0, rel=1e-3) and lo[2] == pytest.approx(0, abs=1e-3), name
        base = mesh.vertices[:, 2] < lo[2] + 1e-3
        down = mesh.face_normals[:, 2] < -0.999
        on_base = base[mesh.faces].all(axis=1)
        # the faces on the base plane all face down (and cover a real footprint where the report says it stands)
        assert down[on_base].all() and on_base.any(), name
        if report["flat_base"]:
            assert mesh.area_faces[on_base].sum() > 0.01 * (hi[0] - lo[0]) * (hi[1] - lo[1]), name
    assert not os.path.exists(os.path.join(folder, "model.png"))


def test_web_gives_a_small_draco_glb_with_jpeg_and_a_usdz(made):
    folder, report = export(made, "web", "--destination", "web")
    assert report["destination"] == "web" and report["limits"]["met"], report["limits"]
    assert report["draco"] and report["texture"]["format"] == "jpeg" and set(report["files"]) == {"glb", "usdz"}
    glb = os.path.join(folder, "model.glb")
    assert report["files"]["glb"]["bytes"] <= 15_000_000 and report["triangles"] <= 100_000
    findings = validate_gltf(glb)["issues"]
    assert findings["numErrors"] == 0, findings
    (primitive,) = draco_decode(glb)
    assert primitive["numFaces"] == report["triangles"]
    raw = open(glb, "rb").read()
    assert b"KHR_draco_mesh_compression" in raw and b"image/jpeg" in raw
    from pxr import Usd, UsdGeom
    stage = Usd.Stage.Open(os.path.join(folder, "model.usdz"))
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.y
    # standing on its base (pivot bottom): the base at 0 in the report and in the USD's points
    assert report["base_m"] == pytest.approx(0, abs=1e-6)


def test_game_gives_a_normal_map_and_refuses_levels_of_detail_below_the_silhouette(made):
    # The random-weight blob is ~150 small pieces in small UV charts: every chart keeps its corners, so a quarter
    # of its faces is out of reach (tests/trellis/export/test_lods.py reaches the targets on real shapes). The
    # levels are refused with the floor they stopped at, not written with more faces than asked, and said so.
    target = 2000
    folder, report, status, lines = export(made, "game", "--destination", "game", "--target-faces", target,
                                           strict=True)
    assert report["destination"] == "game" and report["texture"]["normal_map"]
    assert abs(report["triangles"] - target) <= 0.05 * target
    lods = report["lods"]
    assert [lod["target"] for lod in lods] == [round(report["triangles"] * s) for s in (0.25, 0.0625)]
    assert [lod["level"] for lod in lods] == [1, 2]
    checks = {c["limit"]: c for c in report["limits"]["checks"]}
    for lod in lods:
        check = checks[f"lods_within.LOD{lod['level']}"]
        if lod["triangles"] is None:                         # refused: no file, the floor it stopped at
            assert lod["floor"] > 1.1 * lod["target"] and not check["met"] and check["text"] == lod["refused"]
            assert not os.path.exists(os.path.join(folder, f"model_lod{lod['level']}.glb"))
        else:                                                # made: within 10 % of its target, a valid GLB
            assert check["met"] and abs(lod["triangles"] - lod["target"]) <= 0.1 * lod["target"]
            assert validate_gltf(os.path.join(folder, lod["file"]))["issues"]["numErrors"] == 0
    assert lines == said_missed(report) and status == (0 if report["limits"]["met"] else 3), (status, lines)
    path = os.path.join(folder, "model.glb")
    assert validate_gltf(path)["issues"]["numErrors"] == 0
    mesh = trimesh.load(path, force="mesh")
    assert len(mesh.faces) == report["triangles"] and mesh.visual.material.normalTexture is not None
    assert mesh.bounds[0][1] == pytest.approx(0, abs=1e-4)                # standing on its base (y up)


def test_settings_given_beside_a_destination_win(made):
    folder, report = export(made, "web_png", "--destination", "web", "--texture-format", "png", "--no-draco")
    assert report["texture"]["format"] == "png" and not report["draco"]
    raw = open(os.path.join(folder, "model.glb"), "rb").read()
    assert b"KHR_draco_mesh_compression" not in raw and b"image/png" in raw
    record = json.load(open(os.path.join(folder, "settings.json")))["settings"]
    assert record["destination"] == "web" and record["pivot"] == "bottom" and record["texture_format"] == "png"
