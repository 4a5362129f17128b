"""`python -m desktop export JOB_FOLDER... [-o OUT_DIR] [export options]`: other files from jobs already made, without
sampling again — another face count, normal map, size, pivot, format — from each job folder's result.npz (kept by
every job), also after the app restarted. A job stopped or failed after its sampling (killed, a full disk, out of
memory while its files were written) keeps its result.npz and is exported the same way. One new job folder per
source under OUT_DIR (default: outputs, as `generate`'s), as `generate` makes them; the source's settings are kept
except the export options given here. A destination's limits are said after each job (met, or a line per limit
missed). Exit status as `generate`: 0 ok, 1 a job failed, 2 usage error (an option out of range; a folder that is
not an ended job's, one whose sampling did not finish, or whose result.npz is missing or damaged: all checked before
any job is submitted), 3 with --strict: a job's files miss a limit of their destination, 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .cli import add_strict_option, output_folder_problem, run_jobs
from .jobs.folder import JobFolder
from .jobs.job import JobState, NoResultError, UnknownJobError
from .jobs.kept_sampling import export_refusal
from .options import add_model_option, add_runner_options, check_runner_args
from .setting_flags import add_setting_flag, flag_changes, setting_flags
from .settings import EXPORT_FIELDS, GenerationSettings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m desktop export",
        usage="python -m desktop export JOB_FOLDER... [-o OUT_DIR] [export options]",
        description="Write other files from finished jobs, or jobs stopped after their sampling, without sampling again "
                    "(their folders keep result.npz).",
        epilog="example: python -m desktop export outputs/20261125-101500-1a2b3c4d -o exports --formats glb,usdz "
               "--target-faces 5000 --height 1.8 --pivot bottom --normal-map. Exit status: 0 ok, 1 a job failed, "
               "2 usage error, 3 with --strict: a job's files miss a limit of their destination, 130 interrupted.")
    p.add_argument("folders", nargs="+", metavar="JOB_FOLDER", help="a job folder (made by generate, the app or the "
                                                                    "API)")
    p.add_argument("-o", "--output", default="outputs", metavar="OUT_DIR",
                   help="folder that receives one new job folder per export (default: %(default)s, as generate's and "
                        "the app's; created if missing)")
    group = p.add_argument_group("export options (the source job's settings are used for the rest)")
    for flag, rows in setting_flags().items():
        if all(row.name in EXPORT_FIELDS for row in rows):
            add_setting_flag(group, flag, rows)         # unset: the source's value
    group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any other export setting: " + ", ".join(EXPORT_FIELDS))
    add_model_option(p, extra="; only read for the settings file's record, nothing is sampled")
    add_runner_options(p, outputs=False)
    p.set_defaults(text_model=None)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output, only errors and folders")
    add_strict_option(p)
    return p


def export_changes(parser, args) -> dict:
    """The export options given, each checked as generate checks it (exits 2 on a bad one)."""
    try:
        changes = flag_changes(args, EXPORT_FIELDS)
        GenerationSettings().replace(**changes)        # ranges and choices, before any folder is read
        return changes
    except ValueError as err:
        parser.error(str(err))


def source_problem(folder: str, changes: dict):
    """None when the job folder `folder` can be exported with `changes`; otherwise what is wrong, one line: its
    records, its state and its settings with the changes; then its result.npz (``result_problem``)."""
    from .jobs.recovery import job_from_folder

    jf = JobFolder(Path(folder))
    if not jf.file("settings").is_file():
        return f"{folder} is not a job folder (no settings.json)"
    job = job_from_folder(Path(folder))
    if job is None:
        return f"{folder} cannot be listed"
    if job.error_kind == "damaged":
        return f"{folder}: {one_line(job.error)}"
    if not jf.is_final():
        return f"{folder} has not finished (it is still running, or was stopped before it ended); export it once " \
               "it is done"
    if job.kind == "export" and job.state != JobState.DONE:
        return f"{folder} did not finish ({job.state}: {one_line(job.error)}); export its source job's folder instead"
    refusal = export_refusal(job)       # a job stopped after its sampling exports from its result.npz
    if refusal:
        return f"{folder}: {refusal} ({job.state}: {one_line(job.error)})"
    try:
        job.used_settings.replace(**changes)
    except ValueError as err:
        return f"{folder}: {err}"
    # An export's folder keeps no result: the runner exports its source's.
    return None if job.kind == "export" else result_problem(jf)


def result_problem(jf: JobFolder):
    """None when the folder's result.npz is one (every member checked as the export will read it), else why not."""
    from trellis.export import DamagedResultError

    try:
        jf.check_result()
    except DamagedResultError as err:
        return str(err)
    return None


def one_line(text) -> str:
    return " ".join(str(text).split())


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    changes = export_changes(parser, args)
    check_runner_args(parser, args, outputs=None)
    for folder in args.folders:
        problem = source_problem(folder, changes)
        if problem:
            parser.error(problem)
    problem = output_folder_problem(args.output)
    if problem:
        parser.error(f"-o/--output: {problem}")

    def export_job(folder):
        def submit(runner):
            try:
                return runner.submit_export_from(folder, **changes)
            except (UnknownJobError, NoResultError, ValueError) as err:     # changed since it was checked
                parser.error(f"{folder}: {one_line(err)}")
        return submit
    return run_jobs(args, [(os.path.basename(os.path.normpath(f)) or f, export_job(f)) for f in args.folders])
