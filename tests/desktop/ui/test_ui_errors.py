"""Errors as a headline, an action and details (desktop/ui/errors.py): each error class of the app made by the real
code that makes it (a download to a closed port, a damaged weights file, a PNG header claiming 20 000² pixels, a full
disk's OSError, ...), classified by jobs.failures as a job would be, then rendered for the page: one plain sentence
without the raw internals, the action (a button where the page can do it), the raw text folded under Details."""
import errno
import re
import struct
import zlib
from types import SimpleNamespace

import pytest
import torch

from desktop.jobs import InputError
from desktop.jobs.failures import classify_failure
from desktop.jobs.job import ERROR_KINDS
from desktop.ui import errors
from desktop.ui.errors import ERROR_CLASSES, error_class, error_html, headline_of

RAW = ("Errno", "urlopen", "decompression bomb", "Traceback", "safetensors", "HeaderTooLarge", "huggingface",
       "No space left")


def failed_job(err, kind="generate", device="cpu", prompt=None, tmp="/tmp/out"):
    """A job ended by `err`, with the error kind and message the runner's worker gives it."""
    error_kind, message = classify_failure(err, tmp, device)
    return SimpleNamespace(error_kind=error_kind, error=message, device=device, kind=kind, prompt=prompt,
                           inputs=[])


def shown(job) -> tuple:
    """(class, the headline, the action line, the folded raw text, the box) of a failed job as the page shows it."""
    name, message = errors.job_error(job)
    box = error_html(name, message)
    headline = re.search(r'<p class="td-headline">(.*?)</p>', box).group(1)
    fix = re.search(r'<p class="td-fix">(.*?)</p>', box).group(1)
    details = re.search(r"<details[^>]*><summary>Details</summary><pre>(.*?)</pre></details>", box, re.S).group(1)
    return name, headline, fix, details, box


