"""`python -m desktop generate` end to end in a subprocess, on the tiny random-weight pipeline (CPU)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import pytest

from desktop import cli, setting_flags
from desktop.options import format_clock
from desktop.settings import GenerationSettings
from tests.helpers.cli import SMALL, desktop, job_folders
from tests.helpers.images import rgba_blob
from tests.helpers.repo import ROOT_DIR as ROOT


def _can_create_in(folder) -> bool:
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder))
        return True
    except OSError:
        return False


def read_only_folder(tmp_path):
    """(folder, prefix): a real folder that the command run with `prefix` cannot write to. chmod 555 for a
    normal user; for root, whom chmod does not stop, a read-only bind mount of it in a private mount
    namespace (`unshare -m`: the kernel refuses every write there, root's too). Skips where neither works."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if not _can_create_in(folder):
        return folder, ()
    folder.chmod(0o755)
    prefix = ("unshare", "-m", "--propagation", "private", "sh", "-c",
              'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"', str(folder))
    if shutil.which("unshare") and shutil.which("mount"):
        probe = subprocess.run([*prefix, "sh", "-c", 'mkdir "$0/probe"', str(folder)], capture_output=True, text=True)
        if probe.returncode != 0 and "Read-only file system" in probe.stderr and not os.listdir(folder):
            return folder, prefix
    pytest.skip("no way here to make a folder that this user cannot write to (root without unshare/mount)")


def count_frames(path):
    import imageio.v2 as imageio

    with imageio.get_reader(path, format="ffmpeg") as reader:
        frames = [f for f in reader]
    assert frames[0].shape == (64, 64, 3)
    return len(frames)


def test_generate_two_images_ply_mp4(tiny_pipeline_dir, tmp_path):
    a, b = rgba_blob(tmp_path / "a.png"), rgba_blob(tmp_path / "b.png", color=(30, 90, 220))
    out = tmp_path / "out"
    proc = desktop("generate", a, b, "-o", out, "--model", tiny_pipeline_dir, "--seed", 1234,
                   "--formats", "ply,mp4", *SMALL)
    assert proc.returncode == 0, proc.stderr
    folders = job_folders(out)
    assert len(folders) == 2
    assert sorted(proc.stdout.split()) == folders                    # one folder per image on stdout
    for folder in folders:
        files = sorted(os.listdir(folder))
        assert files == ["input.png", "model.ply", "preprocessed.png", "preview.mp4", "result.npz", "settings.json",
                         "timings.json"], files
        record = json.load(open(os.path.join(folder, "settings.json")))
        assert record["seed"] == 1234 and record["settings"]["seed"] == 1234
        assert record["settings"]["ss_steps"] == 2 and record["settings"]["formats"] == ["ply", "mp4"]
        assert count_frames(os.path.join(folder, "preview.mp4")) == 8
        assert os.path.getsize(os.path.join(folder, "model.ply")) > 1000
    assert "done (seed 1234" in proc.stderr


@pytest.mark.slow
def test_generate_glb_and_obj(tiny_pipeline_dir, tmp_path):
    try:
        import trellis.utils.postprocessing_utils  # noqa: F401
    except ImportError as err:
        pytest.skip(f"glb/obj export not testable: trellis.utils.postprocessing_utils does not import ({err})")
    out = tmp_path / "out"
    proc = desktop("generate", rgba_blob(tmp_path / "a.png"), "-o", out, "--model", tiny_pipeline_dir,
                   "--formats", "glb,obj", "--quiet", *SMALL)
    assert proc.returncode == 0, proc.stderr
    # --quiet: only warnings, which are always shown; the tiny model's faint Gaussians give the bake's.
    (warning,) = proc.stderr.splitlines()
    assert warning.startswith("[1/1] a.png: warning: The texture bake saw only "), proc.stderr
    (folder,) = job_folders(out)
    assert proc.stdout.strip() == folder
    files = set(os.listdir(folder))
    assert {"model.glb", "model.obj", "model.mtl", "model.png"} <= files and "model.ply" not in files
    import trimesh

    glb = trimesh.load(os.path.join(folder, "model.glb"), force="mesh")
    assert len(glb.faces) > 0
    assert "mtllib model.mtl" in open(os.path.join(folder, "model.obj")).read()
    timings = json.load(open(os.path.join(folder, "timings.json")))
    assert {"glb", "obj"} <= set(timings["export"])
    seed = json.load(open(os.path.join(folder, "settings.json")))["seed"]
    assert isinstance(seed, int)                                      # a random seed, recorded


def test_without_o_the_jobs_go_to_outputs_as_in_the_app(tiny_pipeline_dir, tmp_path):
    # -o left out: outputs/ where the command runs, the folder the app (--outputs) uses by default.
    work = tmp_path / "work"
    work.mkdir()
    image = rgba_blob(work / "chair.png")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "desktop", "generate", "chair.png", "--model", tiny_pipeline_dir,
                           "--formats", "ply", "--quiet", *SMALL], cwd=work, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    (folder,) = job_folders(work / "outputs")
    assert proc.stdout.strip() == os.path.abspath(folder) and os.path.isfile(os.path.join(folder, "model.ply"))
    assert sorted(os.listdir(work)) == ["chair.png", "outputs"]
    help_text = " ".join(desktop("generate", "--help", timeout=60).stdout.split())
    assert "[-o OUT_DIR]" in help_text and "(default: outputs" in help_text


