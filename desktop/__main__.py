"""`python -m desktop ui|api|generate|...|mcp`: the one entry point that run.sh, run.bat and gradio_main.py call."""
from __future__ import annotations

import argparse
import codecs
import importlib
import signal
import sys

# command -> (module with a `main(argv) -> int`, what it is)
COMMANDS = {
    "ui": ("desktop.ui", "browser app"),
    "api": ("desktop.api", "REST API server"),
    "generate": ("desktop.cli", "command-line generator"),
    "retexture": ("desktop.retexture", "new looks for 3-D models"),
    "export": ("desktop.export_command", "other files from finished jobs, without sampling again"),
    "verify-fast-paths": ("desktop.verify_fast_paths", "whether 8-bit attention changes your assets"),
    "batch": ("desktop.batch", "many images or prompts, over GPUs and Ray clusters"),
    "mcp": ("desktop.mcp", "MCP server for AI agents (stdio; --http: at /mcp of the REST API server)"),
}


def _printable_paths(err: UnicodeEncodeError):
    """Error handler of stdout: a path's bytes that are not UTF-8 (kept by Python as surrogate escapes) are
    written back as those bytes, so that a script reading the printed folder finds it; any other character
    the stream cannot encode is written as a \\u escape."""
    try:
        return codecs.lookup_error("surrogateescape")(err)
    except UnicodeError:
        return codecs.lookup_error("backslashreplace")(err)


def keep_paths_printable(stream=None) -> None:
    """Give a strict text stream (stdout under most UTF-8 locales) the _printable_paths handler: printing a
    folder whose name has such bytes would otherwise end the command in a UnicodeEncodeError traceback."""
    stream = sys.stdout if stream is None else stream
    if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
        codecs.register_error("trellis-printable-paths", _printable_paths)
        stream.reconfigure(errors="trellis-printable-paths")


def unblock_stop_signals() -> None:
    """Let Ctrl-C and the other stop signals through: a parent that started this process with them blocked (the
    mask is inherited) would leave them pending for ever, and every command stops cleanly on them."""
    if hasattr(signal, "pthread_sigmask"):
        from .stopping import stop_signal_numbers

        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signal_numbers())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    keep_paths_printable()
    unblock_stop_signals()
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
            return run_command(word, argv[:i] + argv[i + 1:])
    parser.parse_args(argv)      # no command: prints usage (or --help) and exits 2
    return 2


def run_command(command: str, rest: list) -> int:
    """`command`'s main(rest); an error it did not catch is said in one line with where its report was written
    (desktop.crash_report) and exits 1; Ctrl-C that reaches here exits 130. Never a traceback."""
    from .crash_report import EXIT_FAILED, install_thread_hook, said_in_one_line

    install_thread_hook(command)
    try:
        return importlib.import_module(COMMANDS[command][0]).main(rest)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as err:             # noqa: BLE001  (the last resort: whatever it is, one line and a report)
        print(said_in_one_line(command, err), file=sys.stderr, flush=True)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
