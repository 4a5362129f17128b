"""``trellis.export.gate.GpuGate``: side work on the GPU waits while the export reports one of its stages under way,
and never past a stop."""
import threading
import time

from trellis.export.gate import YIELD_STAGES, GpuGate


def test_the_gate_holds_only_through_its_stages_and_never_past_a_stop():
    assert YIELD_STAGES == ("visibility",) and GpuGate().stages == frozenset(YIELD_STAGES)
    gate = GpuGate(("visibility",), poll_s=0.001)
    stop = threading.Event()
    gate.on_progress("simplify", 0, 100)
    assert gate.is_open() and gate.stopped(stop.is_set) is False
    gate.on_progress("visibility", 0, 1000)
    assert not gate.is_open()
    gate.on_progress("visibility", 500, 1000)
    assert not gate.is_open()
    threading.Timer(0.05, gate.on_progress, ("visibility", 1000, 1000)).start()
    t0 = time.perf_counter()
    assert gate.stopped(stop.is_set) is False                 # waited for the stage's end
    assert time.perf_counter() - t0 >= 0.04 and gate.held_s >= 0.04 and gate.is_open()
    gate.on_progress("visibility", 0, 1000)
    threading.Timer(0.05, stop.set).start()
    assert gate.stopped(stop.is_set) is True                  # a stop ends the wait, the gate still closed
    assert not gate.is_open()
    gate.release()
    gate.on_progress("visibility", 0, 1000)                   # released: open for good
    assert gate.is_open()
