"""No traceback ever reaches a user of any `python -m desktop` command: each command given a bad input, in a real
subprocess, ends in a clear line (exit 2 for a usage error, 1 otherwise), never a traceback or a hang; what nothing
else catches is said in one line with the path of its full report (desktop/crash_report.py). Also the hostile run's
cases end so: a FIFO weights file, a pipeline.json nested 100,000 deep, a job folder's timings.json that is a
symlink to /dev/zero, a FIFO stage times file, a mesh decoder giving NaN, an export onto a full disk."""
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
import trimesh

from desktop.crash_report import REPORTS_FOLDER
from tests.helpers.cli import SMALL, desktop, job_folders
from tests.helpers.images import rgba_blob
from tests.helpers.repo import ROOT_DIR

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs, /dev/zero and tmpfs are POSIX's")


def clear(proc, code: int, *words: str) -> str:
    """`proc` ended with `code`, said each of `words` and printed no traceback; its stderr."""
    err = proc.stderr
    assert "Traceback" not in err and "Traceback" not in proc.stdout, err
    assert proc.returncode == code, (proc.returncode, err)
    for word in words:
        assert word in err, (word, err)
    return err


@pytest.fixture(scope="module")
def made(tiny_pipeline_dir, tmp_path_factory):
    """One finished generate job (GLB) of the tiny pipeline, an image and a mesh."""
    tmp = tmp_path_factory.mktemp("no_traceback")
    image = rgba_blob(tmp / "a.png")
    proc = desktop("generate", image, "-o", tmp / "made", "--model", tiny_pipeline_dir, "--formats", "glb",
                   "--seed", "1", "--quiet", *SMALL)
    assert proc.returncode == 0, proc.stderr
    (folder,) = job_folders(tmp / "made")
    trimesh.creation.icosphere(2).export(tmp / "sphere.glb")
    return {"tmp": tmp, "image": image, "folder": folder, "mesh": str(tmp / "sphere.glb"), "model": tiny_pipeline_dir}


def model_copy(made, tmp_path, name="M"):
    folder = tmp_path / name
    shutil.copytree(made["model"], folder)
    return folder


# ------------------------------------------------------------------------------------------ usage errors: exit 2

def test_each_command_refuses_a_bad_input_in_one_line(made, tmp_path):
    fifo = tmp_path / "list.txt"
    os.mkfifo(fifo)
    cases = [("generate", [made["image"], "--steps", "0", "-o", tmp_path / "o"], 2, "0 is out of range"),
             ("generate", [tmp_path / "missing.png", "-o", tmp_path / "o", "--model", made["model"], "-q", *SMALL], 1,
              "bad input: Image file not found"),
             ("retexture", [made["image"], "--prompt", "x", "-o", tmp_path / "o"], 2, "a.png"),
             ("export", [tmp_path, "-o", tmp_path / "o"], 2, "not a job folder"),
             ("batch", [fifo, "-o", tmp_path / "o", "--model", "unused"], 2, "list.txt"),
             ("api", ["--port", "0"], 2, "--port"),
             ("ui", ["--port", "0"], 2, "--port"),
             ("mcp", ["--no-such-option"], 2, "--no-such-option")]
    for command, argv, code, word in cases:
        clear(desktop(command, *argv, timeout=120), code, word)


def test_a_new_look_from_a_photo_without_the_image_model_is_a_usage_error(made, tiny_trellis2_dir, tmp_path,
                                                                         monkeypatch):
    # --model names TRELLIS.2, and no TRELLIS v1 image model is installed: said in one line, not a traceback.
    monkeypatch.delenv("TRELLIS_DESKTOP_MODEL", raising=False)
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(tmp_path / "no_models"))
    proc = desktop("retexture", made["mesh"], "--image", made["image"], "--model", tiny_trellis2_dir,
                   "-o", tmp_path / "o", timeout=180)
    err = clear(proc, 2, "a new look from an image needs a TRELLIS v1 image model")
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err


# ------------------------------------------------------------------------------------------ hostile files: exit 1/2

def test_a_fifo_weights_file_fails_the_job_at_once(made, tmp_path):
    model = model_copy(made, tmp_path)
    weights = model / "ckpts" / "ss_dec_conv3d_tiny_fp16.safetensors"
    os.remove(weights)
    os.mkfifo(weights)
    proc = desktop("generate", made["image"], "-o", tmp_path / "o", "--model", model, "--quiet", *SMALL, timeout=120)
    clear(proc, 1, f"cannot read {weights}: it is not a regular file (it is a pipe (FIFO))")


def test_a_pipeline_json_nested_deep_is_said_naming_the_file(made, tmp_path):
    model = model_copy(made, tmp_path)
    (model / "pipeline.json").write_text("[" * 100_000 + "]" * 100_000)
    proc = desktop("generate", made["image"], "-o", tmp_path / "o", "--model", model, "--quiet", *SMALL, timeout=120)
    clear(proc, 1, f"{model / 'pipeline.json'} is not JSON (JSON nested more than 32 levels deep)")


def test_a_job_folder_whose_records_are_endless_is_refused_at_once(made, tmp_path):
    source = tmp_path / "job"
    shutil.copytree(made["folder"], source)
    os.remove(source / "timings.json")
    os.symlink("/dev/zero", source / "timings.json")
    start = time.monotonic()
    proc = desktop("export", source, "-o", tmp_path / "o", "--formats", "glb", timeout=120)
    clear(proc, 2, "timings.json is not a regular file (it is a device)")
    assert time.monotonic() - start < 60


