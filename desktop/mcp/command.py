"""`python -m desktop mcp`: the MCP server for AI agents, over stdio (the default) or streamable HTTP (--http).

    python -m desktop mcp [--model PATH_OR_REPO] [--outputs DIR] [--device cpu|cuda[:N] | --gpus 0,1]
                          [--preset NAME] [--precision ...] [--offload ...] [--vram-budget GIB] [--no-warmup]
    python -m desktop mcp --http [the options of python -m desktop api: --host, --port, --token, ...]

stdio: the agent's client starts this command and speaks JSON-RPC on its stdin and stdout (nothing else is written
there: messages and logs go to stderr); a line that is not a JSON-RPC message is answered with JSON-RPC's parse or
invalid-request error (stdio.py). The job runner runs in this process, its jobs written to the outputs folder
as the app's are (its History lists them); the model is loaded in the background at start (or by the first job with
--no-warmup). When the client closes the connection (or on SIGINT, SIGTERM, SIGHUP), the running job stops at its
next step and ends interrupted; exit status 0 (1: the runner could not start; 2: usage error).

--http: the REST API server (python -m desktop api, same options), which serves MCP at /mcp beside the REST API,
behind the same token rules (endpoint.py says why one server).
"""
import argparse
import os
import sys

from ..options import (add_memory_options, add_model_option, add_runner_options, add_text_model_option,
                       apply_compile_option, check_runner_args, warmup_default)
from ..settings import DEFAULT_PRESET, PRESETS

EXIT_OK, EXIT_FAILED = 0, 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m desktop mcp",
        description="The MCP (Model Context Protocol) server: AI agents make 3-D assets through its tools "
                    "(generate_3d, new_look, export_job, job_status, list_jobs, cancel_job). Over stdio: add this "
                    "command to the agent's MCP client (docs/MCP.md).",
        epilog="--http serves MCP over streamable HTTP at /mcp of the REST API server instead: every other option "
               "is then python -m desktop api's (--host, --port, --token, ...).")
    p.add_argument("--http", action="store_true", help="serve MCP at http://HOST:PORT/mcp with the REST API "
                                                       "(python -m desktop api --help lists its options)")
    add_model_option(p, extra="; loaded at start in the background")
    add_text_model_option(p)
    add_runner_options(p)
    p.add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET,
                   help="preset of tool calls that do not name one (default %(default)s)")
    add_memory_options(p, precision_help="network precision of jobs that do not set one (default %(default)s)",
                       offload_help="GPU offloading of jobs that do not set one (default %(default)s)")
    p.add_argument("--no-warmup", dest="warmup", action="store_false", default=warmup_default(),
                   help="do not load the model at start; the first job does")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--http" in argv:
        from ..api.server import main as api_main

        print("MCP over streamable HTTP: http://HOST:PORT/mcp of the API server below (with its token, if it has "
              "one)", file=sys.stderr, flush=True)
        return api_main([a for a in argv if a != "--http"])
    parser = build_parser()
    args = parser.parse_args(argv)                      # exits with 2 on a usage error
    apply_compile_option(args)
    check_runner_args(parser, args)
    return serve_stdio(args)


def serve_stdio(args) -> int:
    import anyio

    from ..api.common import ServerDefaults
    from ..api.server import start_runner
    from ..jobs.late import LateRunner
    from .stdio import run_checked_stdio
    from .tools import build_server, runner_getter

    failed = []
    args.max_queued = None                      # one client: its calls queue, none is refused
    runner = LateRunner(lambda: start_runner(args), on_error=lambda err: failed.append(err), start=False)
    defaults = ServerDefaults(preset=args.preset, precision=args.precision, offload=args.offload,
                              vram_budget=args.vram_budget)
    server = build_server(runner_getter(runner), defaults, local_files=True)
    print(f"Trellis Desktop MCP server on stdio (model {args.model}, outputs "
          f"{os.path.abspath(os.path.expanduser(args.outputs))})", file=sys.stderr, flush=True)
    stopped = []

    async def start_runner_soon():
        # Once the transport holds stdout (it points fd 1 at stderr as it starts): whatever the model's load
        # writes there then cannot garble the messages.
        await anyio.sleep(0.05)
        runner.start()

    async def serve():
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_signal, tg.cancel_scope, stopped)
            tg.start_soon(start_runner_soon)
            await run_checked_stdio(server)         # until the client closes stdin
            tg.cancel_scope.cancel()
    try:
        anyio.run(serve)
    except KeyboardInterrupt:
        stopped.append("SIGINT")
    finally:
        if runner.started:
            runner.wait_done()                      # a runner still being made is stopped once made
        if runner.started and runner.error is None:
            why = f"the MCP server received {stopped[0]}" if stopped else "the MCP client closed the connection"
            runner.wait().shutdown(cancel=True, wait=True, timeout=60, reason=why)
    for err in failed:
        print(f"error: {err}", file=sys.stderr, flush=True)
    return EXIT_FAILED if failed else EXIT_OK


async def stop_on_signal(scope, stopped: list) -> None:
    """Cancel `scope` on SIGINT, SIGTERM or SIGHUP (noting which in `stopped`); where the event loop cannot watch
    signals (Windows), Ctrl-C ends it as a KeyboardInterrupt instead."""
    import signal

    import anyio

    names = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    try:
        with anyio.open_signal_receiver(*names) as signals:
            async for number in signals:
                stopped.append(signal.Signals(number).name)
                scope.cancel()
                return
    except NotImplementedError:
        return
