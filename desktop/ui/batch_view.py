"""The Batch tab's parts: files checked as they are dropped (a file that cannot be used is refused at once, with
the reason), the status table of a run of several jobs (an overall line with the time left for the whole batch; a
row opens that job's result), and one zip of all the results once the batch has ended."""
import html
import os
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..jobs import folder as job_folder
from ..options import format_clock
from .lazy import gr
from .names import download_stem
from .errors import ERROR_CLASSES, error_class, error_html, form_error_html, job_error, short_text
from .status import hide_paths, job_line, job_status_html, message_html, status_box

# The status box's script (gr.HTML js_on_load): a click on a row, or Enter on its button, asks for that job.
ROW_JS = """element.addEventListener('click', (e) => {
  const row = e.target.closest('tr[data-job]');
  if (row) trigger('select', {index: Number(row.dataset.index), value: row.dataset.job});
});"""
JOB_ROW = re.compile(r'data-job="([0-9a-f]{6,64})"')
# A job folder's files that a batch's zip holds (the results, how they were made); not result.npz (internal, large).
ZIP_KINDS = ("glb", "ply", "obj", "mtl", "texture", "stl", "3mf", "usdz", "mp4", "report", "settings",
             *(f"glb_lod{level}" for level in range(1, 4)))
STATE_WORDS = (("done", "done"), ("failed", "failed"), ("cancelled", "cancelled"), ("running", "running"),
               ("queued", "waiting"))


def measured_length(job) -> float | None:
    """Seconds a done job took to make its result, its model load left out (the batch's next items load nothing)."""
    total = (getattr(job, "timings", None) or {}).get("total")
    if not isinstance(total, (int, float)):
        return None
    load = job.timings.get("load_model")
    return max(float(total) - (load if isinstance(load, (int, float)) else 0.0), 0.0)


def batch_eta(jobs) -> float | None:
    """Seconds until every job of `jobs` has ended, spread over the jobs that run side by side; None ("estimating")
    until this machine has measured one: a running job's ETA from the stage times learned here (``Progress.measured``)
    or a done job's length. The waiting jobs take the measured length, newest first: a running job's whole length
    from the learned times, else the done jobs' mean; a running job whose own ETA is a rough share's is given the
    measured length less its elapsed time."""
    from ..jobs import JobState

    running = [j for j in jobs if j.state == JobState.RUNNING]
    waiting = sum(j.state == JobState.QUEUED for j in jobs)
    learned = [j.progress.elapsed_s + j.progress.eta_s for j in running
               if j.progress.measured and j.progress.eta_s is not None]
    took = [t for t in (measured_length(j) for j in jobs if j.state == JobState.DONE) if t is not None]
    pace = max(learned) if learned else sum(took) / len(took) if took else None
    left = []
    for j in running:
        if j.progress.measured and j.progress.eta_s is not None:
            left.append(j.progress.eta_s)
        elif pace is not None:
            left.append(max(pace - j.progress.elapsed_s, 0.0))
        else:
            return None
    if waiting and pace is None:
        return None
    return max(left, default=0.0) + waiting * (pace or 0.0) / max(1, len(running))


def batch_row(index: int, name: str, job, state: str, cells: str) -> str:
    """One row of the status table: its job's name (a button once the job has ended: a click shows its result,
    ROW_JS) and `cells`, the HTML of what it says."""
    label = html.escape(name)
    if state in ("done", "cancelled", "failed"):
        label = f'<button type="button" class="td-row-open" title="Show this result">{label}</button>'
    return (f'<tr data-state="{state}" data-index="{index}" data-job="{html.escape(job.id)}">'
            f'<td>{label}</td><td>{cells}</td></tr>')


def batch_head(jobs: list, states: list) -> str:
    """The overall line: how many ended and how, and while it runs the time left for the whole batch."""
    from ..jobs import JobState

    finished = sum(j.state in JobState.FINISHED for j in jobs)
    counts = ", ".join(f"{states.count(s)} {word}" for s, word in STATE_WORDS if states.count(s))
    head = f"{finished} of {len(jobs)} finished: {counts}"
    if finished < len(jobs):
        eta = batch_eta(jobs)
        return head + (f" · the whole batch: ETA {format_clock(eta)}" if eta is not None else
                       " · the whole batch: estimating the time left…")
    return head + " · click a name to see its result"


