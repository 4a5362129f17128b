"""Cooperative cancellation: long loops call `check(cancel)` and stop with `Cancelled`."""
from __future__ import annotations

from typing import Callable, Optional

CancelCheck = Optional[Callable[[], bool]]


class Cancelled(Exception):
    """Raised inside a long loop when the caller asked to stop."""

    def __init__(self, message: str = "cancelled by the user"):
        super().__init__(message)


def check(cancel: CancelCheck) -> None:
    if cancel is not None and cancel():
        raise Cancelled()
