"""`python -m desktop generate IMAGE... [-o OUT_DIR] [options]`: photos to 3-D assets from the command line;
`python -m desktop generate --prompt "a red chair" [-o OUT_DIR]`: the same from a text prompt (text mode).
OUT_DIR defaults to `outputs`, the app's outputs folder, so the app's History lists these jobs too.
(`python -m desktop retexture MODEL --prompt/--image`, a new look for a 3-D model, is desktop/retexture.py.)

Each image (or prompt) becomes one job (one sub-folder of OUT_DIR) run by the JobRunner; the folder of every
finished job is printed on stdout, progress and messages go to stderr.

Exit status: 0 every job succeeded, 1 at least one failed (its message is printed), 2 usage error,
3 with --strict: every job succeeded but the files of one miss a limit of their --destination (each missed limit is
printed, with or without --strict), 130 interrupted (Ctrl-C cancels the running job cleanly; a second Ctrl-C stops
waiting for it).
"""
from __future__ import annotations

import argparse
import errno
import os
import shutil
import tempfile
import time

from .jobs.request import FieldNames, JobRequest, RequestError, prompt_label
from .options import (TerminalLine, add_model_family_option, add_model_option, add_runner_options,
                      add_text_model_option, check_runner_args, default_model, format_clock)
from .setting_flags import add_settings_options, settings_from_args
from .settings import DEFAULT_PRESET, PRESETS, GenerationSettings, device_change_warning

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LIMITS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

# How long a Ctrl-C waits for the running job to stop at its next step.
CANCEL_WAIT_S = 60.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m desktop generate",
        usage="python -m desktop generate (IMAGE... | --prompt TEXT) [-o OUT_DIR] [options]",
        description="Turn photos (or text prompts) into 3-D assets (GLB, PLY, OBJ, preview MP4), one output folder "
                    "per image or prompt.",
        epilog="Exit status: 0 all jobs succeeded, 1 some failed, 2 usage error, 3 with --strict: a job's files miss "
               "a limit of their --destination, 130 interrupted. "
               f"Presets: {', '.join(PRESETS)} (default {DEFAULT_PRESET}). A new look for a 3-D model: "
               "python -m desktop retexture --help.")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files (PNG, JPEG, WebP, ...)")
    p.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                   help="make the asset from this text instead of images (text mode; repeat for several jobs). "
                        "The text model is downloaded on first use")
    add_common_options(p)
    add_model_family_option(p)
    p.set_defaults(model=DefaultModel(default_model()))
    return p


class DefaultModel(str):
    """--model's default, as the user did not give it: --model-family may pick another family's folder instead."""


def add_common_options(p: argparse.ArgumentParser) -> None:
    """The options of generate and retexture: outputs, models, settings, devices."""
    # The app's default too (--outputs), relative to where the command runs.
    p.add_argument("-o", "--output", default="outputs", metavar="OUT_DIR",
                   help="outputs folder, one sub-folder per job (default: %(default)s, as the app's; created if "
                        "missing)")
    add_model_option(p)
    add_text_model_option(p)
    add_settings_options(p)
    add_runner_options(p, parallel="jobs in parallel", outputs=False)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output, only errors and folders")
    add_strict_option(p)


def add_strict_option(p: argparse.ArgumentParser) -> None:
    """--strict: a destination's limit missed fails the command (exit 3); each missed limit is said either way."""
    p.add_argument("--strict", action="store_true",
                   help="exit with status 3 when a job's files miss a limit of their --destination (each missed "
                        "limit is printed either way, with its numbers)")


