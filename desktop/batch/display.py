"""What a batch shows: a progress line (done / failed / items per second / ETA) and the final summary table.

On a terminal the progress line is redrawn in place; on a pipe or a file one line is written per finished
item. Messages (an item failed, a worker died) are whole lines that stay. Everything goes to stderr; no
dependency.
"""
from __future__ import annotations

import shutil
import time

from ..options import TerminalLine, format_clock


class BatchDisplay(TerminalLine):
    def __init__(self, total: int, stream=None, enabled: bool = True):
        super().__init__(stream, enabled)
        self.total = total
        self.start = time.monotonic()
        self.done = self.failed = self.skipped = 0
        self.workers = 0

    # ------------------------------------------------------------------ the line
    def rate(self) -> float:
        """Items finished (done or failed) per second since the start of this run."""
        elapsed = time.monotonic() - self.start
        finished = self.done + self.failed
        return finished / elapsed if elapsed > 0 and finished else 0.0

    def line(self) -> str:
        finished = self.done + self.failed + self.skipped
        left = self.total - finished
        rate = self.rate()
        eta = left / rate if rate > 0 else None
        bar_w = 24
        filled = int(round(bar_w * finished / self.total)) if self.total else bar_w
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        return (f"[{'#' * filled}{'-' * (bar_w - filled)}] {finished}/{self.total}: {self.done} done, "
                f"{self.failed} failed{skipped}  {rate:.2f} items/s  ETA {format_clock(eta)}  "
                f"({self.workers} worker{'s' if self.workers != 1 else ''})")

    def update(self, force: bool = False) -> None:
        if not self.enabled:
            return
        if self.tty:
            cols = max(40, shutil.get_terminal_size((100, 20)).columns - 1)
            self._draw(self.line()[:cols])
        elif force:
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def say(self, text: str) -> None:
        """A line that stays (failures are said even when progress is off); the progress line is redrawn under it."""
        super().say(text)
        if self.tty:
            self.update()


def summary_table(summary: dict) -> str:
    """The end-of-batch table: items by state, throughput, then one row per worker and the failed items."""
    rows = [("done", summary["done"]), ("skipped (already done)", summary["skipped"]),
            ("failed", summary["failed"]), ("not run", summary["not_run"])]
    lines = ["", f"{'items':<24}{'count':>7}", "-" * 31]
    lines += [f"{label:<24}{count:>7}" for label, count in rows]
    lines.append(f"{'total':<24}{summary['total']:>7}")
    if summary["retried"]:
        lines.append(f"({summary['retried']} attempt(s) retried; {summary['lost_with_worker']} lost with a worker "
                     "that died)")
    secs = summary["seconds"]
    per_min = summary["done"] / secs * 60 if secs > 0 else 0.0
    lines.append(f"{summary['done']} item(s) made in {format_clock(secs)} ({per_min:.1f} items/min)")
    workers = summary.get("workers") or []
    if workers:
        lines += ["", f"{'worker':<34}{'items':>6}{'sample s':>10}{'export s':>10}", "-" * 60]
        for w in workers:
            n = w["items"]
            sample = f"{w['sample'] / n:.1f}" if n else "-"
            export = f"{w['export'] / n:.1f}" if n else "-"
            lines.append(f"{w['label'][:33]:<34}{n:>6}{sample:>10}{export:>10}")
    failed = summary.get("failures") or []
    if failed:
        lines += ["", "failed items:"]
        lines += [f"  {name}: {error}" for name, error in failed[:50]]
        if len(failed) > 50:
            lines.append(f"  ... and {len(failed) - 50} more (see manifest.jsonl)")
    return "\n".join(lines)
