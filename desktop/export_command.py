"""`python -m desktop export JOB_FOLDER... -o OUT_DIR [export options]`: other files from jobs already made, without
sampling again — another face count, normal map, size, pivot, format — from each job folder's result.npz (kept by
every job), also after the app restarted. One new job folder per source under OUT_DIR, as `generate` makes them;
the source's settings are kept except the export options given here. Exit status as `generate`: 0 ok, 1 a job
failed, 2 usage error (a folder that is not a job folder), 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .cli import add_setting_flag, flag_changes, output_folder_problem, run_jobs, setting_flags
from .jobs.folder import JobFolder
from .options import add_model_option, add_runner_options
from .settings import EXPORT_FIELDS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m desktop export",
        description="Write other files from finished jobs without sampling again (their folders keep result.npz).",
        epilog="example: python -m desktop export outputs/20261125-101500-1a2b3c4d -o exports --formats glb,usdz "
               "--target-faces 5000 --height 1.8 --pivot bottom --normal-map")
    p.add_argument("folders", nargs="+", metavar="JOB_FOLDER", help="a job folder (made by generate, the app or the "
                                                                    "API)")
    p.add_argument("-o", "--output", required=True, help="folder that receives one new job folder per export")
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
    return p


def export_changes(parser, args) -> dict:
    try:
        return flag_changes(args, EXPORT_FIELDS)
    except ValueError as err:
        parser.error(str(err))


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    changes = export_changes(parser, args)
    for folder in args.folders:
        if not JobFolder(Path(folder)).file("settings").is_file():
            parser.error(f"{folder} is not a job folder (no settings.json)")
    problem = output_folder_problem(args.output)
    if problem:
        parser.error(f"-o/--output: {problem}")

    def export_job(folder):
        return lambda runner: runner.submit_export_from(folder, **changes)
    return run_jobs(args, [(os.path.basename(os.path.normpath(f)) or f, export_job(f)) for f in args.folders])
