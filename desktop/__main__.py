"""`python -m desktop ui|api|generate`: the one entry point that run.sh, run.bat and gradio_main.py call."""
from __future__ import annotations

import argparse
import sys

COMMANDS = {
    "ui": "browser app",
    "api": "REST API",
    "generate": "command-line generator",
}

# Exit status for "this command exists but does nothing yet", distinct from success.
NOT_YET = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m desktop", usage="python -m desktop {ui,api,generate} [options]",
        description="Trellis Desktop: turn one photo into a 3D asset on your own GPU.",
    )
    parser.add_argument("command", choices=COMMANDS,
                        help="ui: the browser app; api: the REST API server; generate: one image from the command line")
    # Options after the command belong to it; until the commands exist they are accepted and unused.
    command = parser.parse_known_args(argv)[0].command
    print(f"Trellis Desktop: the {COMMANDS[command]} (`{command}`) is not yet available; it arrives in a later "
          "release. Today the Python library `trellis` works: see README.md and docs/.", file=sys.stderr)
    return NOT_YET


if __name__ == "__main__":
    sys.exit(main())
