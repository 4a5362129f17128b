"""`python -m installer COMMAND`: what run.sh, run.bat and TrellisDesktop(.exe) call.

    plan    [--cpu] [--nvidia-smi-output FILE] [--json]   what would be installed here, and why
    check   [launcher options] [test ...]   exit 0: ready to start; 10: an install is needed first
    install [launcher options] [test ...]   install (or repair/update) .venv; 0 when done
    launch  [launcher options] [test ...|app options]     start the app (or the tests) from .venv
    weights [--list] [--weights-repo ID] [--hf-endpoint URL] [--weights-from DIR] [--repair]
            [--trellis2 [--hf-token-file FILE] [--save-hf-token]]
    repair / update [launcher options]      the same as install --repair / install --update
"""
from __future__ import annotations

import argparse
import sys

from . import options as launcher_options
from .detect import detect_system
from .plan import describe, make_plan, to_json

COMMANDS = ("plan", "check", "install", "launch", "weights", "repair", "update")
USAGE = __doc__.split("\n\n", 1)[1]


def _plan(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m installer plan",
                                     description="Print the install plan (which PyTorch build, backends, preset); "
                                                 "installs nothing.")
    parser.add_argument("--nvidia-smi-output", metavar="FILE",
                        help="use FILE instead of running nvidia-smi: what `nvidia-smi --query-gpu=name,memory.total,"
                             "driver_version,compute_cap --format=csv,noheader,nounits` printed (one line per GPU; "
                             "an empty FILE means no NVIDIA GPU)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--cpu", action="store_true", help="plan the CPU build whatever GPU is present")
    parser.add_argument("--app-dir", metavar="DIR", help="the app folder (default: the folder holding installer/)")
    args = parser.parse_args(argv)
    smi_text = None
    if args.nvidia_smi_output is not None:
        try:
            with open(args.nvidia_smi_output, encoding="utf-8", errors="replace") as f:
                smi_text = f.read()
        except OSError as e:
            print(f"Cannot read --nvidia-smi-output {args.nvidia_smi_output}: {e.strerror or e}", file=sys.stderr)
            return 2
    result = make_plan(detect_system(app_dir=args.app_dir, nvidia_smi_output=smi_text), force_cpu=args.cpu)
    print(to_json(result) if args.json else describe(result))
    return 0


def _weights(argv: list[str]) -> int:
    from .layout import Layout
    from .log import Log
    from .weights import WeightsError, ensure_for_app, wanted_files

    parser = argparse.ArgumentParser(prog="python -m installer weights",
                                     description="Download and check the model files now (the app does it on its "
                                                 "first start).")
    parser.add_argument("--list", action="store_true", help="only list the files, their sources and where they go")
    parser.add_argument("--weights-repo", metavar="ID")
    parser.add_argument("--hf-endpoint", metavar="URL")
    parser.add_argument("--weights-from", metavar="DIR")
    parser.add_argument("--repair", action="store_true", help="hash every file again")
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--app-dir", metavar="DIR")
    parser.add_argument("--trellis2", action="store_true",
                        help="also TRELLIS.2 and DINOv3 (gated: a Hugging Face token of an account that accepted "
                             "Meta's DINOv3 License); exit 5 when TRELLIS.2 is not available, with the reason")
    parser.add_argument("--hf-token-file", metavar="FILE", help="the Hugging Face token for --trellis2, from FILE")
    parser.add_argument("--save-hf-token", action="store_true",
                        help="save that token where `hf auth login` keeps it")
    args = parser.parse_args(argv)
    if (args.hf_token_file or args.save_hf_token) and not args.trellis2:
        parser.error("--hf-token-file and --save-hf-token go with --trellis2")
    layout = Layout.of(args.app_dir)
    log = Log(None if args.list else layout.log_file)
    try:
        if args.list:
            wp = wanted_files(layout, repo=args.weights_repo, endpoint=args.hf_endpoint)
            for wf in wp.files:
                print(f"{wf.label}\n  {wf.size} bytes, sha256 {wf.expected()}\n  from {wf.url}\n  to   {wf.dest}")
            return 0
        ensure_for_app(layout, repo=args.weights_repo, endpoint=args.hf_endpoint, source_dir=args.weights_from,
                       retries=args.retries, full_check=args.repair, log=log)
    except WeightsError as e:
        log.error(str(e))
        return 4
    log.say("All model files are present and match their published sha256.")
    if args.trellis2:
        from .weights_trellis2 import ensure_trellis2

        status = ensure_trellis2(layout.models, endpoint=args.hf_endpoint, token_file=args.hf_token_file,
                                 save=args.save_hf_token, source_dir=args.weights_from, retries=args.retries,
                                 full_check=args.repair, log=log)
        log.say(status.message)
        return 0 if status.available else 5
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: python -m installer COMMAND ...\n\n" + USAGE, file=sys.stderr if argv[:1] not in (
            ["-h"], ["--help"]) else sys.stdout)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"unknown command {argv[0]!r}", file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    command, rest = argv[0], argv[1:]
    if command == "plan":
        return _plan(rest)
    if command == "weights":
        return _weights(rest)

    from .install import EXIT_USAGE, check, install
    from .launch import launch
    from .layout import Layout
    from .log import Log

    if rest[:1] in (["-h"], ["--help"]):
        print(f"usage: python -m installer {command} [launcher options] [test [pytest args] | app options]\n\n"
              + launcher_options.HELP)
        return 0
    try:
        opts = launcher_options.parse(rest)
    except launcher_options.UsageError as e:
        print(f"python -m installer {command}: {e}\n\n{launcher_options.HELP}", file=sys.stderr)
        return EXIT_USAGE
    if command == "repair":
        command, opts.repair = "install", True
    elif command == "update":
        command, opts.update = "install", True
    layout = Layout.of(opts.app_dir)
    if command == "check":
        return check(layout, opts)
    log = Log(layout.log_file)
    try:
        if command == "install":
            return install(layout, opts, log)
        return launch(layout, opts, log)
    finally:
        log.close()


if __name__ == "__main__":
    sys.exit(main())
