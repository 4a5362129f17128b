"""Two items side by side (desktop/jobs/overlap.py), with real threads and phases that say when they run: one item's
files are written while the next one samples, an item that has sampled waits for the writer, an item with a VRAM
budget runs alone, and a failing phase frees its lock for the next item."""
import threading
import time

import pytest

from desktop.jobs.overlap import Overlap

WAIT_S = 10.0                  # liveness bound of each wait: a broken overlap fails, it does not hang


class Items:
    """Phases that log (item, phase, "start" | "end") and can wait for another item's event."""

    def __init__(self):
        self.log, self.lock = [], threading.Lock()
        self.events = {}

    def event(self, name) -> threading.Event:
        with self.lock:
            return self.events.setdefault(name, threading.Event())

    def note(self, item, phase, what):
        with self.lock:
            self.log.append((item, phase, what))
        self.event(f"{item}:{phase}:{what}").set()

    def first(self, item, then=None, then_s=WAIT_S, fail=None):
        """An item's first phase: returns its second, which waits for `then` (an event name), at most `then_s`."""
        def sample():
            self.note(item, "sample", "start")
            if fail == "sample":
                raise ValueError(f"{item} cannot sample")
            self.note(item, "sample", "end")

            def write():
                self.note(item, "write", "start")
                if then:
                    self.event(then).wait(then_s)
                if fail == "write":
                    raise OSError(f"{item} cannot write")
                self.note(item, "write", "end")
            return write
        return sample

    def index(self, entry) -> int:
        return self.log.index(entry)


def side_by_side(overlap, *runs):
    """Run each (first phase, alone) in a thread of its own, started in order; their answers or errors."""
    results, threads = [None] * len(runs), []
    for i, (first, alone) in enumerate(runs):
        def go(i=i, first=first, alone=alone):
            try:
                results[i] = overlap.run(first, alone=alone)
            except Exception as err:            # noqa: BLE001 (the test reads it)
                results[i] = err
        threads.append(threading.Thread(target=go))
        threads[-1].start()
        time.sleep(0.05)                        # each thread reaches its first lock in order
    for t in threads:
        t.join(WAIT_S * 3)
        assert not t.is_alive()
    return results


def test_the_next_item_samples_while_the_last_ones_files_are_written():
    items, overlap = Items(), Overlap("cpu")
    # a's files wait until b has sampled: only possible if b samples meanwhile
    a = items.first("a", then="b:sample:end")
    b = items.first("b")
    got = side_by_side(overlap, (a, False), (b, False))
    assert items.index(("b", "sample", "end")) < items.index(("a", "write", "end"))
    # b sampled and then waited, holding its result, for a's files: its files come after
    assert items.index(("a", "write", "end")) < items.index(("b", "write", "start"))
    assert set(got[0]) == set(got[1]) == {"sample", "waited", "export"}
    assert got[1]["waited"] > 0


def test_an_item_with_a_budget_runs_beside_no_other():
    items, overlap = Items(), Overlap("cpu")
    a = items.first("a", then="b:sample:start", then_s=0.3)        # b's sampling must not start meanwhile
    b = items.first("b")
    side_by_side(overlap, (a, False), (b, True))
    assert items.index(("a", "write", "end")) < items.index(("b", "sample", "start"))
    c = items.first("c", then="d:sample:start", then_s=0.3)
    d = items.first("d")
    side_by_side(overlap, (c, True), (d, False))
    assert items.index(("c", "write", "end")) < items.index(("d", "sample", "start"))


@pytest.mark.parametrize("phase", ["sample", "write"])
def test_a_failing_phase_is_raised_and_the_next_item_goes_on(phase):
    items, overlap = Items(), Overlap("cpu")
    failing = items.first("a", fail=phase)
    got = side_by_side(overlap, (failing, False), (items.first("b"), False))
    assert isinstance(got[0], ValueError if phase == "sample" else OSError)
    assert ("b", "write", "end") in items.log and not overlap.locks[0].locked() and not overlap.locks[1].locked()
    assert overlap.run(items.first("c")).keys() == {"sample", "waited", "export"}


def test_a_step_in_one_phase_has_no_second():
    overlap = Overlap("cpu")
    assert overlap.run(lambda: None).keys() == {"sample"}
