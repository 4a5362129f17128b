"""What an app nobody is using takes from the computer: the CPU and memory of `python -m desktop ui` (or `api`) while
it waits, and of a browser tab left open on it.

    python benchmarks/idle_app.py [--command ui|api] [--seconds 30] [--page] [--work DIR]

Starts the command on the tiny random-weight pipeline (`launch_gpu.py`'s, `--device cpu`),
waits until it answers and its warm-up has loaded the model, then reads the server's CPU time (user + system, from
/proc: Linux) over `--seconds` and its resident memory. With `--page` a headless Chromium (the browser tests' own,
`tests/desktop/ui/test_ui.py`'s) keeps the page open meanwhile, first as loaded and then showing a result (a tiny job
with its looping preview video), and the browser's processes are measured too. Speed is measured here, never in the
tests.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from launch_gpu import free_port, model_folder  # noqa: E402  (the launch benchmark's port and tiny pipeline)

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def browser_pids() -> list[int]:
    """Every Chromium-family process of this machine (the launcher script starts the real binary elsewhere): run
    the benchmark with no other browser open."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                program = os.path.basename((entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace"))
            except OSError:
                continue
            if program.startswith(("chromium", "chrome", "headless_shell")):
                pids.append(int(entry.name))
    return pids


def cpu_share(pids_of, seconds: float) -> float:
    """Percent of one core that the processes `pids_of()` used over `seconds` (those that lived through it)."""
    def total():
        out = {}
        for pid in pids_of():
            try:
                out[pid] = cpu_seconds(pid)
            except OSError:
                pass
        return out
    before = total()
    time.sleep(seconds)
    after = total()
    return 100 * sum(after[p] - before[p] for p in after if p in before) / seconds


def start(command: str, model: Path, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [sys.executable, "-m", "desktop", command, "--model", str(model), "--device", "cpu", "--port", str(port),
            "--outputs", str(work / "outputs")] + (["--no-browser"] if command == "ui" else [])
    log = open(work / f"{command}.log", "w")
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + ("ping" if command == "api" else ""), timeout=5).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the {command} command ended: {(work / f'{command}.log').read_text()}")
            time.sleep(0.2)
    loaded = time.monotonic() + 60
    while "model loaded" not in (work / f"{command}.log").read_text() and time.monotonic() < loaded:
        time.sleep(0.2)                                   # the background warm-up is part of starting, not of idling
    time.sleep(3)
    return proc, url


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--command", choices=("ui", "api"), default="ui")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--page", action="store_true", help="also a headless Chromium tab on the page (ui only)")
    ap.add_argument("--work", default="/tmp/idle_app")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    proc, url = start(args.command, model_folder(work, tiny=True), work)
    try:
        def server():
            return [proc.pid]
        print(f"`python -m desktop {args.command}` idle, nothing open: {cpu_share(server, args.seconds):.2f} % of a "
              f"core over {args.seconds:.0f} s; {resident_mib(proc.pid):.0f} MiB resident", flush=True)
        if args.page and args.command == "ui":
            page_rows(url, server, args.seconds)
    finally:
        proc.terminate()
        proc.wait(60)
    return 0


def page_rows(url: str, server, seconds: float) -> None:
    from playwright.sync_api import sync_playwright

    from tests.helpers.gradio_app import CHROMIUM, CHROMIUM_ARGS, EXAMPLES, Page

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        tabs = browser_pids
        ui = Page(browser, url)
        time.sleep(3)

        def both():
            return server() + tabs()
        print(f"a tab on the page as loaded: browser {cpu_share(tabs, seconds):.1f} %, app "
              f"{cpu_share(server, seconds):.2f} % of a core", flush=True)
        ui.upload(os.path.join(EXAMPLES, min(os.listdir(EXAMPLES))))
        ui.tiny()
        ui.formats({"glb", "mp4"})
        previous = ui.status()
        ui.generate()
        ui.wait_finished_after(previous)
        time.sleep(3)
        print(f"the tab showing a result (looping preview): browser and app together {cpu_share(both, seconds):.1f} %"
              f" of a core", flush=True)
        ui.page.evaluate("document.querySelectorAll('video').forEach(v => v.pause())")
        print(f"the same, its video paused: {cpu_share(both, seconds):.1f} % of a core", flush=True)
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
