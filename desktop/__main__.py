"""`python -m desktop ui|api|generate`: the one entry point that run.sh, run.bat and gradio_main.py call."""
from __future__ import annotations

import argparse
import sys

COMMANDS = {
    "ui": "browser app",
    "api": "REST API",
    "generate": "command-line generator",
}
AVAILABLE = {"generate"}

# Exit status for "this command exists but does nothing yet", distinct from success.
NOT_YET = 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "generate":
        from .cli import main as generate   # its own parser: `python -m desktop generate --help`

        return generate(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m desktop", usage="python -m desktop {ui,api,generate} [options]",
        description="Trellis Desktop: turn one photo into a 3D asset on your own GPU.",
    )
    parser.add_argument("command", choices=COMMANDS,
                        help="ui: the browser app; api: the REST API server; generate: images from the command "
                             "line (python -m desktop generate --help)")
    # Options after the command belong to it; until the commands exist they are accepted and unused.
    command = parser.parse_known_args(argv)[0].command
    if command in AVAILABLE:        # reached when options came before the command name
        from .cli import main as generate

        rest = list(argv)
        rest.remove(command)
        return generate(rest)
    print(f"Trellis Desktop: the {COMMANDS[command]} (`{command}`) is not yet available; it arrives in a later "
          "release. Today `python -m desktop generate IMAGE -o OUT_DIR` and the Python library `trellis` work: "
          "see README.md and docs/.", file=sys.stderr)
    return NOT_YET


if __name__ == "__main__":
    sys.exit(main())
