"""`python -m desktop verify-fast-paths` (desktop/verify_fast_paths.py, desktop/fast_path_measures.py): both families'
tiny pipelines made twice, exact and 8-bit attention, through the real entry point; the table, the verdict and the
JSON hold the measures; the 8-bit run really ran 8-bit attention (and on v1 changes the asset); bad inputs exit 2 with
one message; the measures themselves on inputs whose answers are known."""
import json

import numpy as np
import pytest
from tests.helpers.cli import desktop
from tests.helpers.images import rgba_blob

import desktop.__main__ as entry
from desktop import fast_path_measures as fm

SMALL = ["--device", "cpu", "--steps", "1", "--frames", "2", "--resolution", "48", "--seed", "7"]
MEASURES = ("occupancy IoU", "flipped voxels", "Chamfer distance", "F-score at 1% of diagonal", "preview PSNR",
            "preview SSIM", "verdict: ")


def verify(capsys, tmp_path, model, *extra):
    """(stdout, the JSON report) of one image through `python -m desktop verify-fast-paths`'s entry point."""
    image = rgba_blob(tmp_path / "in.png")
    out = tmp_path / "report.json"
    assert entry.main(["verify-fast-paths", image, "--model", model, "--json", str(out), *SMALL, *extra]) == 0
    printed = capsys.readouterr().out
    for words in MEASURES:
        assert words in printed, (words, printed)
    report = json.loads(out.read_text())
    (item,) = report["images"]
    assert item["image"] == image and item["verdict"] in ("same", "close", "differs")
    assert item["verdict_words"] in printed
    for part, keys in (("structure", ("iou", "flipped", "exact_voxels", "fast_voxels", "grid")),
                       ("mesh", ("chamfer", "fscore", "precision", "recall", "diagonal")),
                       ("look", ("psnr_db", "ssim", "worst_frame_ssim", "frames"))):
        assert set(keys) <= set(item[part]), (part, item[part])
    assert item["look"]["frames"] == 2 and report["seed"] == 7 and report["steps"] == 1
    assert report["memory_policy"]["cuda_graphs"] is False and report["memory_policy"]["compile"] is False
    # the switch held: every attention call of the 8-bit run was the 8-bit maths, none of the exact run's
    exact, fast = item["kernels"]["exact"], item["kernels"]["8bit"]
    assert set(fast) == {"8bit_twin"} and "8bit_twin" not in exact
    assert fast["8bit_twin"] == sum(exact.values()) > 0
    return printed, report, item


def test_v1_both_runs_compared_and_the_8bit_run_differs(capsys, tmp_path, tiny_pipeline_dir):
    printed, report, item = verify(capsys, tmp_path, tiny_pipeline_dir)
    assert "TRELLIS v1" in printed and "sparse structure" in report["structure"]
    s, m, look = item["structure"], item["mesh"], item["look"]
    assert s["exact_voxels"] > 0 and 0 <= s["iou"] <= 1
    total = s["exact_voxels"] + s["fast_voxels"]            # = union + intersection
    assert s["flipped"] == pytest.approx(total * (1 - s["iou"]) / (1 + s["iou"]))
    # the tiny model's 8-bit run is another asset: some voxels, mesh points and pixels moved
    assert s["flipped"] > 0 and m["chamfer"] > 0 and look["psnr_db"] is not None and look["ssim"] < 1
    assert (item["verdict"] == "same") == (not item["short_of_same"])


def test_trellis2_both_runs_compared_and_the_8bit_run_differs(capsys, tmp_path, tiny_trellis2_dir):
    printed, report, item = verify(capsys, tmp_path, tiny_trellis2_dir, "--pipeline-type", "512")
    assert "TRELLIS.2, pipeline type 512" in printed and "MeshWithVoxel.coords" in report["structure"]
    assert report["pipeline_type"] == "512" and item["structure"]["grid"] == 512
    assert item["structure"]["exact_voxels"] > 0 and item["mesh"]["diagonal"] > 0
    # every attention call of the 8-bit run took the 8-bit path, and its mesh moved (at this seed by less than a
    # voxel: no voxel flipped)
    assert set(item["kernels"]["8bit"]) == {"8bit_twin"} and "8bit_twin" not in item["kernels"]["exact"]
    assert item["kernels"]["8bit"]["8bit_twin"] == sum(item["kernels"]["exact"].values()) > 0
    assert item["mesh"]["chamfer"] > 0


