"""`python -m desktop api`: the REST API server (FastAPI on uvicorn) over the job runner: the app factory,
its middleware and token check, and the command.

    python -m desktop api [--model REPO_OR_DIR] [--text-model REPO_OR_DIR] [--host 127.0.0.1] [--port 7960] [--token TOKEN]
                          [--allow-origin URL ...] [--outputs DIR] [--device cpu|cuda[:N] | --gpus 0,1] [--preset NAME]
                          [--precision auto|fp16|bf16|fp32] [--offload auto|none|model] [--vram-budget GIB]
                          [--max-queued N]

One JobRunner serves every request: one FIFO queue, the model loaded once, lazily, by the first job.
Two families of endpoints share it:

* `/v1/...`, the job API. `POST /v1/jobs` queues a job (multipart files `images`, or JSON with base64
  `images`, plus any generation setting or a preset) and answers 202 at once; `GET /v1/jobs/{id}`
  reports its state and progress (stage, step i/n, fraction, ETA, queue position);
  `GET /v1/jobs/{id}/files/{name}` downloads one of its files.
* `/ping`, `/status`, `/generate...`, `/download/...`: the endpoints StableProjectorz calls, with their
  parameter names (spz.py).

Security. The server binds 127.0.0.1 (this computer only) by default; bound to any other address it
refuses to start without a token. When a token is set, every request needs it, from this computer
too, as `Authorization: Bearer TOKEN` or `X-API-Key: TOKEN` (401 otherwise); only the docs
(/docs, /redoc, /openapi.json, and / which redirects to /docs) stay open. Without a token, requests must name
this computer in their Host header (127.0.0.1, localhost or ::1), which stops web pages from reaching the API through DNS
rebinding. Web pages of other sites may not change anything (CrossSiteGuard): a POST, PUT, PATCH or
DELETE whose Origin header is not the server's own origin (the scheme, host and port it is reached at;
127.0.0.1, localhost and ::1 count as one host) nor one allowed with --allow-origin, or that the browser
marks `Sec-Fetch-Site: cross-site`, is refused (403) unless it carries the server's valid token.
Programs that send no Origin (StableProjectorz, curl, Python clients) are not affected, and GET stays
open. CORS headers are sent only to the allowed origins, so other sites' pages cannot read the answers.

Stops and restarts. Ctrl-C, SIGTERM or SIGHUP stop the server cleanly (desktop/stopping.py): the running job
stops at its next step and ends interrupted (its folder keeps what was finished and gets an error.json
with `state: interrupted`), exit status 0; a second signal stops waiting (130 after a second Ctrl-C).
On start the runner puts the outputs folder in order (desktop/jobs/recovery.py): unfinished job folders are marked
interrupted, stale partial and temp files removed, and earlier jobs are served again by /v1/jobs.
An interrupted job reports state `cancelled` with error_kind `interrupted`.

Slow and many clients (connections.py): a request's headers must arrive within 10 s of its connection, a body
must average 4 KB/s after its first 30 s, one address holds at most 64 connections and all of them stay under the
open-file limit (idle and half-sent connections give way to new ones); at most --max-queued jobs wait (429 past them).

Status codes: 200 / 202 success; 400 unreadable body (a form cut short before its closing boundary too); 401 token
missing or wrong; 403 cross-site request (see Security); 404 unknown job or file; 408 the headers or the body came too
slowly, or the body stopped arriving (BODY_READ_TIMEOUT_S); 409 wrong state (e.g. cancelling a finished job); 413 a
body over MAX_BODY_BYTES (BodyLimit), an image or a 3-D model too large; 415 body not JSON or a form (/generate,
/v1/jobs/{id}/export: not JSON); 422 invalid parameters (checked first, even while a generation runs; JSON numbers
and booleans strictly typed) or an unusable image (not an image, damaged, too many pixels, fully transparent) or 3-D
model (jobs.check_mesh); 429 the job queue is full (Retry-After: seconds to wait); StableProjectorz family,
which answers when the job ends: 499 cancelled, 503 busy (a generation is already running), and the job's failure
as a status (see ERROR_STATUS); 503 also when every connection a client may hold is busy with a request.
"""

