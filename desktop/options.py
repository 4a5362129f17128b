"""The command-line options the three commands share (ui, api, generate), declared once.

    add_runner_options(parser)          --model, --outputs, --device, --gpus (the job runner's)
    add_memory_options(parser, ...)     --precision, --offload, --vram-budget (the servers' defaults for new jobs)
    add_server_options(parser, port)    --host, --port
    check_runner_args(parser, args)     what argparse cannot check by itself
    format_clock(seconds), TerminalLine the progress displays of generate and batch

No heavy import: `--help` and a usage error stay instant.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

from .families import FAMILIES, names_words
from .families.trellis import MODEL_ENV, REPO as DEFAULT_MODEL       # noqa: F401 (the default of --model)
from .settings import OFFLOADS, PRECISIONS

TEXT_MODEL_ENV = "TRELLIS_DESKTOP_TEXT_MODEL"  # the default of --text-model when set
LOCALHOST = "127.0.0.1"
WARMUP_ENV = "TRELLIS_DESKTOP_WARMUP"         # 0 / off / false / no: the servers start no background warm-up
COMPILE_ENV = "TRELLIS_COMPILE_FLOWS"         # = trellis.pipelines.memory.COMPILE_ENV (not imported: no torch here)


def default_model() -> str:
    return os.environ.get(MODEL_ENV, DEFAULT_MODEL)


def device_arg(text: str) -> str:
    """argparse type of --device."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r}: use cpu, cuda or cuda:N")
    return text


def gpus_arg(text: str) -> list:
    """argparse type of --gpus: distinct GPU numbers separated by commas."""
    try:
        ids = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use GPU numbers separated by commas, e.g. 0,1") from None
    if not ids or any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"{text!r}: use distinct GPU numbers separated by commas, e.g. 0,1")
    return ids


def port_number(text: str) -> int:
    """argparse type of the servers' --port (ui, api)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (use 1..65535)") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (use 1..65535)")
    return port


def add_model_option(parser: argparse.ArgumentParser, metavar: str = "PATH_OR_REPO", extra: str = "") -> None:
    parser.add_argument("--model", default=default_model(), metavar=metavar,
                        help=f"pipeline folder or Hugging Face repo (default: ${MODEL_ENV} or %(default)s){extra}")


def add_model_family_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-family", choices=list(FAMILIES), default=None,
                        help=f"the image model family: {names_words()}, each from the folder the app installs it in "
                             "(default: the family of --model; both given must agree)")


def add_text_model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-model", default=os.environ.get(TEXT_MODEL_ENV) or None, metavar="REPO_OR_DIR",
                        help=f"text pipeline for prompts, whatever size a job asks for (default: ${TEXT_MODEL_ENV}, "
                             "else microsoft/TRELLIS-text-<size> of the job's text_model_size: base, large or "
                             "xlarge; downloaded on the first text job and loaded then)")


def add_runner_options(parser: argparse.ArgumentParser, parallel: str = "jobs in parallel",
                       outputs: bool = True) -> None:
    """--device and --gpus (and --outputs for the servers; the generate command names its folder -o)."""
    if outputs:
        parser.add_argument("--outputs", default="outputs", metavar="DIR",
                            help="folder that receives one sub-folder per job (default: %(default)s)")
    parser.add_argument("--device", type=device_arg, metavar="cpu|cuda[:N]",
                        help="compute device (default: cuda when available, else cpu)")
    parser.add_argument("--gpus", type=gpus_arg, metavar="0,1", help=f"one worker per listed GPU ({parallel})")


def add_memory_options(parser: argparse.ArgumentParser, precision_help: str, offload_help: str) -> None:
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=precision_help)
    parser.add_argument("--offload", choices=OFFLOADS, default="auto", help=offload_help)
    parser.add_argument("--vram-budget", type=vram_budget_arg, default=None, metavar="GIB",
                        help="GPU memory budget (GiB, what PyTorch reserves) of jobs that do not set one and whose "
                             "preset sets none (default: no budget)")
    add_compile_option(parser)


def vram_budget_arg(text: str):
    """--vram-budget GIB for a server: read and checked as the setting itself is (its range; "none" for none)."""
    from .settings import SETTINGS, check_value, parse_value

    try:
        value = parse_value("vram_budget", text)
        check_value(SETTINGS["vram_budget"], value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return value


COMPILE_HELP = ("compile the flows' transformer blocks with torch.compile (GPUs with Triton): each process's first "
                "job takes ~20 s longer, every later one samples faster (figures: docs/benchmarks/pipeline.md). Same as "
                "$TRELLIS_COMPILE_FLOWS=on")


def add_compile_option(parser) -> None:
    parser.add_argument("--compile", action="store_true", default=None, help=COMPILE_HELP)


def apply_compile_option(args) -> None:
    """--compile: set $TRELLIS_COMPILE_FLOWS for this process and the workers it starts (pipelines read it
    when their memory policy leaves `compile` unset)."""
    if getattr(args, "compile", None):
        os.environ[COMPILE_ENV] = "on"


def warmup_default() -> bool:
    """The servers warm up in the background unless $TRELLIS_DESKTOP_WARMUP switches it off."""
    return os.environ.get(WARMUP_ENV, "on").strip().lower() not in ("0", "off", "false", "no")


def add_server_options(parser: argparse.ArgumentParser, port: int, host_help: str) -> None:
    """--host, --port and --no-warmup (the servers')."""
    parser.add_argument("--host", default=LOCALHOST, help=host_help)
    parser.add_argument("--port", type=port_number, default=port, help="port to listen on (default %(default)s)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", default=warmup_default(),
                        help="do not load the model at start in the background (nor warm the GPU kernels with a "
                             f"tiny run); the first job does it instead (default: warm up, unless ${WARMUP_ENV}=0)")


def check_runner_args(parser: argparse.ArgumentParser, args, outputs: str | None = "outputs") -> None:
    """Usage errors (exit 2) argparse cannot see: --gpus with another --device; an outputs folder that is a file."""
    if args.gpus and args.device and args.device != "cuda":
        parser.error("--gpus picks the GPUs itself; leave out --device (or use --device cuda)")
    folder = getattr(args, outputs) if outputs else None
    if folder is not None and os.path.exists(folder) and not os.path.isdir(folder):
        parser.error(f"--{outputs}: {folder} exists and is not a folder")


def format_clock(seconds) -> str:
    """Seconds as m:ss or h:mm:ss; --:-- for None (an ETA not known yet)."""
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class TerminalLine:
    """One status line redrawn in place on a terminal (``_draw``), and whole lines that stay (``say``); on a
    pipe or a file (not a tty) nothing is redrawn. The base of the progress displays of generate and batch."""

    def __init__(self, stream=None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = 0

    def _draw(self, text: str) -> None:
        pad = max(0, self.width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self.width = len(text)

    def clear(self) -> None:
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0

    def say(self, text: str) -> None:
        """A permanent message line (errors are printed even when progress is off)."""
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()
