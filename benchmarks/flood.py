"""How the REST API answers while it is flooded with connections that never finish their requests: the latency of
GET /ping under `--connections` (default 1,100) open connections, with the server held to a desktop's open-file limit.

    python benchmarks/flood.py [--connections 1100] [--trickle 100] [--seconds 20] [--nofile 1024] [--work DIR]

Starts `python -m desktop api` on the tiny random-weight pipeline (`launch_gpu.py`'s, `--device cpu`, no warm-up)
under RLIMIT_NOFILE `--nofile` (the soft limit of a Linux desktop session: 1,024), then runs two floods from this
process, each for `--seconds`, while one client pings every 0.25 s (each ping a new connection, 10 s timeout):

* static: every connection opened once and left as it is (as a script that opens them and sleeps): most send
  `GET /ping HTTP/1.1` and one header line and stop; `--trickle` of them announce a 1 MB body and send a byte
  every 20 s;
* sustained: the same, and every connection the server closes is opened again at once (at most 500 a second).

Reports per flood: the pings' median / 95th percentile / worst latency and how many failed; how many of the flood's
connections the server closed; the server's open file descriptors at the end (/proc: Linux). Speed is measured
here, never in the tests. Needs a POSIX system (resource limits, /proc).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from launch_gpu import free_port, model_folder  # noqa: E402  (the launch benchmark's port and tiny pipeline)

HALF = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n"
TRICKLE = (b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Content-Length: 1000000\r\n\r\n{")
TRICKLE_PAUSE_S = 20.0
REOPEN_PER_S = 500


def start_server(model: Path, work: Path, nofile: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TRELLIS_DESKTOP_API_TOKEN", None)

    def limit_files():                     # in the child, before exec: the server's own open-file limit
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, max(nofile, hard) if hard != resource.RLIM_INFINITY
                                                    else hard))
    proc = subprocess.Popen([sys.executable, "-m", "desktop", "api", "--model", str(model), "--port", str(port),
                             "--outputs", str(work / "outputs"), "--device", "cpu", "--no-warmup"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(work / "server.log", "w"),
                            preexec_fn=limit_files)
    deadline = time.time() + 120
    while time.time() < deadline:
        if ping(port, timeout=2)[1] == 200:
            return proc, port
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not start: {(work / 'server.log').read_text()[-2000:]}")


def ping(port: int, timeout: float = 10.0) -> tuple[float, int | str]:
    """(seconds, status code or what went wrong) of one GET /ping on a new connection."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
            c.settimeout(max(0.1, timeout - (time.monotonic() - start)))
            c.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := c.recv(65536):
                data += chunk
        code = int(data.split()[1]) if data.startswith(b"HTTP/1.1 ") else "closed without an answer"
    except OSError as err:
        code = type(err).__name__
    return time.monotonic() - start, code


class Flood:
    """`count` connections to the server, `trickle` of them sending a body a byte every TRICKLE_PAUSE_S."""

    def __init__(self, port: int, count: int, trickle: int, reopen: bool):
        self.port, self.count, self.trickle, self.reopen = port, count, trickle, reopen
        self.socks: list = [None] * count
        self.closed = self.opened = self.refused = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def open(self, i: int) -> None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            s.sendall(TRICKLE if i < self.trickle else HALF)
            s.setblocking(False)
            self.socks[i] = (s, time.monotonic())
            self.opened += 1
        except OSError:
            self.socks[i] = None
            self.refused += 1

    def gone(self, s: socket.socket) -> bool:
        try:
            s.recv(65536)                  # end of file, or an answer (408, 503) that comes right before the close
            return True
        except BlockingIOError:
            return False
        except OSError:
            return True

    def run(self) -> None:
        for i in range(self.count):
            if self.stop.is_set():
                return
            self.open(i)
        while not self.stop.wait(0.05):
            budget = REOPEN_PER_S // 20
            for i, entry in enumerate(self.socks):
                if entry is None:
                    if self.reopen and budget > 0:
                        budget -= 1
                        self.open(i)
                    continue
                s, since = entry
                if self.gone(s):
                    s.close()
                    self.closed += 1
                    self.socks[i] = None
                    if self.reopen and budget > 0:
                        budget -= 1
                        self.open(i)
                elif i < self.trickle and time.monotonic() - since >= TRICKLE_PAUSE_S:
                    try:
                        s.send(b" ")
                        self.socks[i] = (s, time.monotonic())
                    except OSError:
                        pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        for entry in self.socks:
            if entry is not None:
                entry[0].close()


def measure(port: int, server_pid: int, args, reopen: bool) -> dict:
    flood = Flood(port, args.connections, args.trickle, reopen)
    start = time.monotonic()
    flood.thread.start()
    times, failed = [], {}
    while time.monotonic() - start < args.seconds:
        seconds, code = ping(port)
        times.append(seconds)
        if code != 200:
            failed[str(code)] = failed.get(str(code), 0) + 1
        time.sleep(0.25)
    fds = len(os.listdir(f"/proc/{server_pid}/fd"))
    flood.close()
    times.sort()
    return {"flood": "sustained" if reopen else "static", "connections": args.connections, "trickle": args.trickle,
            "pings": len(times), "failed": failed, "median_ms": round(1000 * statistics.median(times), 1),
            "p95_ms": round(1000 * times[int(0.95 * (len(times) - 1))], 1), "max_ms": round(1000 * times[-1], 1),
            "flood_opened": flood.opened, "closed_by_server": flood.closed, "connect_failed": flood.refused,
            "server_open_fds": fds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=1100)
    p.add_argument("--trickle", type=int, default=100, help="of the connections, those that trickle a body")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each flood")
    p.add_argument("--nofile", type=int, default=1024, help="the server's open-file limit")
    p.add_argument("--work", type=Path, help="folder for the tiny pipeline and the outputs (default: a temp one)")
    args = p.parse_args(argv)
    # This process holds the flood's sockets: its own limit must be above them.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise SystemExit(f"this shell's open-file limit ({hard}) is under {want}: raise it (ulimit -n)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    with tempfile.TemporaryDirectory(prefix="trellis-flood-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        proc, port = start_server(model_folder(work, tiny=True), work, args.nofile)
        try:
            quiet = [ping(port)[0] for _ in range(20)]
            print(f"server pid {proc.pid}, RLIMIT_NOFILE {args.nofile}; /ping without a flood: median "
                  f"{1000 * statistics.median(quiet):.1f} ms", flush=True)
            results = [measure(port, proc.pid, args, reopen) for reopen in (False, True)]
        finally:
            proc.terminate()
            proc.wait(30)
        log = (work / "server.log").read_text()
        for r in results:
            print(json.dumps(r), flush=True)
        emfile = log.count("Too many open files")
        print(f"server log: {len(log.splitlines())} lines, {emfile} 'Too many open files'", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