import argparse
import contextlib
import json
import os
import secrets
import socket
import sys
from typing import Optional

from . import security, spz
from .common import (MAX_IMAGE_BYTES, ApiError, BodyTimeout, BodyTooLarge, ServerDefaults, error_responses,
                     problem)
from .docs import add_docs_routes, register_schemas
from .security import LOOPBACK_NAMES, BodyReadTimeout, CrossSiteGuard, is_loopback, origin_arg
from .generations import add_generation_routes
from .idempotency import IdempotencyKeys
from .openai_errors import ErrorBodies
from .v1 import API_VERSION, add_job_routes
from .v1_schemas import models
from ..mcp.endpoint import add_mcp_route
from ..options import (LOCALHOST, add_memory_options, add_model_option, add_runner_options, add_server_options,
                       add_text_model_option, check_runner_args, apply_compile_option)
from ..settings import DEFAULT_PRESET, PRESETS
from ..stopping import StopSignals

DEFAULT_HOST = LOCALHOST
DEFAULT_PORT = 7960

# Per request (413 above: BodyLimit). Read from here at each request (tests patch it here).
MAX_BODY_BYTES = 256 * 1024 * 1024
# Jobs that may wait in the queue (429 past them). Each holds its inputs in memory until it runs, and at a minute or
# so a job 32 are half an hour of work: a client with more should come back (Retry-After) rather than pile up.
DEFAULT_MAX_QUEUED = 32


# ---------------------------------------------------------------------------------------------
# Server state
# ---------------------------------------------------------------------------------------------

class ApiState:
    def __init__(self, runner, token: Optional[str] = None, defaults: Optional[ServerDefaults] = None):
        self.runner = runner
        self.token = token or None
        self.defaults = defaults or ServerDefaults()
        self.spz = spz.SpzSlot()
        self.idempotency = IdempotencyKeys()


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------

