"""What the page shows about jobs: the status box (HTML; the data-state attribute says where the job stands),
friendly error messages, and the device line of the header."""
import html
import os

from ..jobs.kept_sampling import kept_words, with_kept_words
from ..options import format_clock
from .errors import error_html, is_about_mesh, job_error, short_text
from .warning_words import page_warnings

POLL_S = 0.3       # how often a running job's progress is re-read
# How the page exports a job stopped after its sampling (kept_sampling.SAMPLING_KEPT's `how`).
PAGE_EXPORT = "picking it in the History and pressing Export again"


def status_box(state: str, body: str) -> str:
    return f'<div class="td-status td-{state}" data-state="{state}">{body}</div>'


def message_html(state: str, text: str) -> str:
    return status_box(state, html.escape(text))


def idle_html() -> str:
    return message_html("idle", "Add an image (or a prompt, or a 3D model for a new look), pick a preset and press "
                                "Generate.")


def friendly_error(job) -> str:
    """The message shown for a failed job, with the fix in this app's words."""
    kind, message = job.error_kind, job.error or "failed"
    if kind == "cancelled":
        return "Cancelled."
    if kind == "oom":
        budget = getattr(job.settings, "vram_budget", None)
        if str(job.device or "").startswith("cuda") and budget is not None:
            return (f"Out of GPU memory within the VRAM budget of {budget:g} GiB. Raise the budget (Memory and "
                    f"input), lower the texture size or bake views, or empty the budget to use what the GPU has "
                    f"free. The memory was freed: the app keeps running.")
        if str(job.device or "").startswith("cuda"):
            return ("Out of GPU memory. Try the Low VRAM preset (or a smaller texture size or fewer steps) and "
                    "generate again; closing other programs that use the GPU helps too. The memory was freed: "
                    "the app keeps running.")
        return ("Out of memory. Try the Fast preset or a smaller texture size, and close other programs. "
                "The memory was freed: the app keeps running.")
    text_job = getattr(job, "kind", None) == "text" or (getattr(job, "kind", None) == "variant" and job.prompt)
    if kind == "input":
        what = "This 3D model" if getattr(job, "kind", None) == "variant" and is_about_mesh(message) else "This image"
        return f"{what} cannot be used: {message.removeprefix('bad input: ')}"
    if kind == "model":
        option = "--text-model" if text_job else "--model"
        return (f"{message[:1].upper()}{message[1:]} (To use another model folder, restart the app with "
                f"{option} DIR.)")
    if kind == "background_removal":
        return (f"{message} Or untick 'Remove background' and use a PNG whose transparency marks the object.")
    return message[:1].upper() + message[1:]


def hide_paths(text: str, inputs) -> str:
    """Upload paths (Gradio's temp folder) shown by their file name only."""
    for x in inputs:
        if isinstance(x, (str, os.PathLike)) and os.fspath(x):
            text = text.replace(os.fspath(x), os.path.basename(os.fspath(x)))
    return text


def job_line(job, runner, warnings: bool = True) -> tuple:
    """(state, text) of one job for the status box (a finished job's warnings appended unless `warnings` is off)."""
    from ..jobs import JobState

    p = job.progress
    if job.state == JobState.QUEUED:
        pos = runner.queue_position(job.id)
        ahead = "" if pos is None else f" ({pos} job(s) ahead)" if pos else " (next)"
        return "queued", f"Waiting in the queue{ahead}"
    if job.state == JobState.RUNNING:
        label = p.label           # users' words, a family's own stages in its registry's (Progress.label)
        parts = [label + ((" · " if label.endswith(")") else " (") + p.detail + ("" if label.endswith(")") else ")")
                          if p.detail else "")]
        if p.total > 1:
            parts.append(f"step {p.step}/{p.total}")
        parts.append(f"{p.fraction * 100:.0f}%")
        parts.append(f"ETA {format_clock(p.eta_s)}" if p.eta_s is not None else "ETA --:--")
        parts.append(f"elapsed {format_clock(p.elapsed_s)}")
        return "running", " · ".join(parts)
    if job.state == JobState.DONE:
        took = job.timings.get("total")
        took = f" in {took:.1f} s" if isinstance(took, (int, float)) else ""
        warned = "".join(f" · Warning: {w}" for w in page_warnings(getattr(job, "warnings", ()))) if warnings else ""
        return "done", f"Done{took} (seed {job.seed}){warned}"
    if job.state == JobState.CANCELLED:
        kept = kept_files(job)
        # A job the app's stop ended is not one the user cancelled: say the app stopped.
        head = "Stopped with the app" if job.error_kind == "interrupted" else "Cancelled"
        text = f"{head}; shown: what it had written ({', '.join(kept)})" if kept else head
        words = kept_words(job, PAGE_EXPORT)       # its sampling is on disk: Export again makes its files
        return "cancelled", f"{text}. {words}" if words else text
    name, message = job_error(job)
    return "failed", with_kept_words(short_text(name, hide_paths(message, job.inputs)), job, PAGE_EXPORT)