def output_folder_problem(path: str):
    """None when the outputs folder `path` exists or can be created, and can be written; otherwise what is
    wrong and what to do. Checked by trying (a probe folder, removed at once), so read-only disks, ACLs
    and root's privileges all count as they will later; nothing is left behind, no folder is created."""
    target = os.path.abspath(os.path.expanduser(path))
    other = "choose another folder with -o"
    fix = f"{other}, or make it writable"
    existing = target
    while True:                                        # the nearest part of the path that exists
        try:
            os.stat(existing)
            break
        except OSError as err:
            if err.errno == errno.ENAMETOOLONG:
                return f"cannot create {path}: the name is too long; {other}"
            parent = os.path.dirname(existing)
            if parent == existing:
                return f"cannot create {path}: {err.strerror or err}; {fix}"
            existing = parent
    if not os.path.isdir(existing):
        if existing == target:
            return f"{path} exists and is not a folder; {other}"
        return f"cannot create {path}: {existing} is a file, not a folder; {other}"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".trellis-write-check-", dir=existing))
    except OSError as err:
        where = path if existing == target else f"{path} (in {existing})"
        return f"cannot write to {where}: {err.strerror or err}; {fix}"
    return None


# ---------------------------------------------------------------------------------------------
# Progress display (no dependency: a plain text bar on stderr)
# ---------------------------------------------------------------------------------------------

class ProgressDisplay(TerminalLine):
    """One redrawn line on a terminal; on a pipe or file, one line per stage change."""

    def __init__(self, stream=None, enabled: bool = True):
        super().__init__(stream, enabled)
        self.last_key = None

    def update(self, index: int, count: int, name: str, job) -> None:
        if not self.enabled:
            return
        p = job.progress
        head = f"[{index}/{count}] {name}"
        if self.tty:
            cols = max(40, shutil.get_terminal_size((100, 20)).columns - 1)
            bar_w = 20
            filled = int(round(p.fraction * bar_w))
            step = f" {p.step}/{p.total}" if p.total > 1 else ""
            sub = f" ({p.detail})" if p.detail else ""
            line = (f"{head}  {p.label}{sub}{step}  [{'#' * filled}{'-' * (bar_w - filled)}] "
                    f"{p.fraction * 100:3.0f}%  ETA {format_clock(p.eta_s)}")
            self._draw(line[:cols])
        else:
            key = (index, p.stage)
            if key != self.last_key:
                self.last_key = key
                self.stream.write(f"{head}: {p.label}...\n")
                self.stream.flush()



# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)                      # exits with 2 on a usage error
    requests = command_requests(parser, args)
    settings = check_common_args(parser, args, inputs=args.images)
    choose_family(parser, args)
    if args.images:
        family_rule(parser, args, settings, images=1)               # each image is one job

    def job(request):
        return lambda runner: runner.submit_request(request.replace(settings=settings))
    work = [(job_name(r), job(r)) for r in requests]
    problem = model_problem(args)
    if problem:
        parser.exit(EXIT_FAILED, f"error: {problem}\n")
    return run_jobs(args, work, settings)


# The command's words for a request's inputs, in its messages.
COMMAND_NAMES = FieldNames(images="one or more images", prompt="--prompt TEXT", mesh=None, family="--model-family")


def command_requests(parser, args) -> list:
    """The command's jobs: one per image, one per --prompt (images and prompts: one kind, not both); a usage error
    (exit 2) says what is missing or wrong."""
    whole = JobRequest(images=args.images, prompt=args.prompt[0] if args.prompt else None)
    try:
        whole.checked(COMMAND_NAMES)
        return [JobRequest(images=[x]).checked(COMMAND_NAMES) for x in args.images] + \
            [JobRequest(prompt=p).checked(COMMAND_NAMES) for p in args.prompt]
    except RequestError as err:
        parser.error(f"--prompt: {err}" if err.field == "prompt" else str(err))


def job_name(request) -> str:
    """What the progress lines call a job: its image's file name, or the start of its prompt in quotes."""
    if request.images:
        return os.path.basename(request.images[0]) or request.images[0]
    return prompt_label(request.prompt)