def create_app(runner, token: Optional[str] = None, defaults: Optional[ServerDefaults] = None,
               allowed_hosts: Optional[list] = None, allowed_origins: Optional[list] = None):
    """The FastAPI app over `runner` (which the caller owns and shuts down). With `token`, every
    endpoint but the docs needs it. Without one, only Host headers naming this computer (or
    `allowed_hosts`) are served. State-changing requests from web pages are served only from the
    server's own origin and `allowed_origins` (scheme://host[:port]), which also get CORS headers."""
    from fastapi import Depends, FastAPI, Request, Security
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
    from starlette.middleware.cors import CORSMiddleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import ClientDisconnect


    state = ApiState(runner, token, defaults)
    dependencies = []
    if state.token:
        bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer TOKEN")
        api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: TOKEN")
        expected = state.token.encode("utf-8")

        async def require_token(creds: Optional[HTTPAuthorizationCredentials] = Security(bearer),
                                key: Optional[str] = Security(api_key)):
            given = creds.credentials if creds is not None else key
            if not given or not secrets.compare_digest(given.encode("utf-8"), expected):
                raise ApiError(401, "a valid token is required: send 'Authorization: Bearer TOKEN' or "
                                    "'X-API-Key: TOKEN' (the token the server was started with)")
        dependencies.append(Depends(require_token))

    app = FastAPI(
        title="Trellis Desktop API", version=API_VERSION, dependencies=dependencies,
        docs_url=None, redoc_url=None,                    # add_docs_routes: served from an installed package
        generate_unique_id_function=lambda route: route.name,      # operationId: create_job, get_file, ...
        responses=error_responses(401) if state.token else None,
        description="Image to 3D asset (GLB, PLY, OBJ, preview MP4) on this computer's GPU. The /v1 job API "
                    "queues jobs and reports their progress; the StableProjectorz endpoints (/ping, /status, "
                    "/generate...) keep that app's parameter names. "
                    + ("Every endpoint needs the server's token (Bearer or X-API-Key)." if state.token else ""))
    app.state.api = state
    origins = [origin_arg(o) for o in allowed_origins or []]
    # The last added runs first: Host check, body read timeout, CORS (preflights of allowed origins), the guard, the
    # body limit (inside ErrorBodies and CORS: its 413 in each family's shape, readable by allowed pages).
    app.add_middleware(BodyLimit)
    app.add_middleware(CrossSiteGuard, allowed=origins, token=state.token)
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"], expose_headers=["Location"])
    app.add_middleware(BodyReadTimeout)
    if not state.token:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_NAMES) + list(allowed_hosts or []))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if err.http_status == 401 else err.headers
        return JSONResponse({"detail": err.detail, **err.extra}, status_code=err.http_status, headers=headers)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, err: ClientDisconnect):
        # Mostly nobody reads it (connections.py cut the connection); JSON all the same, as every answer is.
        return JSONResponse({"detail": "the request ended before its body was read whole: send it again"},
                            status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception):
        # Starlette's own answer would be the plain text "Internal Server Error"; the traceback goes to the log.
        return JSONResponse({"detail": f"unexpected error ({type(err).__name__}): the server's log has the details",
                             "error_kind": "internal"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError):
        problems = [problem(list(e.get("loc", ())), e.get("msg", ""), e.get("type", "")) for e in err.errors()]
        return JSONResponse({"detail": problems}, status_code=422)

    @app.exception_handler(BodyTimeout)
    async def body_timeout(request: Request, err: BodyTimeout):
        seconds = security.BODY_READ_TIMEOUT_S
        return JSONResponse({"detail": f"the request body stopped arriving ({seconds:g} s without a "
                                       "byte): send the whole body, as long as its Content-Length says"},
                            status_code=408, headers={"Connection": "close"})

    from ..jobs.late import LateRunner

    if isinstance(runner, LateRunner):          # outermost but one: nothing else waits for the runner
        app.add_middleware(WaitForRunner, runner=runner)
    app.add_middleware(ErrorBodies)             # outermost: every error answer JSON, whoever wrote it
    add_docs_routes(app)
    add_job_routes(app)
    spz.add_routes(app)
    add_generation_routes(app)          # POST /v1/3d/generations (OpenAI-style; its errors in that shape)
    add_mcp_route(app)                  # /mcp: the MCP server over streamable HTTP, behind the same token
    register_schemas(app, [models()["JobRequest"], models()["ExportRequest"], *spz.referenced_models()])
    return app



class BodyLimit:
    """ASGI middleware: a request body over MAX_BODY_BYTES is answered 413 in JSON, the limit stated, the connection
    closed: at once, unread, when its Content-Length says so, else as soon as the bytes read pass the limit (a
    chunked body), whatever the endpoint was doing with them. Starlette's own limit (FastAPI's max_body_size) answers
    in plain text outside the app's error shapes and then fails the app's own answer, an error in the log."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = MAX_BODY_BYTES
        declared = content_length(scope["headers"])
        if declared is not None and declared > limit:
            await too_large(send, limit, declared)
            return
        read, over, started = 0, False, False

        async def counted():
            nonlocal read, over
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    over = True
                    raise BodyTooLarge()
            return message

        async def answer(message):
            nonlocal started
            if over and not started:
                return              # the endpoint's answer to a body it could not read whole: the 413 replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)
        try:
            await self.app(scope, counted, answer)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await too_large(send, limit)


def content_length(headers) -> Optional[int]:
    """A request's Content-Length; None without one (chunked) or when it is no number (h11 refuses those)."""
    value = next((v for k, v in headers if k == b"content-length"), None)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def too_large(send, limit: int, declared: Optional[int] = None) -> None:
    """The 413 of a body over `limit` bytes (`declared`: what its Content-Length said), closing the connection: the
    rest of such a body is not worth reading."""
    shown = f"{limit // 2 ** 20} MB" if limit >= 2 ** 20 else f"{limit:,} bytes"
    said = f" (its Content-Length says {declared:,} bytes)" if declared is not None else ""
    detail = (f"the request body is larger than the server's limit of {shown}{said}: send fewer or smaller "
              f"images (each at most {MAX_IMAGE_BYTES // 2 ** 20} MB) or a smaller 3-D model")
    data = json.dumps({"detail": detail}).encode("utf-8")
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})


