"""Errors on the page as a headline, an action and details: ERROR_CLASSES maps each error class of the app
(offline, out of memory, bad image, bad model file, missing text model, disk full, ...) to one plain
sentence and what to do, with a button where the page can do it (look.py's script runs the button's
data-td-action); the raw text is folded under "Details"."""
import html
import re
from dataclasses import dataclass
from typing import Optional

from ..jobs.inputs import NO_OBJECT_IN_ALPHA


@dataclass(frozen=True)
class ErrorClass:
    headline: str                   # one plain sentence: what happened
    action: str                     # what to do, in the user's words
    button: Optional[tuple] = None  # (label, action id for look.py's script): the page does it for the user


# The page's buttons (look.py's script): no-background unticks Remove background, preset:NAME picks a preset,
# new-seed ticks Randomize seed, retry presses Generate again.
ERROR_CLASSES = {
    "offline_background": ErrorClass(
        "The background removal model is missing, and this computer cannot download it (offline?).",
        "Untick Remove background and use an image whose transparency marks the object (a PNG), or connect to the "
        "internet once and generate again.", ("Untick Remove background", "no-background")),
    "background_failed": ErrorClass(
        "Background removal did not work on this image.",
        "Untick Remove background and use an image whose transparency marks the object (a PNG).",
        ("Untick Remove background", "no-background")),
    "offline_model": ErrorClass(
        "The model could not be downloaded: this computer seems to be offline.",
        "Connect to the internet and try again (the model is downloaded once), or restart the app with --model "
        "pointing to a downloaded copy.", ("Try again", "retry")),
    "missing_model": ErrorClass(
        "The model folder is missing or incomplete.",
        "Restart the app with --model pointing to a folder that holds pipeline.json and ckpts/."),
    "bad_model_file": ErrorClass(
        "A file of the model is damaged or cannot be read.",
        "Download it again: run `python -m installer weights --repair` (or `./run.sh --repair`), then try again.",
        ("Try again", "retry")),
    "missing_text_model": ErrorClass(
        "The text model is not downloaded yet, and this computer cannot download it (offline?).",
        "Connect to the internet once and try again, or restart the app with --text-model pointing to a "
        "downloaded copy.", ("Try again", "retry")),
    "missing_text_folder": ErrorClass(
        "The text model folder is missing or incomplete.",
        "Restart the app with --text-model pointing to a folder that holds a text model (pipeline.json and ckpts/)."),
    "bad_text_model_file": ErrorClass(
        "A file of the text model is damaged or cannot be read.",
        "Download it again (delete its folder, connect to the internet and try again), or restart the app with "
        "--text-model pointing to a good copy.", ("Try again", "retry")),
    "oom_gpu": ErrorClass(
        "The GPU ran out of memory (the memory was freed; the app keeps running).",
        "Use the Low VRAM preset (or a smaller texture size), close other programs that use the GPU, and "
        "generate again.", ("Use the Low VRAM preset", "preset:low-vram")),
    "oom_cpu": ErrorClass(
        "The computer ran out of memory (the memory was freed; the app keeps running).",
        "Use the Fast preset (or a smaller texture size), close other programs, and generate again.",
        ("Use the Fast preset", "preset:fast")),
    "disk_full": ErrorClass(
        "The disk of the outputs folder is full.",
        "Free some disk space there (or restart the app with --outputs on another disk), then try again.",
        ("Try again", "retry")),
    "folder_lost": ErrorClass(
        "The outputs folder could not be written to: a job's folder was removed, or this app may not write there.",
        "Let this app write in the outputs folder (or restart the app with --outputs on another folder), then "
        "try again.", ("Try again", "retry")),
    "bad_image": ErrorClass(
        "This image cannot be used.",
        "Use another image: a PNG, JPEG, WebP, BMP, TIFF or GIF of one object."),
    "see_through": ErrorClass(
        "This image is see-through: its transparency leaves no solid object.",
        "Use a PNG whose object is opaque and only its background transparent, or an image without transparency "
        "(its background is then removed for you)."),
    "huge_image": ErrorClass(
        "This image is far too large to open safely.",
        "Downscale it (at most 8000 pixels on its long side) and add it again."),
    "bad_mesh": ErrorClass(
        "This 3D model cannot be used.",
        "Use another 3D model: a GLB, glTF, OBJ, PLY or STL file with triangles."),
    "empty": ErrorClass(
        "Nothing solid was found to make a 3D model of.",
        "Try again with another seed, or use an image where the object fills more of the picture.",
        ("Try another seed", "new-seed")),
    "interrupted": ErrorClass(
        "The app was stopped while this job ran.",
        "Press Generate to run it again."),
    "stopping": ErrorClass(
        "The app is stopping and takes no new jobs.",
        "Start the app again (./run.sh), then reload this page."),
    "internal": ErrorClass(
        "Something unexpected went wrong.",
        "Try again; if it happens again, the details below help a bug report.", ("Try again", "retry")),
}


