"""`python -m desktop batch` given hostile lists and outputs folders: JSON nested thousands deep (in the list
and in OUT/manifest.jsonl), CSV headers it does not know, semicolon- and tab-separated CSV, pipes named in a
list or given as the list, and an outputs folder on a full disk. Each ends in a clear message and an exit
status, never a traceback or a hang, and a batch that started always prints and saves its summary."""
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys

import pytest

from desktop.batch import items as batch_items
from desktop.batch import manifest as mf
from desktop.batch.files import NotAFileError, read_regular
from tests.helpers.images import rgba_blob

from tests.helpers.repo import ROOT_DIR as ROOT
SMALL = ["--preset", "fast", "--steps", "2", "--formats", "ply"]
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")


def batch(*args, timeout=120, prefix=(), preexec_fn=None):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([*prefix, sys.executable, "-m", "desktop", "batch", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn)


def no_traceback(proc):
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


def read(path) -> list:
    return [(i.name, i.kind, os.path.basename(i.source) if i.kind == "image" else i.source, i.changes, i.problem)
            for i in batch_items.read_items(str(path))]


# ------------------------------------------------------------------------------------------ nesting

def test_a_jsonl_line_nested_100000_deep_is_a_usage_error_naming_the_line(tmp_path):
    listing = tmp_path / "nested.jsonl"
    listing.write_text('{"prompt": "a chair"}\n{"image": "a.png", "seed": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    proc = batch(listing, "-o", tmp_path / "out")
    no_traceback(proc)
    assert proc.returncode == 2, proc.stderr
    assert f"{listing}:2: JSON nested more than 32 levels deep" in proc.stderr
    assert not (tmp_path / "out").exists()                 # nothing started


def test_a_settings_json_nested_deep_or_a_pipe_makes_its_folder_incomplete_not_a_crash(tmp_path):
    """What the driver reads in OUT (item folders' settings.json, work folders' owner files) is read only
    when it is a regular file and depth-checked: a damaged one means "not this item's folder". In a child
    process with a time limit: a reader that opened the pipe would wait forever."""
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "settings.json").write_text("[" * 5000 + "]" * 5000)
    probes = [f"mf.folder_problem({str(deep)!r}, 'k')", f"mf.folder_item_key({str(deep)!r})"]
    if hasattr(os, "mkfifo"):
        piped = tmp_path / "piped"
        piped.mkdir()
        os.mkfifo(piped / "settings.json")
        probes += [f"mf.folder_problem({str(piped)!r}, 'k')"]
    code = "from desktop.batch import manifest as mf\n" + "".join(f"print({p})\n" for p in probes)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr
    expected = ["not this item's folder", "None", "not this item's folder"]
    assert proc.stdout.split("\n")[:len(probes)] == expected[:len(probes)]


# ------------------------------------------------------------------------------------------ CSV

def test_csv_separators_headers_and_cells(tmp_path):
    rgba_blob(tmp_path / "good.png")
    cases = {
        # Excel in many locales: semicolons; a tab-separated export; a BOM and CRLF line ends.
        "semi.csv": "image;seed\ngood.png;1\n",
        "tabs.csv": "\ufeffimage\tseed\ttexture_size\r\ngood.png\t2\t512\r\n",
        # One column of prompts that hold commas (quoted, as every spreadsheet writes them).
        "prompts.csv": 'prompt\n"a red chair, wooden"\n',
        # No header: one image path or prompt a line, a prompt's commas included.
        "plain.csv": 'good.png\nA red wooden chair, with arms\n"a vase, blue"\n',
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert read(tmp_path / "semi.csv") == [("good", "image", "good.png", {"seed": 1}, None)]
    assert read(tmp_path / "tabs.csv") == [("good", "image", "good.png", {"seed": 2, "texture_size": 512}, None)]
    assert read(tmp_path / "prompts.csv") == [("a-red-chair--wooden", "prompt", "a red chair, wooden", {}, None)]
    assert read(tmp_path / "plain.csv") == [("good", "image", "good.png", {}, None),
                                            ("a-red-wooden-chair--with-arms", "prompt", "A red wooden chair, with arms",
                                             {}, None),
                                            ("a-vase--blue", "prompt", "a vase, blue", {}, None)]

    refused = {
        "file,seed\ngood.png,1\n": "the first row (file, seed) is a header without an image or prompt column",
        "Image Path;Seed\ngood.png;1\n": "the first row (Image Path, Seed) is a header without an image or prompt",
        "seed\n3\n": "the first row (seed) is a header without an image or prompt column",
        "good.png;1\nother.png;2\n": "1: several cells ('good.png;1', separated by semicolons) but the list has no "
                                     "header row: add a first row naming the columns, e.g. 'image;seed'",
        "prompt\na red chair, wooden\n": "row 2 has 2 cells but the header names 1 columns (cells are separated by "
                                         "commas): put a cell that holds the separator in double quotes",
    }
    for text, says in refused.items():
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(batch_items.BatchInputError) as err:
            batch_items.read_items(str(tmp_path / "bad.csv"))
        assert says in str(err.value), str(err.value)


def test_a_header_without_an_image_or_prompt_column_is_a_usage_error_not_items(tmp_path):
    rgba_blob(tmp_path / "good.png")
    (tmp_path / "list.csv").write_text("file,seed\ngood.png,1\n")
    proc = batch(tmp_path / "list.csv", "-o", tmp_path / "out")
    no_traceback(proc)
    assert proc.returncode == 2 and "(file, seed) is a header without an image or prompt column" in proc.stderr
    assert "name the column of image paths `image`" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_hostile_values_in_a_jsonl_fail_their_item_only(tmp_path):
    lines = ['{"image": "good.png", "seed": [[1]]}', '{"image": ["a.png"]}', '{"prompt": 5}', '{"preset": []}',
             '{"prompt": "a \\ud800 chair"}', '{"prompt": "\\u0000\\u0000"}', '{"prompt": "a red chair"}']
    (tmp_path / "list.jsonl").write_text("\n".join(lines) + "\n")
    got = [(kind, problem) for _, kind, _, _, problem in read(tmp_path / "list.jsonl")]
    assert got[0] == ("image", "bad item: seed: expected a whole number, got [[1]]")
    assert got[1] == ("image", "bad item: image: expected a file path, got ['a.png']")
    assert got[2] == ("prompt", "bad item: the prompt must be text, got int")
    assert got[3][1].startswith("bad item: no image and no prompt")
    assert got[4][1].startswith("bad item: the prompt holds a lone surrogate (U+D800, after 'a ')")
    assert got[5][1].startswith("bad item: the prompt is empty")
    assert got[6] == ("prompt", None)


# ------------------------------------------------------------------------------------------ pipes

@needs_fifo
def test_a_pipe_given_as_the_list_or_named_in_it_is_refused_unopened(tmp_path):
    pipe = tmp_path / "list.csv"
    os.mkfifo(pipe)
    with pytest.raises(NotAFileError, match="is a pipe"):
        read_regular(pipe, 1 << 20)                      # returns at once: the open does not wait for a writer
    proc = batch(pipe, "-o", tmp_path / "out", timeout=60)
    no_traceback(proc)
    assert proc.returncode == 2 and f"{pipe} is a pipe (FIFO), not a folder, a glob, a .csv or a .jsonl" in proc.stderr
    os.mkfifo(tmp_path / "p.png")
    (tmp_path / "named.jsonl").write_text('{"image": "p.png"}\n{"image": "%s"}\n' % tmp_path)
    assert [problem for *_, problem in read(tmp_path / "named.jsonl")] == [
        f"bad input: {tmp_path / 'p.png'} is a pipe (FIFO), not an image file; give an image file",
        f"bad input: {tmp_path} is a folder, not an image file; give an image file"]


@needs_fifo
def test_a_pipe_named_in_a_csv_fails_its_item_the_others_are_made_and_a_damaged_manifest_is_skipped(
        tiny_pipeline_dir, tmp_path):
    """The pipe first, so that a worker opening it would hold its sampling lock and the good item forever.
    OUT/manifest.jsonl of an earlier run has a line nested 1000 deep and a torn one: skipped and counted."""
    rgba_blob(tmp_path / "good.png")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "list.csv").write_text("image\npipe.png\ngood.png\n")
    out = tmp_path / "out"
    out.mkdir()
    earlier = {"event": "batch", "time": 1.0, "items": 1}
    (out / mf.MANIFEST).write_text(json.dumps(earlier) + "\n" + "[" * 1000 + "]" * 1000 + '\n{"event": "pla')
    proc = batch(tmp_path / "list.csv", "-o", out, "--model", tiny_pipeline_dir, "--device", "cpu", *SMALL,
                 timeout=240)
    no_traceback(proc)
    assert proc.returncode == 1, proc.stderr
    assert f"pipe: FAILED: bad input: {tmp_path / 'pipe.png'} is a pipe (FIFO), not an image file" in proc.stderr
    assert "2 damaged line(s) skipped" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["good", mf.MANIFEST, mf.SUMMARY]
    summary = json.loads((out / mf.SUMMARY).read_text())
    assert (summary["done"], summary["failed"], summary["not_run"]) == (1, 1, 0)
    log = mf.Manifest(out)
    assert log.damaged == 2 and log.events[0] == earlier
    assert {e["item"]: e["event"] for e in log.events if "item" in e and e["event"] != "planned"} == \
        {"pipe": "failed", "good": "done"}


# ------------------------------------------------------------------------------------------ a full disk

def _tmpfs_prefix(tmp_path):
    """Run the command in a private mount namespace where `tmp_path/disk` is a 512 KB tmpfs filled to the
    last byte (root only; the namespace, and the tmpfs, end with the command)."""
    if os.name != "posix" or os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("mount")):
        pytest.skip("a tmpfs needs root with unshare and mount")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = ('mount -t tmpfs -o size=512k tmpfs "$0" || exit 99; cat /dev/zero > "$0/fill" 2>/dev/null; '
              '"$@"; rc=$?; echo "LEFT: $(ls -A "$0/out" | tr "\\n" " ")"; exit $rc')
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(disk), "true"],
                           capture_output=True, text=True)
    if probe.returncode == 99:
        pytest.skip(f"tmpfs cannot be mounted here: {probe.stderr.strip()}")
    return disk / "out", ("unshare", "-m", "--propagation", "private", "sh", "-c", script, str(disk))