def choose_family(parser, args) -> None:
    """--model-family: --model becomes the installed folder of that family (where --model is not given); given and of
    the other family, a usage error (exits 2); not installed here, how to install it (exits 1)."""
    wanted, given = args.model_family, not isinstance(args.model, DefaultModel)
    args.model = str(args.model)
    if wanted is None:
        return
    from .families import family_folder, family_of_model, get_family

    wanted = get_family(wanted)
    if given:
        family = family_of_model(args.model)
        if family is not wanted:
            parser.exit(EXIT_USAGE, f"error: --model {args.model} is a {family.words} model but "
                                    f"--model-family is {wanted.name}: give one of them, or both of one family\n")
        return
    folder = family_folder(wanted, args.model)
    if folder is None:
        parser.exit(EXIT_FAILED, f"error: {wanted.unavailable()}\n")
    args.model = folder


def family_rule(parser, args, settings: GenerationSettings, images: int) -> None:
    """The runner's one rule for the family of --model, before anything loads: what the family cannot make is a
    usage error (exits 2); a setting it does not use is said as the job's warning at its end (as on every surface)."""
    from .families import FamilyRefusal, check, family_of_model

    try:
        check(family_of_model(args.model), settings, images)
    except FamilyRefusal as err:
        parser.error(str(err))


def model_problem(args):
    """None when --model can run these jobs; else why not, one message: a model folder whose family cannot load here
    (TRELLIS.2: no DINOv3, files missing)."""
    from .families import family_of_model

    if args.images and os.path.isdir(args.model):
        return family_of_model(args.model).load_problem(args.model)
    return None


def check_common_args(parser, args, inputs=()) -> GenerationSettings:
    """The settings, and every usage error found before the model loads (exits 2)."""
    try:
        settings = settings_from_args(args)
    except ValueError as err:
        parser.error(str(err))                          # exits with 2
    check_runner_args(parser, args, outputs=None)   # -o is checked below
    for path in inputs:                                 # a pipe or a device would be read forever
        if os.path.exists(path) and not os.path.isdir(path) and not os.path.isfile(path):
            parser.error(f"{path} is not a file but a pipe, socket or device; give a file")
    problem = output_folder_problem(args.output)
    if problem:
        parser.error(f"-o/--output: {problem}")
    return settings


def run_jobs(args, work: list, settings: GenerationSettings | None = None) -> int:
    """Submit [(name, submit(runner) -> Job)] and report each job as it ends; the exit status. With the jobs'
    `settings`, what the device will lower is said first (each job's warning says it again at its end)."""
    display = ProgressDisplay(enabled=not args.quiet)

    from .jobs import JobRunner, JobState               # heavy (torch): only once the options are good

    try:
        runner = JobRunner(args.model, args.output, device=args.device, gpus=args.gpus, text_model=args.text_model)
    except (OSError, ValueError, RuntimeError) as err:
        display.say(f"error: {err}")
        return EXIT_FAILED
    # each failure is reported below as it ends, and the inputs are the user's own files: no folder kept for one
    runner.records.keep_failed = False
    if settings is not None and runner.devices:
        from .families import family_of_model

        # only what the jobs' family uses (TRELLIS.2 renders no bake views): images run --model's family
        family = family_of_model(args.model) if getattr(args, "images", None) else None
        lowered = device_change_warning(settings, settings.for_device(runner.devices[0]), family)
        if lowered and display.enabled:
            display.say(f"note: {lowered}")
    names = [name for name, _ in work]
    jobs = []
    failed = missed = 0
    try:
        try:
            jobs = [submit(runner) for _, submit in work]
        except ValueError as err:                       # a refusal of the runner's rule: the options' fault
            display.say(f"error: {err}")
            return EXIT_USAGE
        except RuntimeError as err:                     # not written down (a full disk): the jobs queued are cancelled
            display.say(f"error: {err}")
            return EXIT_FAILED
        pending = list(range(len(jobs)))
        model_failed = False
        while pending:
            for k in list(pending):
                job = jobs[k]
                if job.state in JobState.FINISHED:
                    pending.remove(k)
                    code = _report(display, k, len(jobs), names[k], job, model_failed)
                    failed += code == EXIT_FAILED
                    missed += code == EXIT_LIMITS
                    if job.error_kind == "model" and not model_failed:
                        model_failed = True            # every other job would fail the same way
                        for other in jobs:
                            runner.cancel(other.id)
            running = [k for k in pending if jobs[k].state == JobState.RUNNING]
            if running:
                k = running[0]
                display.update(k + 1, len(jobs), names[k], jobs[k])
                jobs[k].wait(0.1)
            elif pending:
                jobs[pending[0]].wait(0.1)
    except KeyboardInterrupt:
        _interrupt(display, runner, jobs)
        return EXIT_INTERRUPTED
    finally:
        display.clear()
        runner.shutdown(cancel=True, wait=False)
    if failed and not args.quiet and len(jobs) > 1:
        display.say(f"{failed} of {len(jobs)} job(s) failed.")
    if failed:
        return EXIT_FAILED
    return EXIT_LIMITS if missed and getattr(args, "strict", False) else EXIT_OK


