"""Calls that may block on a FIFO, run so that a test fails instead of hanging."""
import os
import threading

import pytest


def without_hanging(fn, fifo: str, seconds: float = 10.0):
    """fn()'s result or exception; fails (after unblocking it) when fn is still blocked on `fifo` after
    `seconds`: opening the FIFO's other end lets a reader stuck on it go on."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except Exception as err:          # returned for the caller to check
            box["value"] = err
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
        pytest.fail(f"blocked on the FIFO {fifo} for {seconds} s")
    return box["value"]
