"""The History tab's list: a thumbnail per job, newest first: what it was made from, its preset, seed and state
(done, failed, cancelled, interrupted, running), from the outputs folder; and the jobs of this run that failed
before they had a folder (an unreadable image, a background removal that could not run), kept in memory.

A thumbnail is the image the job conditioned on (preprocessed.png), else its input, else a card with its prompt
or model name, under a band in the colour of its state that names the state, preset and seed (an export's: "export"
and its destination; its caption also names the job it was exported from) (the gallery's caption, at its foot, is cut
to the thumbnail's width); thumbnails are small files made once per job and state."""
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..jobs import folder as job_folder
from ..settings import DESTINATION_LIST

THUMB_PX = 200
BAND_PX = 38
LIMIT = 60               # the newest jobs as thumbnails; the search box below finds any job
# Band colours by state: white text on each has a contrast of at least 4.5:1.
STATE_COLOURS = {"done": (23, 107, 48), "failed": (176, 32, 32), "cancelled": (138, 86, 0),
                 "interrupted": (138, 86, 0), "running": (30, 80, 170), "queued": (30, 80, 170),
                 "incomplete": (90, 90, 98), "damaged": (176, 32, 32)}
MEMORY_KEY = "job:"      # an entry of a job without a folder: MEMORY_KEY + its id
DESTINATION_WORDS = {d.name: d.label for d in DESTINATION_LIST if d.name != "none"}


@dataclass
class Entry:
    key: str             # the job folder's name, or MEMORY_KEY + job id
    caption: str
    thumb: str
    when: float          # for the order, newest first


def _stamp(name: str) -> float:
    try:
        return time.mktime(time.strptime(name[:15], "%Y%m%d-%H%M%S"))
    except ValueError:
        return 0.0


def caption(what: str, state: str, preset, seed, when: float, model: str = "") -> str:
    """`chair.png · done · TRELLIS.2 · 512 · balanced · seed 219342469 · 11-25 10:33` (the parts given)."""
    bits = [b for b in (what, state, model) if b]
    if isinstance(preset, str) and preset:
        bits.append(preset)
    if isinstance(seed, int) and not isinstance(seed, bool):
        bits.append(f"seed {seed}")
    if when:
        bits.append(time.strftime("%m-%d %H:%M", time.localtime(when)))
    return " · ".join(bits)