def limits_verdict(job) -> tuple | None:
    """(met, lines) of the destination's limits in the job's export.json: one line when met, else a head line and
    one per limit missed, each with its numbers; None when it checked none."""
    from .jobs.limits import job_limits, missed_limits

    limits = job_limits(job)
    if limits is None:
        return None
    where = limits["destination"] or "destination"
    if limits["met"]:
        return True, [f"{where} limits met"]
    missed = missed_limits(limits)
    total = len(limits["checks"]) or len(missed)
    return False, [f"{where} limits NOT met: {len(missed)} of {total} missed"] + [f"limit missed: {m}" for m in missed]


def _report(display: ProgressDisplay, k: int, count: int, name: str, job, model_failed: bool = False) -> int:
    from .jobs import JobState
    from .jobs.kept_sampling import kept_words

    head = f"[{k + 1}/{count}] {name}"
    if job.state == JobState.DONE:
        if display.enabled:
            secs = job.timings.get("total")
            took = f", {secs:.1f} s" if isinstance(secs, (int, float)) else ""
            display.say(f"{head}: done (seed {job.seed}{took}) -> {job.out_dir}")
        for warning in job.warnings:                   # shown even with --quiet: the result is not all it could be
            display.say(f"{head}: warning: {warning}")
        verdict = limits_verdict(job)
        if verdict is not None and (display.enabled or not verdict[0]):    # a missed limit even with --quiet
            for line in verdict[1]:
                display.say(f"{head}: {line}")
        display.clear()
        print(job.out_dir, flush=True)
        return EXIT_LIMITS if verdict is not None and not verdict[0] else EXIT_OK
    kept = kept_words(job, f"`python -m desktop export {job.out_dir}`")      # its sampling is on disk
    if job.state == JobState.CANCELLED:
        display.say(f"{head}: skipped (the model could not be loaded)" if model_failed else
                    f"{head}: cancelled" + (f". {kept}" if kept else ""))
    else:
        display.say(f"{head}: FAILED: {job.error}" + (f" {kept}" if kept else ""))
        if job.error_kind == "internal" and job.detail and not job.out_dir:
            from .crash_report import write_text_report      # no folder holds it: a report file, never a traceback

            display.say(f"{head}: the full report is in {write_text_report('job', job.detail)}")
    return EXIT_FAILED


def _interrupt(display: ProgressDisplay, runner, jobs) -> None:
    """Ctrl-C: cancel everything and wait (bounded) for the running job to stop at its next step."""
    from .jobs import JobState

    display.say("Interrupted: cancelling (press Ctrl-C again to stop waiting)...")
    for job in jobs:
        runner.cancel(job.id)
    deadline = time.monotonic() + CANCEL_WAIT_S
    try:
        for job in jobs:
            while job.state not in JobState.FINISHED and time.monotonic() < deadline:
                job.wait(0.2)
    except KeyboardInterrupt:
        pass
    display.say("cancelled")