@pytest.mark.slow
def test_a_fifo_stage_times_file_is_ignored_and_the_job_runs(made, tmp_path, monkeypatch):
    state = tmp_path / "state"
    state.mkdir()
    os.mkfifo(state / "stage_times.json")
    monkeypatch.setenv("TRELLIS_STATE_DIR", str(state))
    proc = desktop("generate", made["image"], "-o", tmp_path / "o", "--model", made["model"], "--formats", "glb",
                   "--quiet", *SMALL, timeout=300)
    clear(proc, 0, "it is not a regular file (it is a pipe (FIFO))")
    assert (state / "stage_times.json").is_file()            # written anew after the job


@pytest.mark.slow
def test_a_mesh_decoder_giving_nan_fails_as_an_empty_mesh(made, tmp_path):
    import numpy as np
    from safetensors.numpy import load_file, save_file

    model = model_copy(made, tmp_path)
    weights = str(model / "ckpts" / "slat_dec_mesh_swin8_tiny_fp16.safetensors")
    save_file({k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v for k, v in load_file(weights).items()},
              weights)
    proc = desktop("generate", made["image"], "-o", tmp_path / "o", "--model", model, "--formats", "glb",
                   "--quiet", *SMALL, timeout=300)
    clear(proc, 1, "FAILED: the model made an empty mesh (no faces)")
    assert "unexpected error" not in proc.stderr
    import json

    (folder,) = job_folders(tmp_path / "o")
    record = json.load(open(os.path.join(folder, "error.json")))
    assert record["kind"] == "empty" and record["detail"] is None


def tmpfs_prefix(tmp_path, free_kb: int, temp: bool = False):
    """A private mount namespace where `tmp_path/disk` is a 3 MB tmpfs with `free_kb` left (root only); with `temp`,
    it is the command's temporary folder (TMPDIR)."""
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("mount") and shutil.which("fallocate")):
        pytest.skip("a tmpfs needs root with unshare, mount and fallocate")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (f'mount -t tmpfs -o size=3m tmpfs "$0" || exit 99; fallocate -l {3072 - free_kb}K "$0/fill" || exit 99; '
              + ('TMPDIR="$0" ' if temp else '') + '"$@"; rc=$?; echo "LEFT: $(ls -A "$0/exp"/* 2>/dev/null | tr "\\n" " ")"; exit $rc')
    prefix = ("unshare", "-m", "--propagation", "private", "sh", "-c", script, str(disk))
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode == 99:
        pytest.skip(f"tmpfs cannot be mounted here: {probe.stderr.strip()}")
    return disk / "exp", prefix


@pytest.mark.slow
@pytest.mark.parametrize("free_kb", [0, 24, 64])
def test_an_export_onto_a_full_disk_ends_promptly_and_clearly(made, tmp_path, free_kb):
    out, prefix = tmpfs_prefix(tmp_path, free_kb)
    start = time.monotonic()
    proc = desktop("export", made["folder"], "-o", out, "--formats", "glb", "--texture-size", "64", "-q",
                   prefix=prefix, timeout=240)
    clear(proc, 1, f"the outputs folder is full ({out}): free some disk space")
    assert time.monotonic() - start < 180
    left = proc.stdout.split("LEFT:")[-1].split()
    assert not any(name.endswith(".glb") for name in left), left               # no partial file


@pytest.mark.slow
def test_an_export_whose_temporary_folder_is_full_says_so(made, tmp_path):
    # The USDZ writer's scratch files go to the temporary folder; USD reports the full disk in its own error type.
    disk, prefix = tmpfs_prefix(tmp_path, 16, temp=True)
    out = tmp_path / "out"
    proc = desktop("export", made["folder"], "-o", out, "--formats", "usdz", "--texture-size", "64", "-q",
                   prefix=prefix, timeout=240)
    clear(proc, 1, f"the temporary folder is full ({disk.parent}): free some disk space there, or point TMPDIR")
    assert "unexpected error" not in proc.stderr
    assert not any(name.endswith(".usdz") for folder in job_folders(out) for name in os.listdir(folder))


# ------------------------------------------------------------------------------------------ the last resort

def in_child(code: str, tmp_path):
    env = {**os.environ, "TRELLIS_STATE_DIR": str(tmp_path / "state")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT_DIR, capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.mark.parametrize("where", ["main", "thread"])
def test_an_error_nothing_caught_is_one_line_and_a_report(tmp_path, where):
    # A command whose main raises (or whose thread does): the entry point's last resort says it.
    code = f"""
        import sys, threading
        import desktop.__main__ as entry
        import desktop.export_command as command

        def broken(argv):
            if {where!r} == "thread":
                t = threading.Thread(target=lambda: 1 / 0, name="worker-1")
                t.start()
                t.join()
                return 0
            raise RuntimeError("the disk said no\\nsecond line")
        command.main = broken
        sys.exit(entry.main(["export", "x"]))
    """
    proc = in_child(code, tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    reports = sorted((tmp_path / "state" / REPORTS_FOLDER).iterdir())
    assert len(reports) == 1 and f"the full report is in {reports[0]}" in lines[0]
    report = reports[0].read_text()
    assert report.startswith("python -m desktop export") and "Traceback (most recent call last)" in report
    if where == "main":
        assert proc.returncode == 1
        assert lines[0].startswith("error: unexpected error (RuntimeError: the disk said no)"), lines[0]
        assert "RuntimeError: the disk said no" in report
    else:
        assert proc.returncode == 0
        assert lines[0].startswith("error: unexpected error (ZeroDivisionError: division by zero) in thread worker-1")
        assert "ZeroDivisionError" in report