# A cancelled job's finished files the page can show, by kind, in the words of the status line.
KEPT_KINDS = {"glb": "GLB", "ply": "PLY", "obj": "OBJ", "stl": "STL", "mp4": "preview video"}


def kept_files(job) -> list:
    """What a cancelled job had finished writing (its other files were never started or are removed)."""
    files = getattr(job, "files", None) or {}
    return [label for kind, label in KEPT_KINDS.items() if kind in files and os.path.isfile(files[kind])]


# What to do about a missed destination limit (the export.json check's name, before any "."), in the page's words.
LIMIT_FIXES = {
    "lods_within": "raise {target_faces} or ask for fewer {lods} (Output settings), then press Export again",
    "max_triangles": "lower {target_faces} (Output settings), then press Export again",
    "faces_within": "set {target_faces} within the destination's limit (Output settings), then press Export again",
    "max_bytes": "lower the {texture_size} or {target_faces}, or tick {draco} (Output settings), then press Export "
                 "again",
    "normal_map": "tick {normal_map} (Output settings), then press Export again",
    **{name: "tick {print_ready} (Output settings) and press Export again, or generate with another seed"
       for name in ("watertight", "outward", "shells", "flat_base", "max_surface_removed")},
}
# The job warnings that a missed limit's line says already (each said once, in the limits' badge).
SAID_BY_LIMIT = {"lods_within": "Levels of detail not made"}


def limit_fix(name: str) -> str:
    from .values import LABELS

    words = {k: f"<b>{html.escape(v.split(' (')[0])}</b>" for k, v in LABELS.items()}
    return LIMIT_FIXES.get(name.split(".")[0], "").format(**words)


def missed_checks(limits) -> list:
    return [c for c in (limits or {}).get("checks") or [] if not c.get("met")]


def unsaid_warnings(warnings, limits) -> list:
    """`warnings` in the page's words, less those a missed limit of `limits` says already."""
    said = {SAID_BY_LIMIT[c["limit"].split(".")[0]] for c in missed_checks(limits)
            if c.get("limit", "").split(".")[0] in SAID_BY_LIMIT}
    return [w for w in page_warnings(warnings) if not any(w.startswith(s) for s in said)]


def warnings_html(job, state: str) -> str:
    """A done job's warnings (a setting lowered for the device, a texture baked from little), one per line; those its
    limits' badge says already left out."""
    from ..jobs.limits import job_limits

    items = [f"<li>Warning: {html.escape(w)}</li>"
             for w in unsaid_warnings(getattr(job, "warnings", ()), job_limits(job))] if state == "done" else []
    return f'<ul class="td-warnings">{"".join(items)}</ul>' if items else ""


def limits_html(job, state: str) -> str:
    """A done job's destination limits as a badge (``badge_html``); "" without a destination."""
    from ..jobs.limits import job_limits

    return badge_html(job_limits(job) if state == "done" else None)


