"""`python -m installer plan [--nvidia-smi-output FILE] [--json]`: what would be installed here, and why.

`install`, `repair` and `update` are reserved for the rest of issue #6.
"""
from __future__ import annotations

import argparse
import sys

from .detect import detect_system
from .plan import describe, make_plan, to_json

NOT_YET = 2   # exit status of a command that exists but does nothing yet (same as `python -m desktop`)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m installer",
                                     description="Trellis Desktop installer: detect this machine and plan the install.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{plan,install,repair,update}")
    plan = sub.add_parser("plan", help="print the install plan (which PyTorch build, backends, preset); installs nothing")
    plan.add_argument("--nvidia-smi-output", metavar="FILE",
                      help="use FILE instead of running nvidia-smi: what `nvidia-smi --query-gpu=name,memory.total,"
                           "driver_version,compute_cap --format=csv,noheader,nounits` printed (one line per GPU; "
                           "an empty FILE means no NVIDIA GPU)")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.add_argument("--app-dir", metavar="DIR", help="the app folder (default: the folder holding installer/)")
    for name in ("install", "repair", "update"):
        sub.add_parser(name, help="not yet implemented (issue #6)")
    args = parser.parse_args(argv)

    if args.command != "plan":
        print(f"python -m installer {args.command}: not yet implemented (issue #6)", file=sys.stderr)
        return NOT_YET

    smi_text = None
    if args.nvidia_smi_output is not None:
        try:
            with open(args.nvidia_smi_output, encoding="utf-8", errors="replace") as f:
                smi_text = f.read()
        except OSError as e:
            print(f"Cannot read --nvidia-smi-output {args.nvidia_smi_output}: {e.strerror or e}", file=sys.stderr)
            return 2
    result = make_plan(detect_system(app_dir=args.app_dir, nvidia_smi_output=smi_text))
    print(to_json(result) if args.json else describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
