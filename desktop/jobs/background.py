"""Work a job runs beside its own thread (result.npz, the preview video): started at once, its value or error
collected later by the job's thread, which alone touches the job's records."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable


class Background:
    """`fn()` in a daemon thread from now on; `result()` waits and returns its value or raises its error there."""

    def __init__(self, name: str, fn: Callable[[], Any]):
        self.box: dict = {}

        def run():
            t = time.perf_counter()
            try:
                self.box["value"] = fn()
            except BaseException as err:        # re-raised in the caller's thread by result()
                self.box["error"] = err
            finally:
                self.box["seconds"] = time.perf_counter() - t
        self.thread = threading.Thread(target=run, name=name, daemon=True)
        self.thread.start()

    def running(self) -> bool:
        return self.thread.is_alive()

    def join(self) -> None:
        self.thread.join()

    @property
    def seconds(self) -> float:
        """How long `fn` ran (after join)."""
        return self.box["seconds"]

    def value_if_any(self):
        """The value after join, None where `fn` failed."""
        self.join()
        return self.box.get("value")

    def result(self):
        self.join()
        if "error" in self.box:
            raise self.box["error"]
        return self.box["value"]
