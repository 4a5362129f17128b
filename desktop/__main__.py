"""`python -m desktop ui|api|generate`: the one entry point that run.sh, run.bat and gradio_main.py call."""
from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module with a `main(argv) -> int`, what it is)
COMMANDS = {
    "ui": ("desktop.ui", "browser app"),
    "api": ("desktop.api", "REST API server"),
    "generate": ("desktop.cli", "command-line generator"),
    "retexture": ("desktop.retexture", "new looks for 3-D models"),
    "batch": ("desktop.batch", "many images or prompts, over GPUs and Ray clusters"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m desktop", usage=f"python -m desktop {{{','.join(COMMANDS)}}} [options]",
        description="Trellis Desktop: turn a photo or a prompt into a 3D asset on your own GPU. "
                    "`python -m desktop COMMAND --help` lists a command's options.",
    )
    parser.add_argument("command", choices=COMMANDS,
                        help="; ".join(f"{name}: {what}" for name, (_, what) in COMMANDS.items()))
    # The command is the first word that names one; everything else belongs to it.
    for i, word in enumerate(argv):
        if word in COMMANDS:
            rest = argv[:i] + argv[i + 1:]
            return importlib.import_module(COMMANDS[word][0]).main(rest)
    parser.parse_args(argv)      # no command: prints usage (or --help) and exits 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