def thumbnail(dest: Path, state: str, image=None, text: str = "", band: str = "", model: str = "") -> str:
    """A THUMB_PX² picture of `image` (a path; a card with `text` when it is missing or unreadable) under a band
    saying `state` and the `model` that made it, then `band` (preset and seed), written to `dest` once."""
    if dest.is_file():
        return str(dest)
    from PIL import Image, ImageDraw, ImageFont, ImageOps

    card = Image.new("RGB", (THUMB_PX, THUMB_PX), (236, 236, 240))
    picture = None
    if image is not None:
        try:
            with Image.open(image) as im:
                im.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))          # a large JPEG decodes at a fraction of its size
                picture = ImageOps.contain(ImageOps.exif_transpose(im).convert("RGBA"), (THUMB_PX, THUMB_PX - BAND_PX))
        except (OSError, ValueError, Image.DecompressionBombError):
            picture = None
    draw = ImageDraw.Draw(card)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:                                                     # Pillow < 10.1: one bitmap size
        font = ImageFont.load_default()
    if picture is not None:
        card.paste(picture, ((THUMB_PX - picture.width) // 2, BAND_PX + (THUMB_PX - BAND_PX - picture.height) // 2),
                   picture)
    else:
        words, lines, line = text.split(), [], ""
        for word in words:
            if line and draw.textlength(f"{line} {word}", font=font) > THUMB_PX - 16:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        for i, line in enumerate(lines[:7]):
            draw.text((8, BAND_PX + 8 + 17 * i), line, fill=(40, 40, 48), font=font)
    draw.rectangle((0, 0, THUMB_PX, BAND_PX), fill=STATE_COLOURS.get(state, (90, 90, 98)))
    draw.text((8, 3), f"{state} · {model}" if model else state, fill=(255, 255, 255), font=font)
    draw.text((8, 20), band, fill=(255, 255, 255), font=font)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    card.save(tmp, format="PNG")
    os.replace(tmp, dest)
    return str(dest)


def export_tag(record: dict) -> str | None:
    """An export's tag, "export · 3D print" (its destination's words) or "export"; None for any other job."""
    if record.get("kind") != "export":
        return None
    settings = record.get("settings") if isinstance(record.get("settings"), dict) else {}
    words = DESTINATION_WORDS.get(settings.get("destination"))
    return f"export · {words}" if words else "export"


def source_words(outputs_dir, record: dict) -> str | None:
    """The job an export was made from, "chair.png of 11-25 10:33" (found in `outputs_dir` by the id its folder's
    name ends with), or "job 1a2b3c4d" when its folder is not there; None for a job that is not an export."""
    source = record.get("source_job")
    if record.get("kind") != "export" or not isinstance(source, str) or not source:
        return None
    try:
        found = sorted(p for p in Path(outputs_dir).glob(f"*-{source[:8]}") if job_folder.JOB_DIR.match(p.name))
    except (OSError, ValueError):
        found = []
    for path in found:
        other = job_folder.JobFolder(path).settings_record() or {}
        if other.get("job_id") == source:
            return job_words(path, other, tag=False)
    return f"job {source[:8]}"


def job_words(path: Path, record: dict, tag: bool = True) -> str:
    """A job folder in the user's words rather than its folder's name: "chair.png of 11-25 10:33", an export's with
    its tag ("chair.png (export · 3D print) of 11-25 10:33") unless `tag` is off."""
    try:
        what = job_folder.describe_record(record)
    except (TypeError, ValueError):         # a readable record with values of the wrong kinds
        what = "?"
    if tag and export_tag(record):
        what += f" ({export_tag(record)})"
    when = _stamp(Path(path).name)
    return f"{what} of {time.strftime('%m-%d %H:%M', time.localtime(when))}" if when else what


def card_model(record: dict) -> str:
    """Which model made a job, for its card: its family and pipeline type ("TRELLIS.2 · 1024_cascade"), a prompt's
    "TRELLIS v1 text"."""
    from ..families import family_of_record

    family = family_of_record(record)
    kind = (record.get("settings") or {}).get("pipeline_type") if isinstance(record.get("settings"), dict) else None
    words = f"{family.words} · {kind}" if family.pipeline_types and kind else family.words
    return f"{words} text" if record.get("kind") == "text" else words


def folder_entry(path: Path, running_dirs, thumbs: Path) -> Entry:
    folder = job_folder.JobFolder(path)
    record = folder.settings_record() or {}
    state = folder.state(running_dirs)
    model = card_model(record)
    try:
        what = job_folder.describe_record(record)
    except (TypeError, ValueError):
        what = "?"
    files = folder.file_kinds()
    image = files.get("preprocessed") or files.get("input")
    text = record.get("prompt") if isinstance(record.get("prompt"), str) else what
    settings = record.get("settings") if isinstance(record.get("settings"), dict) else {}
    started = record.get("started")
    # the start time to the microsecond where the record has it (the folder's name has the second)
    when = float(started) if isinstance(started, (int, float)) and not isinstance(started, bool) else _stamp(path.name)
    preset, seed = settings.get("preset"), record.get("seed")
    tag = export_tag(record)
    if tag is not None:             # an export: its destination and its source instead of the sampling's preset
        origin = source_words(path.parent, record)
        return Entry(path.name, caption(what, state, f"{tag} · exported from {origin}", None, when, model),
                     thumbnail(thumbs / f"{path.name}-{state}-export.png", state, image, text, tag,
                               model), when)
    return Entry(path.name, caption(what, state, preset, seed, when, model),
                 thumbnail(thumbs / f"{path.name}-{state}.png", state, image, text, caption("", "", preset, seed, 0),
                           model), when)


def memory_entry(job, thumbs: Path, message: str) -> Entry:
    """A job of this run that ended before it had a folder (it failed on its input, or was cancelled queued)."""
    image = next((x for x in job.inputs if isinstance(x, (str, os.PathLike)) and os.path.isfile(x)), None)
    names = [os.path.basename(os.fspath(x)) for x in job.inputs if isinstance(x, (str, os.PathLike))]
    what = f'"{job.prompt[:40]}"' if job.prompt else (names[0] if names else "pasted image")
    state = str(job.state)
    seed = getattr(job.settings, "seed", None) if not getattr(job.settings, "randomize_seed", True) else None
    preset = getattr(job.settings, "preset", None)
    return Entry(MEMORY_KEY + job.id, caption(what, state, preset, seed, job.created) + f" · {message}",
                 thumbnail(thumbs / f"{job.id}-{state}.png", state, image, job.prompt or what,
                           caption("", "", preset, seed, 0)), job.created)


def entries(outputs_dir, jobs, thumbs: Path, describe, limit: int = LIMIT) -> list:
    """The newest `limit` jobs: the outputs folder's job folders and `jobs` (the runner's, in memory) that ended
    without one; `describe(job)` says why such a job ended."""
    running = {j.out_dir for j in jobs if j.out_dir and j.state not in ("done", "failed", "cancelled")}
    try:
        paths = [p for p in Path(outputs_dir).iterdir() if p.is_dir() and not p.name.startswith(".")
                 and (job_folder.JOB_DIR.match(p.name) or (p / job_folder.SETTINGS).is_file())]
    except OSError:
        paths = []
    paths.sort(key=lambda p: p.name, reverse=True)
    found = [folder_entry(p, running, thumbs) for p in paths[:limit]]
    found += [memory_entry(j, thumbs, describe(j)) for j in jobs
              if not j.out_dir and j.state in ("failed", "cancelled") and j.kind != "export"]
    found.sort(key=lambda e: e.when, reverse=True)
    return found[:limit]