def png_header(width, height) -> bytes:
    """A PNG whose header claims width × height pixels (its one row of data does not matter: Pillow refuses
    the size when it opens the file)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


# ------------------------------------------------------------------------- one test per error class

def test_offline_background_removal_unticks_remove_background(tmp_path):
    from trellis.pipelines.background import BackgroundRemover

    remover = BackgroundRemover(model_dir=tmp_path / "u2net", download_url="http://127.0.0.1:9/u2net.onnx")
    with pytest.raises(Exception) as err:
        remover.ensure_model()                       # the download to a closed port fails as offline does
    name, headline, fix, details, box = shown(failed_job(err.value))
    assert name == "offline_background"
    assert headline == "The background removal model is missing, and this computer cannot download it (offline?)."
    assert 'data-td-action="no-background">Untick Remove background</button>' in fix
    assert "u2net.onnx" in details and "127.0.0.1:9" in details             # the raw text, folded
    assert not any(word in headline for word in RAW)


def test_offline_model_download_says_offline_and_retries(tmp_path):
    from desktop.jobs import ModelLoadError
    from desktop.jobs.failures import model_load_message

    cause = OSError("<urlopen error [Errno -2] Name or service not known>")
    err = ModelLoadError(model_load_message("microsoft/TRELLIS-image-large", cause))
    name, headline, fix, details, _ = shown(failed_job(err))
    assert name == "offline_model" and "offline" in headline
    assert 'data-td-action="retry"' in fix and "--model" in fix
    assert "Name or service not known" in details and not any(word in headline for word in RAW)


@pytest.mark.parametrize("device, name, button", [("cuda:0", "oom_gpu", "preset:low-vram"),
                                                   ("cpu", "oom_cpu", "preset:fast")])
def test_out_of_memory_offers_the_lighter_preset(device, name, button):
    err = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB") if device != "cpu" else MemoryError()
    got, headline, fix, details, _ = shown(failed_job(err, device=device))
    assert got == name and "ran out of memory" in headline
    assert f'data-td-action="{button}"' in fix


def test_bad_image_says_which_file_and_what_to_use(tmp_path):
    from desktop.jobs.inputs import load_and_cut_out

    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image")
    with pytest.raises(ValueError) as err:
        load_and_cut_out(str(fake))
    name, headline, fix, details, _ = shown(failed_job(InputError(str(err.value).replace(str(tmp_path) + "/", ""))))
    assert name == "bad_image"
    assert headline == "This image cannot be used: notes.png is not an image file this app can read."
    assert "PNG, JPEG" in fix and "data-td-action" not in fix                 # nothing the page can do for it


def test_a_see_through_png_says_so_once_and_what_to_use_instead(tmp_path):
    from PIL import Image

    from desktop.jobs.inputs import load_and_cut_out

    clear = tmp_path / "clear.png"
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(clear)
    with pytest.raises(ValueError) as err:
        load_and_cut_out(str(clear))
    name, headline, fix, details, _ = shown(failed_job(InputError(str(err.value))))
    assert name == "see_through" and headline == "This image is see-through: its transparency leaves no solid object."
    assert fix.startswith("Use a PNG whose object is opaque") and "No foreground found" in details
    # another image with nothing found: one colon in its headline too
    why = "bad input: No foreground found: background removal found no object in the picture (no pixel is opaque)."
    assert headline_of("bad_image", why) == "This image cannot be used: background removal found no object in the picture."


def test_giant_image_keeps_pillows_words_in_the_details(tmp_path):
    from desktop.jobs.inputs import load_and_cut_out

    giant = tmp_path / "giant.png"
    giant.write_bytes(png_header(20000, 20000))
    with pytest.raises(ValueError) as err:
        load_and_cut_out(str(giant))
    name, headline, fix, details, _ = shown(failed_job(InputError(str(err.value))))
    assert name == "huge_image" and headline == "This image is far too large to open safely."
    assert "8000 pixels" in fix
    assert "decompression bomb" in details and "decompression" not in headline + fix


def test_damaged_model_file_says_download_it_again(tmp_path):
    from desktop.jobs.models import load_image_pipeline
    from trellis.tools.tiny_pipeline import write_tiny_pipeline

    folder = write_tiny_pipeline(str(tmp_path / "model"), seed=0)
    ckpt = next(p for p in sorted((tmp_path / "model" / "ckpts").iterdir()) if p.suffix == ".safetensors")
    ckpt.write_bytes(b"\xff" * 64)                          # a broken download
    with pytest.raises(Exception) as err:
        load_image_pipeline(folder, "cpu")
    name, headline, fix, details, _ = shown(failed_job(err.value))
    assert name == "bad_model_file" and headline == "A file of the model is damaged or cannot be read."
    assert "installer weights --repair" in fix and 'data-td-action="retry"' in fix
    assert ckpt.name in details


def test_missing_text_model_offline_and_missing_folder(tmp_path):
    from desktop.jobs import ModelLoadError
    from desktop.jobs.models import load_text_pipeline, text_model_message

    offline = ModelLoadError(text_model_message("microsoft/TRELLIS-text-base",
                                                 OSError("[Errno -3] Temporary failure in name resolution")))
    name, headline, fix, details, _ = shown(failed_job(offline, kind="text", prompt="a chair"))
    assert name == "missing_text_model" and "text model is not downloaded" in headline
    assert "--text-model" in fix and 'data-td-action="retry"' in fix and "name resolution" in details
    with pytest.raises(Exception) as err:
        load_text_pipeline(str(tmp_path / "no-text-model"), "cpu")
    name, headline, fix, _, _ = shown(failed_job(err.value, kind="text", prompt="a chair"))
    assert name == "missing_text_folder" and "--text-model" in fix


def test_disk_full_says_where_and_retries(tmp_path):
    err = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "model.glb"))
    name, headline, fix, details, _ = shown(failed_job(err, tmp=str(tmp_path)))
    assert name == "disk_full" and headline == "The disk of the outputs folder is full."
    assert "--outputs" in fix and 'data-td-action="retry"' in fix and str(tmp_path) in details


def test_a_folder_removed_or_unwritable_is_not_called_a_full_disk(tmp_path):
    job = tmp_path / "20250101-000000-abcd1234"
    job.mkdir()
    unwritable = PermissionError(errno.EACCES, "Permission denied", str(job / ".model.partial-1a2b3c4d.glb"))
    removed = FileNotFoundError(errno.ENOENT, "No such file or directory", str(tmp_path / "gone" / "model.glb"))
    for err, words in [(unwritable, "Permission denied"), (removed, "was removed")]:
        name, headline, fix, details, _ = shown(failed_job(err, tmp=str(tmp_path)))
        assert name == "folder_lost" and "full" not in headline + fix, (name, headline)
        assert "--outputs" in fix and 'data-td-action="retry"' in fix and words in details, details
        assert "partial" not in details, details
    from desktop.jobs.queued import NotRecordedError, not_recorded_message
    from desktop.ui.batch_view import submit_items

    def refused():                     # what the runner raises when the outputs folder refuses the queue record
        raise NotRecordedError(not_recorded_message(tmp_path, PermissionError(errno.EACCES, "Permission denied")),
                               str(tmp_path))
    _, not_queued = submit_items([("chair.png", refused)], queued=lambda job: None)
    assert [item.error for item in not_queued] == ["folder_lost"], not_queued


def test_a_new_look_models_error_is_about_the_3d_model():
    err = InputError("photo.glb is a JPEG image, not a 3-D model (a photo can be the image the new look is taken from)")
    name, headline, *_ = shown(failed_job(err, kind="variant", prompt="gold"))
    assert name == "bad_mesh" and headline == "This 3D model cannot be used: photo.glb is a JPEG image, not a 3-D model."


# ------------------------------------------------------------------------- the table as a whole

def test_every_error_kind_has_a_class_and_every_class_a_plain_headline():
    from desktop.jobs.job import ERROR_KINDS as kinds

    assert kinds == ERROR_KINDS
    for kind in set(kinds) - {"cancelled"}:
        for job_kind in ("generate", "text", "variant"):
            assert error_class(kind, "something failed", "cpu", job_kind, "p" if job_kind != "generate" else None) \
                in ERROR_CLASSES, kind
    for name, cls in ERROR_CLASSES.items():
        assert cls.headline.endswith((".", ")")) and cls.headline[0].isupper(), name
        assert len(re.findall(r"[.!?](?:\s|$)", cls.headline)) == 1, f"{name}: one sentence"
        assert not any(word in cls.headline + cls.action for word in RAW), name
        if cls.button:
            label, action = cls.button
            assert action in ("no-background", "new-seed", "retry") or action.startswith("preset:"), action
    # The script of the page knows every action the table names.
    from desktop.ui.look import SCRIPT

    for action in {cls.button[1] for cls in ERROR_CLASSES.values() if cls.button}:
        assert f"'{action}'" in SCRIPT or action.startswith("preset:"), action


def test_the_raw_text_is_escaped_and_folded():
    box = error_html("internal", "unexpected error (KeyError: '<script>x</script>')")
    assert "<script>" not in box and "&lt;script&gt;" in box
    assert box.index("td-headline") < box.index("td-fix") < box.index("<details")
    assert "<details open" not in box                               # folded until asked for
    assert headline_of("bad_image", "bad input: " + "x" * 300) == ERROR_CLASSES["bad_image"].headline
