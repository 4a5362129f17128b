"""`python -m desktop batch INPUT -o OUT [options]`: thousands of assets, over every GPU of a machine
(`--gpus`) or of a Ray cluster (`--ray ADDRESS|auto|local`). See desktop/batch/__init__.py.

Exit status: 0 every item is done (now or before), 1 some failed (or the batch stopped: --max-failures,
the model cannot be loaded, the outputs folder cannot be written, e.g. a full disk), 2 usage error (a bad
option, an input list that cannot be read: nothing started), 130 interrupted (Ctrl-C; a rerun goes on where
it stopped). Once the batch has started, its summary is printed and saved as OUT/summary.json whatever
ends it; when even that cannot be written, an error line says so (the exit status is then 1, or 130).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

from ..cli import DefaultModel, choose_family, output_folder_problem
from ..options import (add_compile_option, add_model_family_option, add_model_option, apply_compile_option,
                       default_model, device_arg, gpus_arg)
from ..setting_flags import add_settings_options, settings_from_args
from ..settings import DEFAULT_PRESET, PRESETS
from .display import BatchDisplay, summary_table
from .items import BatchInputError, read_items

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
RAY_MISSING = ("--ray needs Ray, an optional extra: install it with `python -m installer install --with-ray` "
               "(or `pip install -r requirements_ray.txt` in the app's environment)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m desktop batch",
        description="Make a 3-D asset of every image or prompt of INPUT, one folder per item in OUT, over every "
                    "GPU of this machine or of a Ray cluster. Rerun the same command to finish an interrupted "
                    "batch: finished items are skipped, failed and unfinished ones are made again.",
        epilog="Exit status: 0 all items done, 1 some failed or the batch stopped (e.g. a full disk), 2 usage "
               "error, 130 interrupted. "
               f"Presets: {', '.join(PRESETS)} (default {DEFAULT_PRESET}).")
    p.add_argument("input", metavar="INPUT", help="a folder of images, a glob ('photos/*.jpg', quoted), or a .csv / "
                                                  ".jsonl list (an image path or a prompt per line, optional "
                                                  "per-item settings; a `mesh` and an `image` column: a new look of "
                                                  "that 3-D model, its `model_family` trellis or trellis2)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="outputs folder (created if missing)")
    add_model_option(p)
    add_model_family_option(p)                  # the whole batch's: its items run that family unless they name one
    p.set_defaults(model=DefaultModel(default_model()))
    p.add_argument("--text-model", metavar="PATH_OR_REPO", default=None,
                   help="text pipeline for prompt items (default microsoft/TRELLIS-text-SIZE, SIZE from the "
                        "text_model_size setting)")
    add_settings_options(p)
    where = p.add_argument_group("where it runs")
    where.add_argument("--gpus", type=gpus_arg, metavar="0,1", help="one worker per listed GPU (default: every GPU)")
    where.add_argument("--device", type=device_arg, metavar="cpu|cuda[:N]",
                       help="run every worker on this device (with --workers N)")
    where.add_argument("--workers", type=int, metavar="N",
                       help="number of workers (default: one per GPU; with --device cpu: 1; with --ray: at most N)")
    where.add_argument("--ray", metavar="ADDRESS", default=None,
                       help="run on a Ray cluster: its address (host:6379, ray://host:10001), auto (the cluster this "
                            "machine belongs to) or local (a private cluster on this machine only)")
    where.add_argument("--ray-resource", default=None, metavar="NAME",
                       help="the Ray resource one worker takes one unit of (default GPU; with --device cpu, CPU: "
                            "one worker per node, using its cores)")
    where.add_argument("--ray-output", choices=("auto", "shared", "driver"), default="auto",
                       help="who writes the results: auto (a worker that sees OUT writes there, others send their "
                            "files to this machine), shared, driver")
    add_compile_option(where)
    where.add_argument("--no-overlap", action="store_true",
                       help="one item at a time per worker (by default the next item samples while the previous one "
                            "is exported: faster, but two results are held in GPU memory)")
    runs = p.add_argument_group("failures")
    runs.add_argument("--retries", type=int, default=2, metavar="N",
                      help="attempts after a failure or a worker's death, per item (default %(default)s)")
    runs.add_argument("--max-failures", type=int, default=0, metavar="N",
                      help="stop handing out items once N items failed (default 0: never stop)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line, only failures and the summary")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_compile_option(args)            # the workers (local processes, Ray actors) inherit it
    try:
        base = settings_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    if args.gpus and args.device:
        parser.error("use either --gpus or --device")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers: give 1 or more")
    if args.retries < 0 or args.max_failures < 0:
        parser.error("--retries and --max-failures take 0 or more")
    if args.ray and args.gpus:
        parser.error("--gpus picks GPUs of this machine; with --ray every GPU of the cluster is used "
                     "(--workers N caps how many)")
    problem = output_folder_problem(args.output)
    if problem:
        parser.error(f"-o/--output: {problem}")
    choose_family(parser, args)
    try:
        items = read_items(args.input)
    except BatchInputError as err:
        parser.error(str(err))
    if args.ray:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            print(f"error: {RAY_MISSING}", file=sys.stderr)
            return EXIT_USAGE
    return run(args, base, items)


def run(args, base, items) -> int:
    """Run the batch; whatever happens once it has started (items fail, the outputs folder fills up, Ctrl-C),
    the summary is printed and written to OUT/summary.json, or its write failure is reported."""
    from pathlib import Path

    from ..jobs.folder import lock_path, release_lock, try_lock
    from . import manifest as mf
    from .driver import Scheduler, plan

    out = Path(args.output).expanduser().resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"error: cannot create {out}: {err.strerror or err}; choose another -o", file=sys.stderr)
        return EXIT_FAILED
    lock = lock_path(out, "batch")
    fd = try_lock(lock)
    if fd is None:
        print(f"error: another batch is writing to {out} (or its lock {lock} cannot be made); wait for it "
              "or choose another -o", file=sys.stderr)
        return EXIT_FAILED
    display = BatchDisplay(len(items), enabled=not args.quiet)
    log = scheduler = pool = None
    skipped = []
    code = None
    start = time.monotonic()
    try:
        log = mf.Manifest(out)
        if log.damaged:
            display.say(f"{log.path}: {log.damaged} damaged line(s) skipped (the item folders are checked instead)")
        log.open()
        mf.clean_work(out)
        scheduler = Scheduler(None, log, display, out, retries=args.retries, max_failures=args.max_failures)
        log.append("batch", input=os.path.abspath(args.input), items=len(items), argv=sys.argv[1:],
                   settings=base.to_dict(), ray=args.ray)
        tasks, skipped, bad = plan(items, base, out, log, display.say)
        display.skipped = len(skipped)
        if skipped:
            display.say(f"{len(skipped)} of {len(items)} item(s) already done: skipped")
        for name, message in bad:
            scheduler.fail(name, message, "input")
        if tasks and not scheduler.stopped:
            common = {"model": args.model, "text_model": args.text_model, "out": str(out)}
            pool = make_pool(args, common, len(tasks))
            scheduler.pool = pool
            pool.start()
            display.workers = pool.size()
            scheduler.run(tasks)
        if scheduler.stopped:
            display.say(f"stopped: {scheduler.stopped}")
    except KeyboardInterrupt:
        display.say("Interrupted: stopping the workers (rerun the same command to go on).")
        if pool is not None:
            pool.close(kill=True)
            pool = None
        code = EXIT_INTERRUPTED
    except RuntimeError as err:               # mf.OutputError included: a full disk, a manifest that is no file
        display.say(f"error: {err}")
        code = EXIT_FAILED
    finally:
        if pool is not None:
            pool.close()
        with contextlib.suppress(OSError):
            mf.clean_work(out)
        if log is not None:
            log.close()
        release_lock(fd, lock)
        display.clear()
    summary = make_summary(items, scheduler, skipped, time.monotonic() - start)
    print(summary_table(summary), file=sys.stderr, flush=True)
    from ..jobs.folder import json_bytes, write_atomic

    try:
        write_atomic(out / mf.SUMMARY, json_bytes(summary))
    except OSError as err:
        print(f"error: the summary could not be saved to {out / mf.SUMMARY}: {err.strerror or err} (it is printed "
              "above)", file=sys.stderr, flush=True)
        code = code or EXIT_FAILED
    if code is not None:
        return code
    return EXIT_OK if not scheduler.failures and summary["not_run"] == 0 else EXIT_FAILED


def make_summary(items: list, scheduler, skipped: list, seconds: float) -> dict:
    """The run's counts (all zero but `not_run` when it stopped before its scheduler existed)."""
    done = scheduler.done if scheduler else 0
    failures = scheduler.failures if scheduler else []
    per_worker = scheduler.per_worker if scheduler else {}
    return {"total": len(items), "done": done, "skipped": len(skipped), "failed": len(failures),
            "not_run": len(items) - done - len(skipped) - len(failures),
            "retried": scheduler.retried if scheduler else 0, "lost_with_worker": scheduler.lost if scheduler else 0,
            "seconds": seconds, "failures": failures,
            "workers": [{"label": k, **v} for k, v in sorted(per_worker.items())]}


def make_pool(args, common: dict, count: int):
    cores = os.cpu_count() or 1
    per_worker = 1 if args.no_overlap else 2
    if args.ray:
        from .ray_pool import RayPool

        # Ray gives each actor its GPU as the only one it sees: "cuda:N" means "a GPU" there.
        device = None if args.device and args.device.startswith("cuda") else args.device
        resource = args.ray_resource or ("CPU" if args.device == "cpu" else "GPU")
        return RayPool(args.ray, resource, device, min(args.workers or count, count), common,
                       args.ray_output, per_worker=per_worker)
    from .local import LocalPool, local_devices

    devices = local_devices(args.gpus, args.device, args.workers)[:count]          # no worker that would get no item
    return LocalPool(devices, common, threads=max(1, cores // len(devices)), per_worker=per_worker)
