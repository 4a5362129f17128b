"""export.json's verdict against a destination's limits (trellis/export/report.py): every limit listed with its
verdict and numbers, a level of detail per check (each level's triangles against its target, a refused level with
the floor it stopped at), the print repair's share of the surface left out; files written for real and read back."""
import numpy as np
import pytest
import trimesh
from tests.helpers.meshes import wavy_sheet

from trellis.export.formats import write
from trellis.export.lod_targets import LodTargetError
from trellis.export.lods import lod_meshes
from trellis.export.report import DESTINATION_LIMITS, check_limits, describe_export
from trellis.export.textured import TexturedMesh


def checks_of(report) -> dict:
    return {c["limit"]: c for c in report["limits"]["checks"]}


def test_a_game_report_checks_each_level_of_detail_against_its_target(tmp_path):
    v, f, uv, centre = wavy_sheet()
    island = int(np.argmin(np.linalg.norm(centre[:, :2] - [0.03, 0.02], axis=1)))     # a chart of one face
    corners = f[island].copy()
    f[island] = len(v) + np.arange(3)
    v, uv = np.concatenate([v, v[corners]]), np.concatenate([uv, uv[corners] * 0.2 + 0.7])
    sheet = TexturedMesh(v, f, uv, np.full((8, 8, 3), 128, np.uint8), {})
    with pytest.raises(LodTargetError) as refused:            # 1 % of 1152 faces: below what its charts keep
        lod_meshes(sheet, (0.25, 0.01))
    lod1 = refused.value.made[0]
    files = {"glb": write(sheet, tmp_path / "model.glb")}
    lod_path = write(lod1, tmp_path / "model_lod1.glb")
    report = describe_export(sheet, files, lods=[(0.25, lod1, lod_path)], lods_refused=refused.value.refused,
                             destination="game")
    first, second = report["lods"]
    assert (first["level"], first["target"], first["triangles"]) == (1, 288, len(lod1.faces))
    assert len(trimesh.load(lod_path, force="mesh").faces) == first["triangles"]
    assert second["level"] == 2 and second["triangles"] is None and second["floor"] > second["target"] == 12
    checks = checks_of(report)
    assert set(checks) == {"normal_map", "faces_within", "lods_within.LOD1", "lods_within.LOD2"}
    assert checks["lods_within.LOD1"]["met"] and checks["lods_within.LOD1"]["value"] == first["triangles"]
    assert checks["lods_within.LOD1"]["text"] == f"LOD1: {first['triangles']} triangles, within 10% of its target 288"
    assert not checks["lods_within.LOD2"]["met"] and checks["lods_within.LOD2"]["text"].startswith(
        f"LOD2: its target of 12 triangles is below the {second['floor']} that keep the silhouette")
    assert not checks["normal_map"]["met"] and checks["faces_within"]["met"]          # no map baked; no face target
    assert report["limits"]["met"] is False
    assert report["limits"]["reasons"] == [c["text"] for c in report["limits"]["checks"] if not c["met"]]


def test_a_print_report_says_what_its_repair_left_out(tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=3)
    crumb = trimesh.creation.icosphere(subdivisions=1, radius=0.4).apply_translation((3.0, 0.0, 0.0))
    both = trimesh.util.concatenate([sphere, crumb])
    mesh = TexturedMesh(both.vertices.astype(np.float32), both.faces.astype(np.int64),
                        np.zeros((len(both.vertices), 2), np.float32), np.zeros((4, 4, 3), np.uint8), {})
    files = {kind: write(mesh, tmp_path / f"model.{kind}", print_ready=True, units="mm", pivot="bottom",
                         height=0.05) for kind in ("stl", "3mf")}
    report = describe_export(mesh, files, print_ready=True, destination="print", pivot="bottom", height=0.05)
    share = crumb.area / (crumb.area + sphere.area)
    assert report["print_repair"]["method"] == "as is"
    assert report["print_repair"]["area_dropped_share"] == pytest.approx(share, rel=1e-6)
    checks = checks_of(report)
    assert list(checks) == ["watertight", "outward", "shells", "flat_base", "max_surface_removed", "faces_within"]
    assert all(checks[k]["met"] for k in ("watertight", "outward", "shells", "flat_base", "faces_within"))
    removed = checks["max_surface_removed"]
    assert not removed["met"] and removed["value"] == pytest.approx(share, abs=1e-4) and removed["wanted"] == 0.05
    assert removed["text"] == f"the print repair removed {share:.1%} of the surface (1 part dropped), more than 5%"
    for path in files.values():                                  # the files are the one body the report describes
        loaded = trimesh.load(path, force="mesh")
        assert loaded.is_watertight and loaded.is_volume and loaded.body_count == 1


def test_every_destination_limit_has_a_check_and_a_report_of_old_has_reasons_only():
    report = {"triangles": 120_000, "target_faces": None, "files": {"glb": {"name": "model.glb", "bytes": 16_000_000}},
              "watertight": False, "outward": False, "shells": 3, "flat_base": False, "texture": None,
              "print_repair": {"method": "rebuilt", "parts_dropped": 2, "area_dropped_share": 0.5}, "lods": []}
    for name, limits in DESTINATION_LIMITS.items():
        verdict = check_limits(report, limits)
        named = {c["limit"].split(".")[0] for c in verdict["checks"]}
        assert named == set(limits) - ({"lods_within"} if not report["lods"] else set()), name
        assert verdict["met"] is False and len(verdict["reasons"]) >= 1
    texts = check_limits(report, DESTINATION_LIMITS["web"])["reasons"]
    assert texts == ["120000 triangles, over the limit of 100000", "model.glb is 16.0 MB, over 15 MB"]