def _file_size_limit():
    """Writes past 0 bytes fail with EFBIG, as on a full disk (SIGXFSZ ignored: the write fails instead)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


@pytest.mark.skipif(os.name != "posix", reason="POSIX mounts and resource limits")
@pytest.mark.parametrize("how", ["tmpfs full", "file size limit"])
def test_an_outputs_folder_that_cannot_be_written_is_reported_with_the_summary(tmp_path, how):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        rgba_blob(images / name)
    if how == "tmpfs full":
        out, prefix = _tmpfs_prefix(tmp_path)
        proc = batch(images, "-o", out, "--model", "unused", prefix=prefix, timeout=60)
        left = proc.stdout.split("LEFT:")[-1].split()
        says = "No space left on device"
    else:
        out = tmp_path / "out"
        proc = batch(images, "-o", out, "--model", "unused", preexec_fn=_file_size_limit, timeout=60)
        left = sorted(os.listdir(out))
        says = "File too large"
    no_traceback(proc)
    assert proc.returncode == 1, proc.stderr
    assert f"error: cannot write the batch's record {out / mf.MANIFEST}: {says}; free some disk space there or " \
           "choose another -o, then run the same command again" in proc.stderr
    assert re.search(r"\nnot run +2\n", proc.stderr)                        # the summary table is printed
    assert f"error: the summary could not be saved to {out / mf.SUMMARY}: {says} (it is printed above)" in proc.stderr
    assert left == []                                    # no lock, no empty manifest, no work folder left


@pytest.mark.skipif(os.name != "posix", reason="file names of bytes (Windows names are UTF-16 text)")
def test_a_folder_whose_name_is_not_utf8_is_a_batch_like_any_other(tiny_pipeline_dir, tmp_path):
    """A folder name with a Latin-1 byte reaches Python as a surrogate escape; the item's identity (its
    source key, recorded in the manifest and its settings.json) is computed from those bytes."""
    images = os.fsencode(tmp_path) + b"/photos-\xe9t\xe9"
    os.mkdir(images)
    rgba_blob(os.fsdecode(images + b"/good.png"))
    out = tmp_path / "out"
    for run in (0, 1):
        proc = batch(os.fsdecode(images), "-o", out, "--model", tiny_pipeline_dir, "--device", "cpu", *SMALL)
        no_traceback(proc)
        assert proc.returncode == 0, proc.stderr
    assert "1 of 1 item(s) already done: skipped" in proc.stderr           # the rerun knows the item
    assert mf.folder_problem(out / "good", mf.source_key("image", os.fsdecode(images + b"/good.png"))) is None
