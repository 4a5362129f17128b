"""Clean stops of the long-running commands (`python -m desktop api`, `python -m desktop ui`).

The first SIGINT (Ctrl-C), SIGTERM or SIGHUP (on Windows: Ctrl-C, Ctrl-Break, closing the console window,
logging off or shutting down) stops the server: no new work, the running job is cancelled at its next
step and its folder gets an error.json with `state: interrupted` (partial files and temp folders
removed), queued jobs end interrupted too; once the workers have stopped the process exits 0. A second
signal while it waits stops waiting: exit 128 + that signal's number (130 for Ctrl-C); what the job left
behind is then marked and cleaned at the next start (recovery.py). Exit 1 if the job did not stop in
STOP_WAIT_S. A signal that comes once the stop is done, while Python itself exits, keeps those statuses: 128 +
its number at once, or 0 when it lands after the last exit hook.
"""
import atexit
import contextlib
import os
import signal
import sys
import threading
import time
from typing import Callable, Optional

from trellis.core.concurrency import start_thread

# How long a stopping server waits for the running job to stop at its next step (a second signal
# stops waiting).
STOP_WAIT_S = 60.0

# Windows console control events (wincon.h). Ctrl-C and Ctrl-Break arrive as SIGINT / SIGBREAK through
# the C runtime; the others reach only a console control handler, which Windows lets run for a few
# seconds (close: about 5) before it ends the process.
CTRL_C_EVENT, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT = 0, 1, 2, 5, 6
CONSOLE_EVENT_NAMES = {CTRL_CLOSE_EVENT: "the console window was closed", CTRL_LOGOFF_EVENT: "the user logged off",
                       CTRL_SHUTDOWN_EVENT: "Windows is shutting down"}
CONSOLE_WAIT_S = 4.5                  # within the ~5 s Windows gives a closing console
STOP_SIGNAL_NAMES = ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK")


def stop_signal_numbers() -> list:
    """The stop signals this platform has."""
    return [getattr(signal, name) for name in STOP_SIGNAL_NAMES if hasattr(signal, name)]


def set_stop_handlers(handler) -> None:
    for sig in stop_signal_numbers():
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, handler)


def exit_now(sig, frame) -> None:
    """A stop signal while the interpreter exits after a clean stop: end at once, as a second signal does."""
    os._exit(128 + sig)


EXIT_AFTER_STOP = threading.Event()


def ignore_stop_signals_at_exit() -> None:
    """The last exit hook (registered at import, so run after the others): past it Python gives the signals their
    default action back, and a Ctrl-C then would kill a process that stopped cleanly instead of letting it
    exit 0."""
    if EXIT_AFTER_STOP.is_set():
        set_stop_handlers(signal.SIG_IGN)


atexit.register(ignore_stop_signals_at_exit)


class StopSignals:
    """The stop of one server process over its JobRunner.

    `what` names the server in the interrupted jobs' message ("the API server", "the app");
    `on_signal(forced)` is called in the signal handler (keep it short: set flags) so that the server
    loop ends; forced is True from the second signal on. The main thread then calls finish(), which
    returns the exit code (or ends the process when the job does not stop)."""

    def __init__(self, runner, what: str, on_signal: Optional[Callable[[bool], None]] = None):
        self.runner, self.what, self.on_signal = runner, what, on_signal
        self.causes: list = []             # (signal number or None, name) per signal received
        self.requested = threading.Event()
        self.finished = threading.Event()
        self._console_handler = None       # kept alive: Windows calls it through ctypes
        self.installed = False             # the process's stop signals are this object's

    # ------------------------------------------------------------------ setting up
    def install(self) -> None:
        """Handle the stop signals (from the main thread), and on Windows the console's close events."""
        set_stop_handlers(self._handle)
        self.installed = True
        if os.name == "nt":
            self._install_console_handler()
        # The runner is told from a thread: a signal handler may interrupt code that holds its lock.
        start_thread(self._stop_jobs, "trellis-stop")

    def _install_console_handler(self) -> None:
        import ctypes

        handler_type = ctypes.WINFUNCTYPE(ctypes.c_int, ctypes.c_uint)
        self._console_handler = handler_type(self.console_event)
        if not ctypes.windll.kernel32.SetConsoleCtrlHandler(self._console_handler, True):
            self._console_handler = None           # no console (e.g. started by pythonw): nothing to close

    # ------------------------------------------------------------------ events
    def _handle(self, sig, frame) -> None:
        self._stop(sig, signal.Signals(sig).name)

    def _stop(self, number: Optional[int], name: str) -> None:
        self.causes.append((number, name))
        if self.on_signal is not None:
            self.on_signal(len(self.causes) > 1)
        self.requested.set()

    def console_event(self, event: int) -> int:
        """Windows console control handler (it runs in a thread of its own). Ctrl-C / Ctrl-Break: 0, so that
        the C runtime raises SIGINT / SIGBREAK as usual. Close, log-off, shutdown: the same stop as a
        signal, and the handler holds the process (up to CONSOLE_WAIT_S) until the job has stopped, since
        Windows ends the process when the handler returns."""
        if event not in CONSOLE_EVENT_NAMES:
            return 0
        self._stop(None, CONSOLE_EVENT_NAMES[event])
        self.finished.wait(CONSOLE_WAIT_S)
        return 1

    def reason(self) -> str:
        if not self.causes:
            return f"{self.what} stopped"
        number, name = self.causes[0]
        return f"{self.what} received {name}" if number is not None else f"{self.what} stopped: {name}"

    def _stop_jobs(self) -> None:
        self.requested.wait()
        self.runner.shutdown(cancel=True, wait=False, reason=self.reason())

    def wait(self, poll_s: float = 0.2) -> None:
        """Block the main thread until a stop is asked for (in short waits: a plain wait is not
        interrupted by Ctrl-C on Windows)."""
        while not self.requested.wait(poll_s):
            pass

    # ------------------------------------------------------------------ the end
    def finish(self) -> int:
        """After the server loop: stop the jobs, wait (bounded) for the workers; the exit code."""
        running = any(j.state == "running" for j in self.runner.list())
        self.runner.shutdown(cancel=True, wait=False, reason=self.reason())
        if running:
            print("Stopping: the running job stops at its next step (Ctrl-C again to stop at once)...",
                  file=sys.stderr, flush=True)
        deadline = time.monotonic() + STOP_WAIT_S
        while not self.runner.stopped and len(self.causes) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.runner.stopped:
            # A worker is still inside native code: the interpreter's normal exit would tear it down
            # mid-call (SIGABRT). Its folder is marked and cleaned at the next start.
            number = self.causes[-1][0] if len(self.causes) > 1 else None
            print("Stopped without waiting for the running job (its folder is marked interrupted at the next "
                  "start).", file=sys.stderr, flush=True)
            self.finished.set()
            os._exit(128 + number if number is not None else 1)
        if self.causes:
            print("Stopped.", file=sys.stderr, flush=True)
            if self.installed and threading.current_thread() is threading.main_thread():
                set_stop_handlers(exit_now)
                EXIT_AFTER_STOP.set()
        self.finished.set()
        return 0
