"""Console messages plus a log file (logs/installer.log in the app folder) that keeps everything, pip's
output included, so that a failed install can be looked at (and attached to a bug report) afterwards."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

MAX_LOG_BYTES = 5 * 2 ** 20     # beyond this the log starts again (the previous one is kept as .1)


class Log:
    def __init__(self, path: Path | None, stream=None, quiet: bool = False):
        self.path = path
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self._file = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.exists() and path.stat().st_size > MAX_LOG_BYTES:
                    os.replace(path, path.with_name(path.name + ".1"))
                self._file = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115 (kept open)
            except OSError as e:     # a read-only folder must not stop the app; say so once
                print(f"(cannot write the log file {path}: {e.strerror or e})", file=self.stream)
                self._file = None

    def write_file(self, text: str) -> None:
        if self._file is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            for line in text.rstrip("\n").splitlines() or [""]:
                self._file.write(f"{stamp} {line}\n")
            self._file.flush()

    def say(self, text: str = "") -> None:
        """A line for the user (console and log)."""
        if not self.quiet:
            print(text, file=self.stream, flush=True)
        self.write_file(text)

    def detail(self, text: str) -> None:
        """Log only."""
        self.write_file(text)

    def error(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
        self.write_file("ERROR: " + text)

    def run(self, cmd: list[str], env: dict | None = None, cwd=None, echo: bool = True,
            keep: int = 200, shown: str | None = None) -> tuple[int, str]:
        """Run a command, its output to the console (when `echo`) and the log; (exit status, last lines).
        `shown`: how the command is written to the log (instead of a long inline script)."""
        self.write_file("$ " + (shown or " ".join(str(c) for c in cmd)))
        tail: deque[str] = deque(maxlen=keep)
        try:
            proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env=env, cwd=cwd, text=True, encoding="utf-8", errors="replace",
                                    stdin=subprocess.DEVNULL)
        except OSError as e:
            message = f"could not start {cmd[0]}: {e.strerror or e}"
            self.write_file(message)
            return 127, message
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            if echo and not self.quiet:
                self.stream.write(line)
                self.stream.flush()
            self.write_file(line)
        rc = proc.wait()
        self.write_file(f"(exit status {rc})")
        return rc, "\n".join(tail)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
