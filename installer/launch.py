"""`python -m installer launch`: start the app (or, in test mode, the tests) from the installed .venv.

App: model files first (installer.weights: downloaded on the first start, checked, kept in .cache/; TRELLIS.2 with
--trellis2: installer.weights_trellis2), then
`.venv/<python> -m desktop ui [app options]` with the caches inside the app folder and the GPU the plan
chose. The app opens the browser itself (`--no-browser` turns that off).
Tests: the system tools some tests need (headless chromium, wine, mingw-w64, blender: installed with apt-get when
root, as CI is), the glTF validator (npm ci in tests/js), then `.venv/<python> -m pytest [pytest args]`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from .install import EXIT_NOT_INSTALLED, EXIT_WEIGHTS, install_reason, isolated_env, load_state
from .layout import Layout, files_hash
from .log import Log
from .options import Options

# command that must exist -> Debian/Ubuntu packages that provide it (for the tests only)
APT_TEST_TOOLS = (
    ("chromium", ("chromium", "fonts-dejavu-core")),          # the browser test (playwright drives it)
    ("wine", ("wine",)),                                        # run.bat under Wine's cmd (tests/installer/test_run_bat.py)
    ("x86_64-w64-mingw32-gcc", ("mingw-w64",)),                 # builds that test's stand-in python.exe
    ("blender", ("blender", "python3-numpy")),                  # imports our GLBs (its glTF importer needs numpy)
)


# The suite's test files spread over up to this many processes (pytest-xdist, a test-only tool): most tests wait on
# servers, browsers and child processes, so a second worker uses the second core (docs/LIBRARY.md#tests-markers-and-
# structure-checks). More would mostly add each worker's memory.
MAX_TEST_WORKERS = 4


def test_workers(rest: list[str], cores: int | None = None) -> list[str]:
    """pytest's worker options for this machine (`cores`: os.cpu_count()): a file's tests stay in one worker (their
    module fixtures are made once), files handed out in the order they are collected; none where there is one core
    or the pytest arguments choose (-n, no:xdist)."""
    n = min(cores or os.cpu_count() or 1, MAX_TEST_WORKERS)
    chosen = any(a in ("-n", "--numprocesses") or a.startswith(("--numprocesses=", "-n=")) or "no:xdist" in a
                 or (a.startswith("-n") and a[2:].isdigit()) for a in rest)
    # xdist would hand out the files with the most tests first, which leaves the few-test browser and process files
    # (the longest) for last, one worker running them while the other waits; the collection order ends on the
    # library's many short files instead.
    return [] if n < 2 or chosen else ["-n", str(n), "--dist", "loadfile", "--no-loadscope-reorder"]


def _user_named_model(rest: list[str]) -> bool:
    named = any(a == "--model" or a.startswith("--model=") for a in rest)
    return named or bool(os.environ.get("TRELLIS_DESKTOP_MODEL"))


def skip_weights_command(opts: Options) -> str:
    """The start command with --skip-weights, as the user typed it (run.bat on Windows, ./run.sh elsewhere)."""
    import shlex

    launcher = "run.bat" if os.name == "nt" else "./run.sh"
    quote = subprocess.list2cmdline if os.name == "nt" else shlex.join
    return " ".join([launcher, *(["--cpu"] if opts.cpu else []), "--skip-weights", quote(opts.rest)]).rstrip()


def app_env(layout: Layout, state: dict, opts: Options, base: dict | None = None) -> dict:
    env = isolated_env(base, no_pip_config=opts.no_pip_config)
    for key, value in layout.app_env().items():
        env[key] = value
    for key, value in (state.get("env") or {}).items():     # the GPU the plan picked, unless the user chose one
        env.setdefault(key, value)
    return env


def ensure_test_tools(layout: Layout, log: Log) -> None:
    """What `./run.sh test` always did before pytest: apt-get the system tools (root only), npm ci."""
    need: list[str] = []
    for command, packages in APT_TEST_TOOLS:
        if shutil.which(command) is None:
            need += packages
    if need and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        log.say(f"Installing test tools with apt-get: {' '.join(need)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        rc, _ = log.run(["apt-get", "update", "-qq"], env=env)
        if rc == 0:
            rc, _ = log.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need], env=env)
        if rc != 0:
            log.say(f"apt-get install {' '.join(need)} failed; the tests that need them will say so")
    elif need:
        log.detail(f"test tools not installed (not root or no apt-get): {' '.join(need)}")
    js = layout.app_dir / "tests" / "js"
    lock = js / "package-lock.json"
    if lock.exists():
        stamp = js / "node_modules" / f".installed-{files_hash([lock])}"
        npm = shutil.which("npm")
        if not stamp.exists() and npm:
            rc, _ = log.run([npm, "ci", "--prefix", str(js), "--no-audit", "--no-fund"])
            if rc == 0:
                stamp.parent.mkdir(parents=True, exist_ok=True)
                stamp.touch()
            else:
                log.say("npm ci --prefix tests/js failed; the glTF validator test will fail")


# The repository's own packages, compiled before the tests: the suite starts hundreds of Python processes, and where
# PYTHONDONTWRITEBYTECODE is set (CI machines) each of them would compile our modules from source again.
SOURCE_PACKAGES = ("trellis", "desktop", "installer", "extensions", "benchmarks", "tests")


def compile_sources(python: str, app_dir, log: Log) -> int:
    """Byte-compile SOURCE_PACKAGES under `app_dir` with `python` (compileall writes the bytecode files whatever
    PYTHONDONTWRITEBYTECODE says; an up-to-date file is left alone). Returns compileall's exit status: a file that
    does not compile is reported here and again by the test that imports it."""
    folders = [str(app_dir / name) for name in SOURCE_PACKAGES if (app_dir / name).is_dir()]
    if not folders:
        return 0
    rc, _ = log.run([python, "-m", "compileall", "-q", "-j", "0", *folders], echo=False)
    if rc != 0:
        log.say("some of the app's Python files did not byte-compile; the tests that import them will say why")
    return rc


def _run(cmd: list[str], env: dict, cwd, log: Log) -> int:
    log.detail("$ " + " ".join(cmd))
    log.close()
    if os.name != "nt":
        try:
            os.chdir(cwd)
            os.execve(cmd[0], cmd, env)          # the app takes this process over (signals go straight to it)
        except OSError as e:
            print(f"Cannot start {cmd[0]}: {e.strerror or e}. Run the installer with --repair.", file=sys.stderr)
            return EXIT_NOT_INSTALLED
    try:
        return subprocess.call(cmd, env=env, cwd=cwd)
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        print(f"Cannot start {cmd[0]}: {e.strerror or e}. Run the installer with --repair.", file=sys.stderr)
        return EXIT_NOT_INSTALLED


def launch(layout: Layout, opts: Options, log: Log, opener=None) -> int:
    state = load_state(layout)
    reason = install_reason(layout, Options(cpu=opts.cpu, test=opts.test), state)
    if reason is not None:
        log.error(f"Trellis Desktop is not ready to start: {reason}. Start it with run.sh / run.bat (they install "
                  "first), or run: python -m installer install" + (" --cpu" if opts.cpu else ""))
        return EXIT_NOT_INSTALLED
    python = str(layout.venv_python())
    if opts.test:
        ensure_test_tools(layout, log)
        compile_sources(python, layout.app_dir, log)
        env = isolated_env(no_pip_config=opts.no_pip_config)
        return _run([python, "-m", "pytest", *test_workers(opts.rest), *opts.rest], env, layout.app_dir, log)

    env = app_env(layout, state, opts)
    if not opts.skip_weights:
        from .weights import WeightsError, ensure_for_app

        user_model = _user_named_model(opts.rest)
        try:
            wp = ensure_for_app(layout, repo=opts.weights_repo, endpoint=opts.hf_endpoint, pipeline=not user_model,
                                source_dir=opts.weights_from, retries=opts.retries, full_check=opts.repair, log=log,
                                opener=opener, start_without=skip_weights_command(opts))
        except WeightsError as e:
            log.error(str(e))
            return EXIT_WEIGHTS
        if wp.model_dir is not None:
            env["TRELLIS_DESKTOP_MODEL"] = str(wp.model_dir)
        if wp.dinov2 is not None:
            env.setdefault("TRELLIS_DINOV2_WEIGHTS", str(wp.dinov2))
        if opts.trellis2:                  # only when asked; whatever its outcome, the app starts
            from .weights_trellis2 import ensure_trellis2

            log.say(ensure_trellis2(layout.models, endpoint=opts.hf_endpoint, token_file=opts.hf_token_file,
                                    save=opts.save_hf_token, source_dir=opts.weights_from, retries=opts.retries,
                                    full_check=opts.repair, log=log, opener=opener).message)
    if opts.hf_endpoint:
        env["HF_ENDPOINT"] = opts.hf_endpoint
    return _run([python, "-m", "desktop", "ui", *opts.rest], env, layout.app_dir, log)