def test_text_file_fails_with_exit_1(tiny_pipeline_dir, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    out = tmp_path / "out"
    proc = desktop("generate", text, tmp_path / "missing.png", "-o", out, "--model", tiny_pipeline_dir, *SMALL)
    assert proc.returncode == 1
    assert "notes.txt: FAILED: bad input:" in proc.stderr and "not an image file" in proc.stderr
    assert "missing.png: FAILED: bad input: Image file not found" in proc.stderr
    assert proc.stdout == "" and job_folders(out) == []


def test_model_missing_is_a_clear_failure(tmp_path):
    a, b = rgba_blob(tmp_path / "a.png"), rgba_blob(tmp_path / "b.png")
    out = tmp_path / "out"
    proc = desktop("generate", a, b, "-o", out, "--model", tmp_path / "no-such-model", "--steps", "2")
    assert proc.returncode == 1
    assert "a.png: FAILED: could not load the model" in proc.stderr and "pipeline.json" in proc.stderr
    assert "b.png: skipped (the model could not be loaded)" in proc.stderr
    assert job_folders(out) == []                                  # nothing written


def test_usage_errors_exit_2(tmp_path):
    for args, message in [(["generate", "x.png", "-o", "out", "--preset", "ultra"], "invalid choice"),
                          (["generate", "x.png", "-o", "out", "--formats", "glb,fbx"], "fbx"),
                          (["generate", "x.png", "-o", "out", "--steps", "0"], "ss_steps"),
                          (["generate", "x.png", "-o", "out", "--set", "bogus=1"], "KEY=VALUE"),
                          (["generate", "x.png", "-o", "out", "--device", "tpu"], "cpu, cuda"),
                          (["ui", "--port", "notanumber"], "not a port number"), (["api", "--port", "notanumber"], "--port"),
                          ([], "command")]:
        proc = desktop(*args, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
    assert not os.path.exists(os.path.join(ROOT, "out"))


def test_output_folder_under_a_file_is_a_usage_error_before_the_model_loads(tiny_pipeline_dir, tmp_path):
    a = rgba_blob(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("hello")
    before = sorted(os.listdir(tmp_path))
    for out, message in [(tmp_path / "notes.txt" / "out", "notes.txt is a file, not a folder"),
                         (tmp_path / "notes.txt", "exists and is not a folder"),
                         (tmp_path / ("x" * 300) / "out", "the name is too long")]:
        proc = desktop("generate", a, "-o", out, "--model", tiny_pipeline_dir, *SMALL, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "choose another folder with -o" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and "Loading model" not in proc.stderr and proc.stdout == ""
    assert sorted(os.listdir(tmp_path)) == before and (tmp_path / "notes.txt").read_text() == "hello"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions / mounts")
def test_read_only_output_folder_is_a_usage_error_before_the_model_loads(tiny_pipeline_dir, tmp_path):
    a = rgba_blob(tmp_path / "a.png")
    folder, prefix = read_only_folder(tmp_path)
    try:
        for out in (folder, folder / "new" / "out"):
            proc = desktop("generate", a, "-o", out, "--model", tiny_pipeline_dir, *SMALL, prefix=prefix, timeout=60)
            assert proc.returncode == 2, proc.stderr
            assert f"cannot write to {out}" in proc.stderr, proc.stderr
            assert "choose another folder with -o, or make it writable" in proc.stderr
            assert "Traceback" not in proc.stderr and "Loading model" not in proc.stderr and proc.stdout == ""
        assert os.listdir(folder) == []                                 # no probe, no job folder left
    finally:
        folder.chmod(0o755)


def _damaged_copy(tiny_pipeline_dir, dest, damage):
    shutil.copytree(tiny_pipeline_dir, dest)
    target = os.path.join(dest, "ckpts", "ss_dec_conv3d_tiny_fp16.safetensors")
    damage(target)
    return target


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _garbage_header(path):
    with open(path, "r+b") as f:
        f.write(b"\xff" * 16)


def _folder_instead(path):
    os.remove(path)
    os.mkdir(path)


@pytest.mark.parametrize("damage, reason", [(_truncate, "the file is damaged or incomplete"),
                                            (_garbage_header, "the file is damaged or incomplete"),
                                            (os.remove, "the file is missing"),
                                            (_folder_instead, "it is not a regular file (it is a folder)")])
def test_unreadable_weights_are_named_with_how_to_get_them_again(tiny_pipeline_dir, tmp_path, damage, reason):
    model = str(tmp_path / "model")
    target = _damaged_copy(tiny_pipeline_dir, model, damage)
    out = tmp_path / "out"
    proc = desktop("generate", rgba_blob(tmp_path / "a.png"), rgba_blob(tmp_path / "b.png"), "-o", out,
                   "--model", model, *SMALL)
    assert proc.returncode == 1, proc.stderr
    assert f"a.png: FAILED: could not load the model from {model}: cannot read {target}: {reason}" in proc.stderr
    assert "re-download it with `python -m installer weights --repair`" in proc.stderr
    assert "b.png: skipped (the model could not be loaded)" in proc.stderr
    assert "No such file or directory" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == "" and job_folders(out) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_weights_this_user_may_not_read(tiny_pipeline_dir, tmp_path):
    """A weights file with mode 000. Root reads it anyway, so as root the CLI runs as `nobody` (setpriv) on a
    world-readable copy: the kernel then refuses that one file for real."""
    prefix = ()
    base = tmp_path
    if os.geteuid() == 0:
        prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
        if not shutil.which("setpriv") or subprocess.run([*prefix, sys.executable, "-c", "import desktop"],
                                                        cwd=ROOT, capture_output=True).returncode != 0:
            pytest.skip("root, and no way here to run the CLI as another user")
        base = tempfile.mkdtemp(prefix="trellis-cli-test-")          # pytest's own tmp folders are 0700
        os.chmod(base, 0o777)
    try:
        model = os.path.join(base, "model")
        target = _damaged_copy(tiny_pipeline_dir, model, lambda path: None)
        for d, _, files in os.walk(model):
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o644)
        os.chmod(target, 0)
        image = rgba_blob(os.path.join(base, "a.png"))
        os.chmod(image, 0o644)
        out = os.path.join(base, "out")
        proc = desktop("generate", image, "-o", out, "--model", model, *SMALL, prefix=prefix)
        assert proc.returncode == 1, proc.stderr
        assert f"cannot read {target}: Permission denied; let this user read it" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and job_folders(out) == []
    finally:
        if base is not tmp_path:
            shutil.rmtree(base, ignore_errors=True)


def _usage_error(proc, message):
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_bad_settings_files_are_usage_errors(tmp_path):
    cases = [(b"{bad json", "settings are not valid JSON"), (b"[1, 2]", "must be a JSON object"),
             (b'{"settings": {"ss_steps": "x"}}', "ss_steps: expected a whole number"),
             (b'{"settings": {"simplify": NaN}}', "simplify: expected a number, got nan"),
             (b'{"bogus": 1}', "unknown setting(s) 'bogus'"),
             (b"\xff\xfe{}", "is not a settings file (e.g. a job's settings.json): it is not UTF-8 text"),
             (b"[" * 100_000 + b"]" * 100_000, "its JSON is nested too deeply"),
             (b" " * (setting_flags.SETTINGS_MAX_BYTES + 1), "is too large to be a settings file")]
    out = tmp_path / "out"
    for k, (content, message) in enumerate(cases):
        path = tmp_path / f"settings{k}.json"
        path.write_bytes(content)
        _usage_error(desktop("generate", "x.png", "-o", out, "--settings", path, timeout=60), message)
    _usage_error(desktop("generate", "x.png", "-o", out, "--settings", tmp_path, timeout=60),
                 f"--settings: cannot read {tmp_path}: Is a directory")
    _usage_error(desktop("generate", "x.png", "-o", out, "--settings", tmp_path / "none.json", timeout=60),
                 "No such file or directory")
    assert not out.exists()


def test_bad_set_values_are_usage_errors(tmp_path):
    out = tmp_path / "out"
    for item, message in [("video_frames=many", "video_frames: expected a whole number, got 'many'"),
                          ("seed=1.5", "seed: expected a whole number"), ("simplify=nan", "expected a number"),
                          ("simplify=inf", "expected a number"), ("formats=", "choose at least one"),
                          ("precision=xx", "'xx' is not one of"), ("randomize_seed=maybe", "expected true or false"),
                          ("texture_size=99999999999999999999", "out of range"), ("video_fps", "KEY=VALUE")]:
        _usage_error(desktop("generate", "x.png", "-o", out, "--set", item, timeout=60), message)
    assert not out.exists()


def test_inputs_that_are_not_image_files(tiny_pipeline_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    with open(rgba_blob(tmp_path / "whole.png"), "rb") as f:
        (tmp_path / "cut.png").write_bytes(f.read(300))
    out = tmp_path / "out"
    proc = desktop("generate", folder, tmp_path / "missing.png", tmp_path / "empty.png", tmp_path / "cut.png",
                   "-o", out, "--model", tiny_pipeline_dir, *SMALL)
    assert proc.returncode == 1, proc.stderr
    for line in ["photos: FAILED: bad input: " + f"{folder} is a folder, not an image file",
                 "missing.png: FAILED: bad input: Image file not found", "empty.png: FAILED: bad input:",
                 "cut.png: FAILED: bad input:", "cut.png could not be decoded; the file looks damaged"]:
        assert line in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == "" and job_folders(out) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_pipe_as_input_is_a_usage_error_not_a_hang(tmp_path):
    pipe = tmp_path / "photo.png"
    os.mkfifo(pipe)
    _usage_error(desktop("generate", pipe, "-o", tmp_path / "out", timeout=60), "is not a file but a pipe")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
@pytest.mark.slow
def test_ctrl_c_cancels_cleanly_with_exit_130(tiny_pipeline_dir, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": ROOT}
    def as_from_a_terminal_but_blocked():
        # Ctrl-C's default action, as a shell gives a command it runs in the foreground (a test run started in the
        # background has it ignored, and Python then keeps ignoring it), but blocked, as a launcher may leave it:
        # the app lets it through.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    proc = subprocess.Popen([sys.executable, "-m", "desktop", "generate", rgba_blob(tmp_path / "a.png"), "-o", out,
                             "--model", tiny_pipeline_dir, "--steps", "500", "--formats", "ply"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=as_from_a_terminal_but_blocked)
    timer = threading.Timer(120, proc.kill)
    timer.start()
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if "Sampling structure" in line:
                proc.send_signal(signal.SIGINT)
                break
        rest_out, rest_err = proc.communicate()
        seen.append(rest_err)
    finally:
        timer.cancel()
    stderr = "".join(seen)
    assert proc.returncode == 130, stderr
    assert "cancelled" in stderr and rest_out == ""
    (folder,) = job_folders(out)
    files = os.listdir(folder)
    assert "model.ply" not in files and not [f for f in files if f.startswith(".")]
    assert json.load(open(os.path.join(folder, "error.json")))["state"] == "cancelled"


# ------------------------------------------------------------------------------------------ in process

def test_settings_from_options(tmp_path):
    parse = cli.build_parser().parse_args
    s = cli.settings_from_args(parse(["a.png", "-o", "o", "--preset", "high", "--seed", "7", "--steps", "3",
                                      "--formats", "obj,glb", "--no-background-removal", "--simplify", "0.5",
                                      "--set", "video_fps=12", "--set", "fill-holes=no", "--set", "precision=bf16"]))
    assert (s.preset, s.seed, s.randomize_seed, s.ss_steps, s.slat_steps) == ("high", 7, False, 3, 3)
    assert (s.formats, s.preprocess, s.simplify, s.video_fps, s.fill_holes, s.precision) == (
        ("glb", "obj"), False, 0.5, 12, False, "bf16")
    assert s.texture_size == 2048                                        # from the preset
    assert cli.settings_from_args(parse(["a.png", "-o", "o"])) == GenerationSettings()

    # Reproduce a job from its settings.json; options still override.
    record = tmp_path / "settings.json"
    record.write_text(json.dumps({"seed": 99, "settings": s.to_dict()}))
    again = cli.settings_from_args(parse(["a.png", "-o", "o", "--settings", str(record), "--texture-size", "512"]))
    assert again == s.replace(texture_size=512)
    with pytest.raises(ValueError, match="either"):
        cli.settings_from_args(parse(["a.png", "-o", "o", "--settings", str(record), "--preset", "fast"]))
    with pytest.raises(ValueError, match="video_frames"):
        cli.settings_from_args(parse(["a.png", "-o", "o", "--set", "video_frames=many"]))
    assert parse(["a.png", "-o", "o", "--gpus", "0,1"]).gpus == [0, 1]


def test_progress_bar_text():
    import io

    from desktop.jobs import Job, Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True
    stream = Tty()
    display = cli.ProgressDisplay(stream)
    job = Job(id="x" * 32, inputs=["a.png"], settings=GenerationSettings())
    job.progress = Progress("slat", 6, 12, 0.5, 75.0, 75.0, "")
    display.update(1, 2, "a.png", job)
    text = stream.getvalue()
    assert text.startswith("\r[1/2] a.png  Sampling details 6/12  [##########----------]  50%  ETA 1:15")
    display.clear()
    assert stream.getvalue().endswith("\r")
    assert format_clock(3725) == "1:02:05" and format_clock(None) == "--:--"


def test_elongated_image_is_a_user_error_without_traceback(tiny_pipeline_dir, tmp_path):
    from PIL import Image

    band = Image.new("RGBA", (100_000, 8), (0, 0, 0, 0))
    band.paste((200, 80, 40, 255), (0, 2, 100_000, 6))
    band.save(tmp_path / "band.png")
    out = tmp_path / "out"
    proc = desktop("generate", tmp_path / "band.png", "-o", out, "--model", tiny_pipeline_dir, *SMALL)
    assert proc.returncode == 1, proc.stderr
    assert "band.png: FAILED: bad input:" in proc.stderr and "times wider than tall" in proc.stderr
    assert "Traceback" not in proc.stderr and "error.json" not in proc.stderr
    assert proc.stdout == "" and job_folders(out) == []


def test_unexpected_errors_name_only_a_file_that_is_written(tmp_path):
    from desktop.jobs import classify_failure

    kind, message = classify_failure(RuntimeError("boom"), tmp_path, "cpu")
    assert kind == "internal" and "boom" in message and "error.json" not in message
    kind, message = classify_failure(RuntimeError("boom"), tmp_path, "cpu", str(tmp_path / "j" / "error.json"))
    assert str(tmp_path / "j" / "error.json") in message


@pytest.mark.skipif(os.name != "posix", reason="command-line bytes (Windows passes UTF-16 text)")
def test_command_line_bytes_that_are_not_utf8_are_usage_errors_or_kept_as_bytes(tiny_pipeline_dir, tmp_path):
    """A prompt typed as `--prompt "$(cat latin1.txt)"` reaches Python as surrogate escapes: a usage error
    (exit 2) naming the byte, for generate, retexture and a batch list (an API token of such bytes too),
    never a traceback. A folder whose
    name has such bytes is valid: generate prints it back as the same bytes on a strict stdout (what a
    UTF-8 locale such as en_US.UTF-8 gives; PYTHONIOENCODING=utf-8 makes it so here)."""
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONUTF8": "1", "PYTHONIOENCODING": "utf-8"}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "desktop", *args], cwd=ROOT, env=env, capture_output=True,
                              timeout=180)

    out = tmp_path / "out"
    latin1 = "une chaise à pieds".encode("latin-1")
    for args in (["generate", "--prompt", latin1], ["retexture", str(tmp_path / "chair.glb"), "--prompt", latin1]):
        proc = run(*args, "-o", str(out))
        err = proc.stderr.decode("utf-8", "replace")
        assert proc.returncode == 2, err
        assert "--prompt: the prompt is not UTF-8 text: byte 0xe0 (after 'une chaise ')" in err
        assert "Traceback" not in err and not out.exists()
    proc = run("api", "--token", b"\xff" * 12, "--port", "1")
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2 and "--token: use printable ASCII characters" in err and "Traceback" not in err, err
    (tmp_path / "list.csv").write_bytes(b"prompt\n" + latin1 + b"\n")
    proc = run("batch", str(tmp_path / "list.csv"), "-o", str(out))
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2 and "list.csv is not UTF-8 text" in err and "Traceback" not in err, err

    rgba_blob(tmp_path / "good.png")
    odd = os.fsencode(tmp_path) + b"/out-\xff"
    proc = run("generate", str(tmp_path / "good.png"), "-o", odd, "--model", tiny_pipeline_dir, "--preset", "fast",
               "--formats", "ply", "-q", *SMALL)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    folder = proc.stdout.strip()
    assert folder.startswith(odd + b"/") and os.path.isfile(folder + b"/model.ply")