def test_bad_inputs_exit_2_with_one_message(tmp_path, tiny_pipeline_dir, capsys):
    image = rgba_blob(tmp_path / "in.png")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(tmp_path / "missing.png"), "--model", tiny_pipeline_dir], "missing.png: no such file"),
        ([str(tmp_path / "notes.png"), "--model", tiny_pipeline_dir], "notes.png"),
        ([image, "--model", str(tmp_path / "empty")], "is not a model folder (it has no pipeline.json)"),
        ([image, "--model", tiny_pipeline_dir, "--pipeline-type", "512"], "TRELLIS v1 has one path"),
        ([image, "--model", tiny_pipeline_dir, "--json", str(tmp_path / "no" / "r.json")], "--json: cannot write"),
        ([image, "--steps", "0"], "give at least 1"),
    ]
    for argv, words in cases:
        with pytest.raises(SystemExit) as exited:
            entry.main(["verify-fast-paths", *argv, "--device", "cpu"])
        err = capsys.readouterr()
        assert exited.value.code == 2 and words in err.err and err.out == "", (argv, err)
    # a model folder whose files cannot load: exit 1 with what to do, no traceback
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "pipeline.json").write_text('{"name": "TrellisImageTo3DPipeline", "args": {}}')
    assert entry.main(["verify-fast-paths", image, "--model", str(broken), "--device", "cpu"]) == 1
    err = capsys.readouterr()
    assert err.err.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in err.err and err.out == ""
    # the real command line: one usage line and the message, no traceback, nothing loaded
    proc = desktop("verify-fast-paths", str(tmp_path / "notes.png"), "--model", tiny_pipeline_dir, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stdout == "", proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("python -m desktop verify-fast-paths: error: ")


# ------------------------------------------------------------------------------------------- the measures

def test_voxel_agreement_counts_what_moved():
    a = np.array([[0, 0, 0], [1, 0, 0], [2, 3, 4], [2, 3, 4]])         # a repeated voxel counts once
    b = np.array([[0, 0, 0], [2, 3, 4], [5, 5, 5]])
    found = fm.voxel_agreement(a, b)
    assert found == {"iou": 2 / 4, "flipped": 2, "exact_voxels": 3, "fast_voxels": 3}
    assert fm.voxel_agreement(np.zeros((0, 3)), np.zeros((0, 3)))["iou"] == 1.0
    assert fm.coarsened(np.array([[1023, 512, 0]]), 1024, 512).tolist() == [[511, 256, 0]]


def cube():
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],
                  [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return v, f


def test_mesh_agreement_of_a_cube_and_a_shifted_cube():
    v, f = cube()
    same = fm.mesh_agreement(v, f, v, f)
    assert same["chamfer"] == 0 and same["fscore"] == 1 and same["diagonal"] == pytest.approx(3 ** 0.5)
    # moved by 5 % of the diagonal: nothing within 1 % of it except near the edges, a Chamfer near the shift
    moved = fm.mesh_agreement(v, f, v + [0.05 * 3 ** 0.5, 0, 0], f)
    assert 0.01 < moved["chamfer"] < 0.05 and moved["fscore"] < 0.8
    assert fm.mesh_agreement(v, f, v, f[:0])["fscore"] == 0.0
    points = fm.surface_samples(v, f, 5000)
    assert np.allclose(points, fm.surface_samples(v, f, 5000))                    # fixed seed
    on_a_face = np.isclose(points, 0) | np.isclose(points, 1)
    assert on_a_face.any(axis=1).all() and (points >= -1e-9).all() and (points <= 1 + 1e-9).all()


def test_psnr_and_ssim_of_known_frames():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 40, 3)).astype(np.uint8)
    same = fm.frames_agreement([a, a], [a, a])
    assert same["psnr_db"] is None and same["identical"] and same["ssim"] == pytest.approx(1.0)
    b = np.clip(a.astype(int) + 4, 0, 255).astype(np.uint8)
    mse = np.mean((a.astype(float) - b) ** 2)
    off = fm.frames_agreement([a], [b])
    assert off["psnr_db"] == pytest.approx(10 * np.log10(255 ** 2 / mse)) and 0.9 < off["ssim"] < 1
    noise = rng.integers(0, 256, (40, 40, 3)).astype(np.uint8)
    assert fm.ssim(a, noise) < 0.1 < fm.ssim(a, b)


def test_the_verdict_follows_the_thresholds():
    look = {"psnr_db": 35.0, "ssim": 0.99}
    assert fm.verdict({"iou": 0.99}, {"fscore": 0.99}, look) == ("same", [])
    assert fm.verdict({"iou": 0.99}, {"fscore": 0.99}, {"psnr_db": None, "ssim": 1.0}) == ("same", [])
    word, why = fm.verdict({"iou": 0.9}, {"fscore": 0.99}, look)
    assert word == "close" and why == ["iou 0.9 < 0.95"]
    assert fm.verdict({"iou": 0.99}, {"fscore": 0.99}, {"psnr_db": 20.0, "ssim": 0.99})[0] == "differs"