def badge_html(limits) -> str:
    """Destination limits (``desktop.jobs.limits``: export.json's verdict) as a badge: green with the count met, or
    red with each limit missed and its numbers, then what to do about them; "" for None."""
    from ..jobs.limits import missed_limits

    if limits is None:
        return ""
    where = html.escape(str(limits["destination"] or "destination"))
    total = len(limits["checks"])
    if limits["met"]:
        counted = f"all {total} " if total else ""
        return f'<p class="td-limits td-limits-met" data-limits="met">✔ {where}: {counted}limits met</p>'
    missed = missed_limits(limits)
    items = "".join(f"<li>{html.escape(m)}</li>" for m in missed)
    fixes = list(dict.fromkeys(f for f in (limit_fix(c.get("limit", "")) for c in missed_checks(limits)) if f))
    todo = f'<p class="td-fix">What to do: {"; or ".join(fixes)}.</p>' if fixes else ""
    return (f'<div class="td-limits td-limits-missed" data-limits="missed"><strong>✖ {where}: {len(missed)} of '
            f'{total or len(missed)} limits missed</strong><ul>{items}</ul>{todo}</div>')


def job_status_html(job, runner) -> str:
    """One job's status box: its line and a progress bar, or its error as a headline, an action and details; a
    done job's destination limits as a badge."""
    from ..jobs import JobState

    if job.state == JobState.FAILED:
        kind, message = job_error(job)
        return error_html(kind, hide_paths(message, job.inputs))
    state, text = job_line(job, runner, warnings=False)
    bar = ""
    if state in ("running", "queued"):
        bar = f'<progress max="100" value="{job.progress.fraction * 100:.1f}"></progress>'
    return status_box(state, f'<div class="td-line">{html.escape(text)}</div>{bar}{limits_html(job, state)}'
                             f'{warnings_html(job, state)}')


# ---------------------------------------------------------------------------------------------
# Job folders (the outputs folder is the history)
# ---------------------------------------------------------------------------------------------

def device_line(fast_paths: dict) -> str:
    """The devices and their fast-path lines for the page header: "`cuda:0` (fast paths on (Triton kernels))";
    devices that share a line are listed together; a CPU by its name alone (it has one path, and no kernels to
    speak of)."""
    groups: dict = {}
    for dev, line in fast_paths.items():
        groups.setdefault(line, []).append(dev)
    parts = []
    for line, devs in groups.items():
        names = f"`{', '.join(devs)}`"
        parts.append(names if all(d.startswith("cpu") for d in devs) else f"{names} ({md_escape(line)})")
    return "; ".join(parts)


def model_name(model) -> str:
    """A model for the header: a hub id as it is ("microsoft/TRELLIS-image-large"), a folder by its name."""
    text = str(model)
    if os.path.isdir(text) or os.path.isabs(text) or text.startswith((".", "~")):
        return os.path.basename(os.path.normpath(text)) or text
    return text


def home_path(path) -> str:
    """`path` as the page shows it: under the user's home folder as ~/..., elsewhere as it is."""
    text, home = os.fspath(path), os.path.expanduser("~")
    try:
        inside = os.path.relpath(text, home)
    except ValueError:                   # another drive (Windows)
        return text
    if not os.path.isabs(text) or inside == os.pardir or inside.startswith(os.pardir + os.sep):
        return text
    return "~" if inside == os.curdir else os.path.join("~", inside)


def path_html(path) -> str:
    """`path` in code type, shortened (home_path), with the whole path as its tooltip."""
    return f'<code title="{html.escape(os.fspath(path))}">{html.escape(home_path(path))}</code>'


def memory_line(jobs) -> str:
    """The VRAM budget and device memory of the last finished job that measured them (timings "memory", from
    desktop.jobs.budget), for the header: "VRAM budget 2.5 GiB · last job's peak 1.88 GiB reserved (1.77
    allocated)"; "" before such a job."""
    done = [j for j in jobs if j.finished and isinstance(j.timings.get("memory"), dict)]
    if not done:
        return ""
    memory = max(done, key=lambda j: j.finished).timings["memory"]
    budget = memory.get("vram_budget_gib")
    reserved, allocated = memory.get("peak_reserved_bytes"), memory.get("peak_allocated_bytes")
    if budget is None and reserved is None:        # a CPU's job, no budget asked: nothing to say
        return ""
    text = f"VRAM budget {budget:g} GiB" if budget is not None else "no VRAM budget"
    if reserved is not None:
        text += f" · last job's peak {reserved / 2 ** 30:.2f} GiB reserved ({allocated / 2 ** 30:.2f} allocated)"
    return text



def md_escape(text: str) -> str:
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|<>" else c for c in str(text))
