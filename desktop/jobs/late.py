"""A server's job runner made in a thread while its port already answers: on a GPU host importing PyTorch alone
takes seconds, and a launcher (or a person) waiting for the server should not wait for it."""
from __future__ import annotations

import threading
from typing import Callable, Optional

from trellis.core.concurrency import new_thread


class RunnerNotStarted(RuntimeError):
    """The runner could not be made (its error is the cause)."""


class LateRunner:
    """Stands for the runner `make()` returns, made in a daemon thread from `start()` on (at once unless
    `start=False`). `ready()` says whether that is done; any other attribute waits for it (and raises
    RunnerNotStarted if making it failed). `on_error(err)` is called in that thread when making it fails."""

    def __init__(self, make: Callable[[], object], on_error: Optional[Callable[[BaseException], None]] = None,
                 start: bool = True):
        self._done = threading.Event()
        self._runner = None
        self._error: Optional[BaseException] = None
        self._make, self._on_error = make, on_error
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        if start:
            self.start()

    def start(self) -> None:
        """Begin making the runner (once; later calls do nothing)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = new_thread(self._run, "trellis-runner-start")
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def _run(self) -> None:
        try:
            self._runner = self._make()
        except BaseException as err:           # the server reports it and exits
            self._error = err
            if self._on_error is not None:
                self._on_error(err)
        finally:
            self._done.set()

    def ready(self) -> bool:
        return self._done.is_set()

    @property
    def error(self) -> Optional[BaseException]:
        return self._error if self._done.is_set() else None

    def wait_done(self) -> None:
        """Until the runner is made or making it failed."""
        self._done.wait()

    def wait(self, timeout: Optional[float] = None):
        """The runner, once made (None after `timeout` seconds); RunnerNotStarted where making it failed."""
        if not self._done.wait(timeout):
            return None
        if self._error is not None:
            raise RunnerNotStarted(str(self._error)) from self._error
        return self._runner

    def __getattr__(self, name: str):
        return getattr(self.wait(), name)