class WaitForRunner:
    """While the server starts (its runner made in a thread: jobs.late.LateRunner), a request that needs the runner
    waits for it, off the event loop; /ping and the API docs answer at once. A runner that could not be made
    answers 503 with the reason (the server is exiting)."""

    def __init__(self, app, runner):
        self.app, self.runner = app, runner

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not answers_while_starting(scope["path"]):
            if not self.runner.ready():
                import anyio

                await anyio.to_thread.run_sync(self.runner.wait_done)
            if self.runner.error is not None:
                from fastapi.responses import JSONResponse

                answer = JSONResponse({"detail": f"the server could not start: {self.runner.error}"},
                                      status_code=503)
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


def answers_while_starting(path: str) -> bool:
    """The paths that need no runner: liveness, the API docs and / (a redirect to them)."""
    from .docs import DOCS_ASSETS

    return path in ("/", "/ping", "/docs", "/redoc", "/openapi.json") or path.startswith(DOCS_ASSETS + "/")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m desktop api",
        description="Serve the REST API: a job API under /v1 and the StableProjectorz endpoints. "
                    "OpenAPI docs at http://HOST:PORT/docs.",
        epilog="Bound to 127.0.0.1 (the default) only this computer can connect. Any other --host needs "
               "--token. Ctrl-C (or SIGTERM, SIGHUP) stops it cleanly: the running job is stopped at its next "
               "step and marked interrupted. Exit status: 0 after such a stop, 130 when a second Ctrl-C cut "
               "it short, 1 when the server cannot start, 2 usage error.")
    add_model_option(p, extra="; loaded once, by the first job")
    add_text_model_option(p)
    add_server_options(p, port=DEFAULT_PORT, host_help="address to listen on (default %(default)s: this computer "
                                                        "only; 0.0.0.0: every network, needs --token)")
    p.add_argument("--token", default=os.environ.get("TRELLIS_DESKTOP_API_TOKEN") or None,
                   help="require this token (Authorization: Bearer TOKEN or X-API-Key: TOKEN) on every request "
                        "(default: $TRELLIS_DESKTOP_API_TOKEN; required when --host is not this computer)")
    p.add_argument("--allow-origin", action="append", type=origin_arg, default=[], metavar="URL",
                   help="let web pages at this origin (scheme://host[:port], e.g. http://localhost:3000) start and "
                        "cancel jobs and read the answers (CORS); repeat for several. Other sites' pages are "
                        "refused (403) unless they send the token; programs that send no Origin are not affected")
    add_runner_options(p)
    p.add_argument("--max-queued", type=queue_bound, default=DEFAULT_MAX_QUEUED, metavar="N",
                   help="jobs that may wait in the queue; one more is answered 429 with Retry-After (default "
                        "%(default)s)")
    p.add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET,
                   help="preset of requests that do not name one (default %(default)s)")
    add_memory_options(p, precision_help="network precision of jobs that do not set one (default %(default)s)",
                       offload_help="GPU offloading of jobs that do not set one (default %(default)s)")
    return p


