"""The callback vocabulary of every long-running call: cooperative cancel and progress.

Long loops call ``check(cancel)`` and stop with ``Cancelled``. Progress comes in two shapes, one
type each: a whole pipeline or export reports ``(stage, i, n)`` (``StageProgress``), one stage of it
reports ``(i, n)`` (``StepProgress``).
"""
from __future__ import annotations

from typing import Callable, Optional

__all__ = ["Cancelled", "CancelCheck", "StageProgress", "StepProgress", "check"]

CancelCheck = Optional[Callable[[], bool]]
StageProgress = Optional[Callable[[str, int, int], None]]
StepProgress = Optional[Callable[[int, int], None]]


class Cancelled(Exception):
    """Raised inside a long loop when the caller asked to stop."""

    def __init__(self, message: str = "cancelled by the user"):
        super().__init__(message)


def check(cancel: CancelCheck) -> None:
    if cancel is not None and cancel():
        raise Cancelled()
