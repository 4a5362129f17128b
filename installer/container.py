"""The container image's command (the Containerfile's ENTRYPOINT, run under tini):

    [api] [options]             the REST API server on 0.0.0.0:7960 (needs $TRELLIS_DESKTOP_API_TOKEN)
    ui [options]                the browser app on 0.0.0.0:7860
    batch|generate|export|retexture ...   the other `python -m desktop` commands
    weights [options]           download and check the model files now (`python -m installer weights`)
    health                      exit 0 when $TRELLIS_HEALTH_URL answers 200 (the image's HEALTHCHECK)
    PROGRAM [args]              anything else runs as is (e.g. bash)

The servers get the container's defaults before the user's options (argparse keeps the last one given, so
`--port 8000` still wins): every interface, /outputs for the jobs. Before a command that loads the model, the
model files are fetched into the cache volume (/app/.cache) and checked, as run.sh does on a first start, unless
a model folder is named (--model, $TRELLIS_DESKTOP_MODEL: only u2net is fetched then) or
$TRELLIS_SKIP_WEIGHTS=1. The command then replaces this process, so tini's SIGTERM reaches it directly.
"""
from __future__ import annotations

import os
import sys

from .layout import Layout
from .log import Log

OUTPUTS = "/outputs"
SERVER_DEFAULTS = {
    "api": ["--host", "0.0.0.0", "--port", "7960", "--outputs", OUTPUTS],
    "ui": ["--host", "0.0.0.0", "--port", "7860", "--outputs", OUTPUTS, "--no-browser"],
}
APP_COMMANDS = ("api", "ui", "generate", "batch", "export", "retexture")
NEEDS_MODEL = ("api", "ui", "generate", "batch", "retexture")
SKIP_WEIGHTS_ENV = "TRELLIS_SKIP_WEIGHTS"
TOKEN_ENV = "TRELLIS_DESKTOP_API_TOKEN"
HEALTH_URL_ENV = "TRELLIS_HEALTH_URL"
DEFAULT_HEALTH_URL = "http://127.0.0.1:7960/v1/health"


def desktop_argv(argv: list[str]) -> list[str]:
    """The `python -m desktop` arguments for this container command (the API server when none is given)."""
    command, rest = (argv[0], argv[1:]) if argv and not argv[0].startswith("-") else ("api", argv)
    return [command, *SERVER_DEFAULTS.get(command, []), *rest]


def named_model(args: list[str], env) -> bool:
    return any(a == "--model" or a.startswith("--model=") for a in args) or bool(env.get("TRELLIS_DESKTOP_MODEL"))


def has_token(args: list[str], env) -> bool:
    # A token of blanks is none (HTTP drops blanks around header values): the server refuses it, before any download.
    return any(a == "--token" or a.startswith("--token=") for a in args) or bool(env.get(TOKEN_ENV, "").strip())


def fetch_weights(layout: Layout, args: list[str], env: dict) -> int:
    """The model files into the cache volume; their folders go into `env` for the app. 0, or the installer's 4."""
    from .install import EXIT_WEIGHTS
    from .weights import WeightsError, ensure_for_app

    log = Log(None)
    try:
        wp = ensure_for_app(layout, pipeline=not named_model(args, env), log=log)
    except WeightsError as e:
        log.error(f"{e}\n(Or start the container with --model FOLDER on a mounted pipeline folder, or with "
                  f"{SKIP_WEIGHTS_ENV}=1 to let the first job download what it needs.)")
        return EXIT_WEIGHTS
    if wp.model_dir is not None:
        env["TRELLIS_DESKTOP_MODEL"] = str(wp.model_dir)
    if wp.dinov2 is not None:
        env.setdefault("TRELLIS_DINOV2_WEIGHTS", str(wp.dinov2))
    return 0


def health(env=os.environ, timeout: float = 8.0) -> int:
    """0 when the server answers 200 at $TRELLIS_HEALTH_URL (sent with the token, which every endpoint needs)."""
    import urllib.request

    url = env.get(HEALTH_URL_ENV) or DEFAULT_HEALTH_URL
    request = urllib.request.Request(url)
    if env.get(TOKEN_ENV):
        request.add_header("Authorization", f"Bearer {env[TOKEN_ENV]}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            ok = answer.status == 200
    except OSError as e:
        print(f"{url}: {e}", file=sys.stderr)
        return 1
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["health"]:
        return health()
    if argv and argv[0] == "weights":
        os.execv(sys.executable, [sys.executable, "-m", "installer", *argv])
    if argv and not argv[0].startswith("-") and argv[0] not in APP_COMMANDS:
        try:
            os.execvp(argv[0], argv)
        except OSError as e:
            print(f"cannot run {argv[0]}: {e.strerror or e} (the image's commands: {', '.join(APP_COMMANDS)}, "
                  "weights, or a program)", file=sys.stderr)
            return 127
    args = desktop_argv(argv)
    env = dict(os.environ)
    layout = Layout.of()
    # Without a token the API server refuses to start on 0.0.0.0: let it say so before gigabytes are fetched.
    wants_weights = args[0] in NEEDS_MODEL and env.get(SKIP_WEIGHTS_ENV, "0") not in ("1", "true", "yes")
    if wants_weights and not (args[0] == "api" and not has_token(args, env)) and "--help" not in args:
        code = fetch_weights(layout, args, env)
        if code:
            return code
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "desktop", *args], env)
    return 1       # not reached: execve replaces this process or raises


if __name__ == "__main__":
    sys.exit(main())