def check_dropped(paths) -> tuple:
    """(the usable files, the status box's message) for the files just dropped on the Batch tab: each is opened and
    checked as a job would check it, so that a file that cannot be used is refused now, not when its turn comes."""
    from ..jobs import InputError
    from ..jobs.inputs import check_image

    paths = [p for p in (paths or []) if isinstance(p, str)]
    kept, refused = [], []
    for p in paths:
        try:
            check_image(p)
            kept.append(p)
        except InputError as err:
            name, why = os.path.basename(p), hide_paths(str(err), [p]).rstrip(".")
            refused.append(why if name in why else f"{name}: {why}")
    if not refused:
        return kept, message_html("ready", f"{len(kept)} image(s) ready, each its own job. Press Generate.")
    lines = f"Refused {len(refused)} file(s) that cannot be used: " + "; ".join(refused) + ". "
    lines += f"{len(kept)} image(s) ready." if kept else "Add images this app can read (PNG, JPEG, WebP, ...)."
    return kept, message_html("error" if not kept else "ready", lines)


def batch_zip(runner, status_value, dest_dir: Path) -> Path | None:
    """One zip of the results of the batch whose table `status_value` shows: a folder per job that is done, named
    after its input and seed (names.py), holding its files (ZIP_KINDS); None when the table holds no done job."""
    ids = JOB_ROW.findall(status_value or "")
    folders = []
    for job_id in ids:
        job = runner.get(job_id)
        if job is not None and job.state == "done" and job.out_dir and os.path.isdir(job.out_dir):
            folders.append(job_folder.JobFolder(job.out_dir))
    if len(ids) < 2 or not folders:
        return None
    dest = Path(dest_dir) / f"batch_{time.strftime('%Y%m%d-%H%M%S')}_{len(folders)}-results.zip"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    used = set()
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for folder in folders:
            stem = download_stem(folder.settings_record() or {})
            name, n = stem, 2
            while name in used:                       # two items of one name and seed: both kept
                name, n = f"{stem}_{n}", n + 1
            used.add(name)
            files = folder.file_kinds()
            for kind in ZIP_KINDS:
                if kind in files:
                    z.write(files[kind], f"{name}/{os.path.basename(files[kind])}")
    os.replace(tmp, dest)
    return dest


class BatchView:
    """TrellisApp's Batch tab handlers (a mixin: uses self.runner, self._tmp, self._results, self._job_folder)."""

    def check_batch(self, paths):
        kept, message = check_dropped(paths)
        if len(kept) == len([p for p in (paths or []) if isinstance(p, str)]):
            return gr.skip(), message
        return (kept or None), message

    def batch_download(self, mode, status_value):
        zipped = batch_zip(self.runner, status_value, self._tmp / "batches") if mode == "batch" else None
        if zipped is None:
            return gr.skip()
        return gr.update(value=str(zipped), visible=True, interactive=True)

    def open_row(self, evt, session=None) -> tuple:
        """(the search box's value, info, video, model, file choice, download button, files) of the job of a
        clicked row."""
        job = self.runner.get(str(getattr(evt, "value", "") or ""))
        folder = job_folder.JobFolder(job.out_dir) if job is not None and job.out_dir else None
        if folder is None or not folder.path.is_dir():
            gr.Warning("That job wrote no files to show.")
            return (gr.skip(),) * 7
        name = (job.inputs and os.path.basename(str(job.inputs[0]))) or None
        remember = getattr(self, "remember_result", None)
        if remember is not None:                   # the result column then follows the tab
            remember(session, "batch", folder.path, name)
        return (folder.name, *self._results(folder, name))


def wire_batch(app, batch, status, zip_button, mode, shown, history, ends) -> None:
    """Drop check, row clicks (`shown`: info, video, model, buttons, files) and the zip after each run (`ends`)."""
    quick = dict(api_visibility="private", show_progress="hidden", concurrency_limit=None)
    batch.upload(app.check_batch, batch, [batch, status], **quick)

    def on_row(evt: gr.SelectData, request: gr.Request):
        return app.open_row(evt, getattr(request, "session_hash", None))
    status.select(on_row, None, [history, *shown], api_visibility="private", show_progress="minimal",
                  concurrency_limit=4)
    # A new batch: the previous one's zip goes away until this one ends.
    batch.change(lambda: gr.update(visible=False, value=None), None, zip_button, **quick)
    for event in ends:
        event.then(app.batch_download, [mode, status], zip_button, **quick)


@dataclass(frozen=True)
class NotQueued:
    """An item of a Generate click that was not queued: `error` is its ERROR_CLASSES key (None: its input was
    refused, `message` then says why in the user's words); `after` names the item whose refusal ended the submitting
    (this one was not tried, as it would have been refused the same way)."""
    name: str
    message: str
    error: str | None = None
    after: str | None = None