def error_class(kind: Optional[str], message: str, device: Optional[str] = None, job_kind: Optional[str] = None,
                prompt: Optional[str] = None) -> str:
    """The ERROR_CLASSES key of a job's failure: its error_kind (jobs.failures) refined by its message."""
    text = message or ""
    text_model = job_kind == "text" or (job_kind == "variant" and bool(prompt)) or "text model" in text
    if kind == "oom":
        return "oom_gpu" if str(device or "").startswith("cuda") else "oom_cpu"
    if kind == "disk":                   # a full disk, or a folder removed or unwritable (jobs.failures.folder_lost)
        return "disk_full" if "is full" in text else "folder_lost"
    if kind == "background_removal":
        return "offline_background" if "unavailable" in text or "download" in text else "background_failed"
    if kind == "input":
        if job_kind == "variant" and is_about_mesh(text):
            return "bad_mesh"
        return "huge_image" if "too large" in text else "see_through" if NO_OBJECT_IN_ALPHA in text else "bad_image"
    if kind == "model":
        damaged = "re-download" in text or "damaged" in text or "checksum" in text or "sha256" in text
        missing = any(w in text for w in ("does not exist", "No such file", "no pipeline.json", "Not a directory"))
        if text_model:
            return "bad_text_model_file" if damaged else "missing_text_folder" if missing else "missing_text_model"
        if damaged:
            return "bad_model_file"
        if "pipeline.json" in text and ("must hold" in text or "no pipeline.json" in text or "does not exist" in text):
            return "missing_model"
        return "offline_model"
    if kind == "empty":
        return "empty"
    if kind == "interrupted":
        return "interrupted"
    return "internal"


def is_about_mesh(message: str) -> bool:
    """Whether an input error of a new-look job is about its 3D model (not its photo)."""
    words = ("3-D model", "3D model", "triangle", "mesh", "GLB", "STL", "PLY", "OBJ", "glTF", "vertices", "faces")
    return any(w in message for w in words)


def headline_of(name: str, message: str) -> str:
    """The class's headline; for a bad input, the reason in the message's own first sentence when it is plain."""
    cls = ERROR_CLASSES[name]
    if name in ("bad_image", "bad_mesh"):
        reason = first_sentence(without_asides(message.removeprefix("bad input: ")))
        # the library's "No foreground found: <why>": the why alone, so that the headline has one colon
        reason = re.sub(r"^no foreground found: ", "", reason, flags=re.IGNORECASE)
        if reason and len(reason) <= 200:
            word = reason.split(" ", 1)[0]
            if word[1:2].islower() and "." not in word:        # a sentence's capital, not a file name's
                reason = reason[:1].lower() + reason[1:]
            return f"{cls.headline.rstrip('.')}: {reason}"
    return cls.headline


def without_asides(text: str) -> str:
    """The text without its parentheses (the library's own words, e.g. Pillow's, stay in the details)."""
    while True:
        shorter = re.sub(r"\s*\([^()]*\)", "", text)
        if shorter == text:
            return text
        text = shorter


def first_sentence(text: str) -> str:
    """Up to the first full stop that ends a sentence (not one inside a file name such as chair.png)."""
    match = re.search(r"[.!?](\s|$)", text.strip())
    sentence = text.strip()[:match.end()].strip() if match else text.strip()
    return sentence if not sentence or sentence[-1] in ".!?" else sentence + "."


def error_html(name: str, message: str, title: Optional[str] = None, state: str = "failed") -> str:
    """The status box of an error: the headline, the action (a button where the page can do it) and the raw text
    folded under Details. `title` (e.g. the job's name) goes before the headline; `state`: failed (a job) or
    error (an upload checked before any job)."""
    cls = ERROR_CLASSES[name]
    headline = headline_of(name, message)
    lead = f"{html.escape(title)}: " if title else ""
    button = ""
    if cls.button:
        label, action = cls.button
        button = (f' <button type="button" class="td-action" data-td-action="{html.escape(action)}">'
                  f'{html.escape(label)}</button>')
    details = (f'<details class="td-details"><summary>Details</summary><pre>{html.escape(message)}</pre></details>'
               if message else "")
    return (f'<div class="td-status td-{state}" data-state="{state}" data-error="{name}">'
            f'<p class="td-headline">{lead}{html.escape(headline)}</p>'
            f'<p class="td-fix">{html.escape(cls.action)}{button}</p>{details}</div>')


def form_error_html(message: str) -> str:
    """A form that cannot be sent (nothing to generate from, a setting out of range): its one sentence, no details."""
    text = message[:1].upper() + message[1:]
    return (f'<div class="td-status td-error" data-state="error" data-error="form">'
            f'<p class="td-headline">{html.escape(text)}</p></div>')


def job_error(job) -> tuple:
    """(class name, raw message) of a failed job."""
    return (error_class(job.error_kind, job.error or "failed", getattr(job, "device", None),
                        getattr(job, "kind", None), getattr(job, "prompt", None)), job.error or "failed")


def short_text(name: str, message: str) -> str:
    """The headline and the action as one line (a batch table's row; the REST and gradio_client answers)."""
    return f"{headline_of(name, message)} {ERROR_CLASSES[name].action}"