def queue_bound(text: str) -> int:
    """argparse type of --max-queued: 1..100000."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of jobs, 1..100000")
    return value


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket (OSError with the reason when the address cannot be used)."""
    infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)                      # exits with 2 on a usage error
    apply_compile_option(args)
    check_runner_args(parser, args)
    if args.token is not None and args.token != args.token.strip():
        parser.error("--token: no blanks at its start or end, and not blanks only (HTTP drops them from header values, "
                     "so no client could send such a token); e.g. python -c \"import secrets; "
                     "print(secrets.token_urlsafe())\"")
    if args.token is not None and len(args.token) < 8:
        parser.error("--token: use at least 8 characters (e.g. python -c \"import secrets; "
                     "print(secrets.token_urlsafe())\")")
    if args.token is not None and not (args.token.isascii() and args.token.isprintable()):
        parser.error("--token: use printable ASCII characters (HTTP headers carry no other reliably; e.g. "
                     "python -c \"import secrets; print(secrets.token_urlsafe())\")")
    if not is_loopback(args.host) and not args.token:
        parser.error(f"--host {args.host} lets other computers reach the API: set a token with --token TOKEN "
                     "(or $TRELLIS_DESKTOP_API_TOKEN) so that only clients that send it are served, or keep the "
                     f"default --host {DEFAULT_HOST}")

    from ..jobs.late import LateRunner
    from .connections import server_config

    try:
        sock = bind_socket(args.host, args.port)
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err.strerror or err}"
              + (" (another program uses this port: choose another with --port)"
                 if getattr(err, "errno", None) in (98, 48, 10048) else ""), file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    server = None

    def cannot_start(err: BaseException) -> None:
        print(f"error: {err}", file=sys.stderr, flush=True)
        if server is not None:
            server.should_exit = True
    # The runner (PyTorch, the devices, the outputs folder put in order) is made once the port answers: importing
    # PyTorch in a thread beside the server's own start-up would hold the interpreter lock for seconds.
    runner = LateRunner(lambda: start_runner(args), on_error=cannot_start, start=False)
    defaults = ServerDefaults(preset=args.preset, precision=args.precision, offload=args.offload,
                              vram_budget=args.vram_budget)
    app = create_app(runner, token=args.token, defaults=defaults, allowed_origins=args.allow_origin)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"Trellis Desktop API on http://{shown}:{port}  (docs: http://{shown}:{port}/docs; "
          f"model {args.model}, outputs {os.path.abspath(os.path.expanduser(args.outputs))}; "
          f"{'token required' if args.token else 'no token: this computer only'}). Ctrl-C stops it.",
          file=sys.stderr, flush=True)
    # Header and body deadlines, connection limits under the open-file limit (connections.py).
    config = server_config(app, log_level="warning", timeout_graceful_shutdown=5, lifespan="off")
    server = _Server(config, on_started=runner.start)

    def end_server_loop(forced: bool):
        server.should_exit = True
        server.force_exit = server.force_exit or forced
    stop = StopSignals(runner, "the API server", on_signal=end_server_loop)
    stop.install()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if not runner.started:                # stopped (or failed) before it listened: no runner to stop
            code = 0 if stop.causes else 1
        else:
            code = 1 if runner.error is not None else stop.finish()
    return code


def start_runner(args):
    """The server's JobRunner (OSError, ValueError, RuntimeError: the server cannot start), its devices' fast-path
    line and the outputs folder's recovery said, the warm-up started (the model loads and the GPU kernels warm up
    while the first request is prepared)."""
    from ..jobs import JobRunner

    # Two kept results: the StableProjectorz preview and one /v1 job's can both wait for an export.
    runner = JobRunner(args.model, args.outputs, device=args.device, gpus=args.gpus, keep_results=2,
                       text_model=args.text_model, max_queued=args.max_queued)
    runner.say_fast_paths()
    rec = runner.recovery
    if rec.interrupted or rec.removed:
        print(f"outputs folder: {rec.summary()}", file=sys.stderr, flush=True)
    if args.warmup:
        runner.start_warmup(precision=args.precision, offload=args.offload)
    return runner


def _Server(config, on_started):
    import uvicorn

    from .connections import widen_listen_queue

    class Server(uvicorn.Server):
        """uvicorn's server without its own signal handling (StopSignals does it; uvicorn's re-raises
        the signal after its shutdown, which kills the process before the job has stopped); its listen queue widened
        (connections.py) and `on_started()` once it listens."""

        def capture_signals(self):
            return contextlib.nullcontext()

        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started:
                widen_listen_queue(self)
                on_started()
    return Server(config)
