"""`python -m desktop ui` (or `python gradio_main.py`): the options and the command that starts the page."""
import argparse
import os
import sys

from ..options import (DEFAULT_MODEL, add_memory_options, add_model_option, add_runner_options, add_server_options,
                       add_text_model_option, check_runner_args, apply_compile_option)
from ..settings import GenerationSettings
from ..stopping import StopSignals
from .app import CSS, EXAMPLES_DIR, TrellisApp
from . import look
from .lazy import load_gradio

# gradio's queue looks for new events every millisecond (every 50 ms on Windows) and for progress every 10 ms: a
# thousand wake-ups a second keep an app nobody uses at several percent of a core. 20 ms still starts a click's work
# before a person can tell; the page shows no gradio progress bars, whose pace the second figure sets.
QUEUE_POLL_S = 0.02
PROGRESS_POLL_S = 0.1


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m desktop ui",
        description="Start the Trellis Desktop browser app (also: python gradio_main.py [options]).",
        epilog="Precision and offloading chosen in the page apply from the next job on, without a restart. "
               "Every job is saved in its own sub-folder of the outputs folder.")
    add_model_option(p, metavar="REPO_OR_DIR")
    add_text_model_option(p)
    add_server_options(p, port=7860, host_help="address to listen on (default %(default)s: this computer only; "
                                               "0.0.0.0 for the network)")
    add_memory_options(p, precision_help="initial precision of the networks (default %(default)s; changeable in "
                                         "the page)",
                       offload_help="initial offloading: model = each network on the GPU only while it runs "
                                    "(default %(default)s; changeable in the page)")
    add_runner_options(p, parallel="batch jobs in parallel")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser window")
    return p


def model_problem(model: str) -> str | None:
    """A message when `model` is a local folder that cannot hold a pipeline; None otherwise (a Hugging
    Face repo id is checked when the first job loads it)."""
    path = os.path.expanduser(model)
    local = os.path.exists(path) or os.path.isabs(path) or model.startswith((".", "~"))
    if not local or os.path.isfile(os.path.join(path, "pipeline.json")):
        return None
    what = "does not exist" if not os.path.exists(path) else "holds no pipeline.json"
    return (f"The model folder {model} {what}, so generating will fail. Restart the app with "
            f"--model pointing to a folder that holds pipeline.json and ckpts/ (a copy of {DEFAULT_MODEL}), "
            f"or with --model {DEFAULT_MODEL} to download it (internet needed once).")


def quiet_queue(demo):
    """`demo` (queued) with the queue's idle polling slowed to QUEUE_POLL_S / PROGRESS_POLL_S (never sped up). The
    queue is gradio's own object (Blocks._queue); a gradio without these attributes keeps its pace."""
    queue = getattr(demo, "_queue", None)
    for name, pace in (("sleep_when_free", QUEUE_POLL_S), ("progress_update_sleep_when_free", PROGRESS_POLL_S)):
        if isinstance(getattr(queue, name, None), (int, float)):
            setattr(queue, name, max(getattr(queue, name), pace))
    return demo


def launch(demo, runner, host: str, port: int, open_browser: bool = False) -> str:
    """Serve the built page `demo` of `runner`'s app on host:port (its queue, files, look and connection limits);
    returns the address. OSError when the port cannot be had."""
    from ..api.connections import guarded_configs, widen_listen_queue

    with guarded_configs():         # header and body deadlines, connection limits (desktop/api/connections.py)
        _, url, _ = quiet_queue(demo.queue()).launch(
            server_name=host, server_port=port, inbrowser=open_browser, prevent_thread_lock=True, quiet=True,
            show_error=True, ssr_mode=False, allowed_paths=[str(runner.outputs_dir), str(EXAMPLES_DIR)],
            css=CSS + look.CSS, head=look.HEAD, theme=look.page_theme(),
            footer_links=["api", "gradio"])
    widen_listen_queue(getattr(demo, "server", None))
    return url or f"http://{host}:{port}/"


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)                       # exits with 2 on a usage error
    apply_compile_option(args)
    check_runner_args(parser, args)
    defaults = GenerationSettings(precision=args.precision, offload=args.offload, vram_budget=args.vram_budget)

    load_gradio()
    from ..jobs import JobRunner                          # heavy (torch): only once the options are good

    try:
        runner = JobRunner(args.model, args.outputs, device=args.device, gpus=args.gpus, text_model=args.text_model)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    runner.say_fast_paths()
    problem = model_problem(args.model)
    if problem:
        print(f"warning: {problem}", file=sys.stderr)
    app = TrellisApp(runner, defaults=defaults, model_problem=problem)
    if args.warmup and not problem:      # the model loads (and GPU kernels warm up) while the user picks an image
        runner.start_warmup(precision=args.precision, offload=args.offload)
    # Ctrl-C, SIGTERM, SIGHUP (Windows: Ctrl-C, Ctrl-Break, closing the console): the running job stops at
    # its next step and is marked interrupted, then the app exits 0 (a second Ctrl-C: 130 at once).
    stop = StopSignals(runner, "the app")
    stop.install()
    demo, failed = None, False
    try:
        demo = app.build()
        try:
            url = launch(demo, runner, args.host, args.port, open_browser=not args.no_browser)
        except OSError as err:
            print(f"error: could not listen on {args.host}:{args.port} ({err}). Is the app already running? "
                  f"Pick another port with --port.", file=sys.stderr)
            failed = True
        if not failed:
            print(f"Trellis Desktop is running at {url}  (outputs: {runner.outputs_dir}; Ctrl-C to stop)",
                  flush=True)
            if args.host not in ("127.0.0.1", "localhost", "::1"):
                print(f"note: listening on {args.host}: anyone who can reach this computer on port {args.port} can "
                      "use the app and see its outputs (there is no login).", file=sys.stderr, flush=True)
            stop.wait()                                  # until Ctrl-C (or another stop signal)
    finally:
        # The job first (its folder gets its error.json), then the page's server, which ends the job's
        # progress events as they see it stopped.
        code = stop.finish()
        if demo is not None:
            demo.close()
        app.close()
    return 1 if failed else code