def submit_items(work: list, queued) -> tuple:
    """([(name, job)], [NotQueued]) of a Generate click's `work` ([(name, submit() -> Job)]), `queued(job)` called as
    each is queued. A refused input skips its item only; a RuntimeError (a full disk, a stopping runner) ends the
    submitting, the later items listed as not tried: each would be refused the same way."""
    entries, not_queued = [], []
    for i, (name, submit) in enumerate(work):
        try:
            job = submit()
        except ValueError as err:
            not_queued.append(NotQueued(name, str(err)))
            continue
        except RuntimeError as err:
            cls = error_class("disk", str(err)) if getattr(err, "error_kind", None) == "disk" else "stopping"
            not_queued.append(NotQueued(name, str(err), cls))
            not_queued.extend(NotQueued(later, str(err), cls, after=name) for later, _ in work[i + 1:])
            break
        entries.append((name, job))
        queued(job)
    return entries, not_queued


def refusal_html(not_queued: list) -> str:
    """The status box of a Generate click none of whose items was queued (`not_queued`: [NotQueued], in order)."""
    stopped = [item for item in not_queued if item.error is not None]
    if stopped:                      # the runner refused (full disk, stopping): what to do first, in the page's words
        return error_html(stopped[0].error, stopped[0].message)
    if len(not_queued) == 1:
        return form_error_html(not_queued[0].message)
    return form_error_html("; ".join(f"{item.name}: {item.message}" for item in not_queued))


def not_queued_row(item: NotQueued) -> str:
    """A status table's row of an item that was not queued: no job, so nothing to click."""
    if item.after is not None:
        headline = ERROR_CLASSES[item.error].headline if item.error else item.message
        text = f"Not queued (not tried after {item.after}): {headline[:1].lower()}{headline[1:]}"
    elif item.error is None:
        text = f"Not queued: {item.message}"
    else:
        words = short_text(item.error, item.message)
        text = f"Not queued: {words[:1].lower()}{words[1:]}"
    # the refusal's own words (the outputs folder's path) folded, as a failed job's
    fold = (f'<details class="td-details"><summary>Details</summary><pre>{html.escape(item.message)}</pre></details>'
            if item.error and item.after is None else "")
    return (f'<tr data-state="not-queued" data-item="{html.escape(item.name)}"><td>{html.escape(item.name)}</td>'
            f'<td>{html.escape(text)}{fold}</td></tr>')


def status_html(entries: list, runner, not_queued: tuple = ()) -> str:
    """entries: [(name, job)]; not_queued: [NotQueued] of the same click. One job: its own status box; several, or
    items left out: a table and an overall line."""
    from ..jobs import JobState

    if len(entries) == 1 and not not_queued:
        return job_status_html(entries[0][1], runner)
    rows, states = [], []
    for i, (name, job) in enumerate(entries):
        state, text = job_line(job, runner)
        states.append(state)
        fold = ""
        if state == "failed":          # the raw text folded, as in a single job's box
            fold = (f'<details class="td-details"><summary>Details</summary>'
                    f'<pre>{html.escape(hide_paths(job_error(job)[1], job.inputs))}</pre></details>')
        rows.append(batch_row(i, name, job, state, f"{html.escape(text)}{fold}"))
    finished = sum(j.state in JobState.FINISHED for _, j in entries)
    ok = sum(j.state == JobState.DONE for _, j in entries)
    rows.extend(not_queued_row(item) for item in not_queued)
    overall = "running" if finished < len(entries) else ("done" if ok == len(entries) and not not_queued else
                                                        "failed" if ok == 0 else "partial")
    fraction = sum(1.0 if j.state in JobState.FINISHED else j.progress.fraction for _, j in entries) / len(entries)
    head = batch_head([j for _, j in entries], states)
    left_out = ""
    if not_queued:
        names = ", ".join(item.name for item in not_queued)
        left_out = (f'<div class="td-line" data-not-queued="{len(not_queued)}">'
                    f'{html.escape(f"Not queued: {names} (the rows below say why)")}</div>')
    bar = f'<progress max="100" value="{fraction * 100:.1f}"></progress>' if overall == "running" else ""
    return status_box(overall, f'<div class="td-line">{html.escape(head)}</div>{left_out}{bar}'
                               f'<table class="td-jobs">{"".join(rows)}</table>')
